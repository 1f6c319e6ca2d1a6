"""`regraft catalog add | list | remove`: a user's own config.json, offline, named by `check` like a catalog model."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from regraft import catalog
from regraft.cli.main import main


@pytest.fixture(autouse=True)
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("REGRAFT_CATALOG_DIR", str(tmp_path / "usercat"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "usercat"


def model_folder(tmp_path, base="Qwen/Qwen3-8B", **change):
    cfg = {k: v for k, v in catalog.model_entry(base).items() if not k.startswith("_")}
    cfg.update(change)
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}))
    return folder


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_add_list_check_remove(tmp_path, capsys, user_dir):
    folder = model_folder(tmp_path, num_hidden_layers=40)
    before = digest(folder)
    code, out, err = run(capsys, "catalog", "add", str(folder), "--name", "me/qwen3-8b-deep")
    assert code == 0 and "added me/qwen3-8b-deep" in out, err
    assert digest(folder) == before  # the input is never changed
    stored = user_dir / "me__qwen3-8b-deep"
    assert (stored / "config.json").read_bytes() == (folder / "config.json").read_bytes()  # byte for byte
    assert (stored / "model.safetensors.index.json").is_file()

    code, out, _ = run(capsys, "catalog", "list", "--format", "json")
    rows = {r["model"]: r for r in json.loads(out)}
    assert rows["me/qwen3-8b-deep"]["origin"] == "user"
    assert rows["me/qwen3-8b-deep"]["source"] == str((folder / "config.json").resolve())
    assert rows["me/qwen3-8b-deep"]["index_tensors"] == 1
    assert rows["Qwen/Qwen3-32B"]["origin"] == "built-in" and rows["Qwen/Qwen3-32B"]["status"] == "verbatim"

    code, out, _ = run(capsys, "check", "Qwen/Qwen3-8B", "me/qwen3-8b-deep", "--format", "json")
    t = json.loads(out)["targets"][0]
    assert t["target"] == "me/qwen3-8b-deep" and t["target_source"].startswith("user catalog: ")
    assert t["verdict"] != "unknown"
    assert any(f["code"] == "RG104" for f in t["areas"]["lora"]["findings"])  # 40 layers: 4 uncovered

    code, out, _ = run(capsys, "catalog", "remove", "me/qwen3-8b-deep")
    assert code == 0 and not stored.exists()
    code, _, err = run(capsys, "check", "Qwen/Qwen3-8B", "me/qwen3-8b-deep")
    assert code == 2 and "Unknown model 'me/qwen3-8b-deep'" in err


def test_a_partial_builtin_is_replaced_by_the_users_real_config(tmp_path, capsys):
    """Llama 4 Scout is partial in the catalog (no tie flag); the user's own config completes it -- not a guess."""
    cfg = {k: v for k, v in catalog.model_entry("meta-llama/Llama-4-Scout-17B-16E-Instruct").items()
           if not k.startswith("_")}
    cfg["tie_word_embeddings"] = False
    cfg["text_config"].update(eos_token_id=[200001, 200007, 200008], tie_word_embeddings=False)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    code, _, err = run(capsys, "check", "meta-llama/Llama-4-Scout-17B-16E-Instruct",
                       "meta-llama/Llama-4-Scout-17B-16E-Instruct", "--format", "json")
    assert code in (0, 1)
    assert run(capsys, "catalog", "add", str(path), "--name", "meta-llama/Llama-4-Scout-17B-16E-Instruct")[0] == 0
    from regraft.inspection.resolve import resolve_model

    spec = resolve_model("meta-llama/Llama-4-Scout-17B-16E-Instruct")
    assert spec.origin == "user-catalog" and not spec.partial and spec.arch.values["tie_word_embeddings"] is False
    code, out, _ = run(capsys, "catalog", "list", "--format", "json")
    origins = [r["origin"] for r in json.loads(out) if r["model"] == "meta-llama/Llama-4-Scout-17B-16E-Instruct"]
    assert origins == ["user", "built-in (replaced by user)"]


@pytest.mark.parametrize("setup,argv_tail,says", [
    (lambda p: p.write_text('{"hidden_size": 4}'), ["--name", "me/x"], "has no model_type"),
    (lambda p: p.write_text("[1, 2]"), ["--name", "me/x"], "expected"),
    (lambda p: p.write_text('{"model_type": "qwen3", "num_hidden_layers": -3}'), ["--name", "me/x"],
     "num_hidden_layers"),
    (lambda p: p.write_text('{"model_type": "qwen3"}'), ["--name", "not an id"], "is not a model id"),
    (lambda p: p.write_text('{"model_type": "qwen3"}'), ["--name", "Qwen/Qwen3-32B"], "complete built-in"),
])
def test_add_refusals_are_one_line(tmp_path, capsys, setup, argv_tail, says, user_dir):
    path = tmp_path / "config.json"
    setup(path)
    code, out, err = run(capsys, "catalog", "add", str(path), *argv_tail)
    assert code == 2 and out == "" and err.count("\n") == 1 and says in err, err
    assert not user_dir.exists() or not any(p.name.startswith("me__") for p in user_dir.iterdir())


def test_duplicate_needs_force_and_flags_that_do_not_apply(tmp_path, capsys):
    folder = model_folder(tmp_path)
    assert run(capsys, "catalog", "add", str(folder), "--name", "me/m")[0] == 0
    code, _, err = run(capsys, "catalog", "add", str(folder), "--name", "me/m")
    assert code == 2 and "--force" in err
    assert run(capsys, "catalog", "add", str(folder), "--name", "me/m", "--force")[0] == 0
    code, _, err = run(capsys, "catalog", "list", "--force")
    assert code == 2 and "apply to `regraft catalog add` only" in err
    code, _, err = run(capsys, "catalog", "remove", "me/nope")
    assert code == 2 and "me/m" in err  # names what is there


def test_check_on_a_user_model_does_not_import_torch(tmp_path, user_dir):
    folder = model_folder(tmp_path)
    assert main(["catalog", "add", str(folder), "--name", "me/m"]) == 0
    code = ("import sys; from regraft.cli.main import main; rc = main(['check', 'Qwen/Qwen3-8B', 'me/m', "
            "'--format', 'json']); print('torch' in sys.modules, 'transformers' in sys.modules)")
    env = {"REGRAFT_CATALOG_DIR": str(user_dir), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stderr
