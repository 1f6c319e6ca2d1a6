"""The output guard (regraft.outputs): generated output paths that are, contain, are inside, or link to an input
of the command (the adapter, the base folder it names, the models, the config, the RAG samples, a GGUF's side
report), with and without --force, are refused with one line, exit 2, every input byte-for-byte unchanged and
nothing written anywhere. Plus the commit itself: old or new at every instant."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regraft import outputs
from tests.hostile._files import tree_hashes

# command -> (argv template, the inputs it reads, kind of output)
COMMANDS = {
    "port-lora": (["port", "lora", "{lora}", "--to", "{sib}", "--runtime", "vllm", "--no-drift"],
                  ["lora", "sib", "dense"], "dir"),
    "port-lora-gguf": (["port", "lora", "{v4}", "--to", "{moe}", "--runtime", "llama.cpp", "--no-drift"],
                       ["v4", "moe"], "gguf"),
    "port-config": (["port", "config", "{vllm}", "--to", "{sib}"], ["vllm", "sib", "sib/config.json"], "file"),
    "port-rag": (["port", "rag", "{rag2}", "--to", "{sib}"], ["rag2", "sib", "docs/doc0.md"], "file"),
}
RELATIONS = ["same", "inside", "contains", "link", "dangling-link", "link-parent", "hardlink", "side-link"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, world):
    """A copy of the world whose adapter names the copy's dense folder as its base (``port lora`` reads it)."""
    root = tmp_path_factory.mktemp("guard") / "w"
    shutil.copytree(world["root"], root, symlinks=True)
    w = {k: root / Path(v).relative_to(world["root"]) for k, v in world.items() if k != "root"}
    w["root"] = root
    cfg = json.loads((w["lora"] / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(w["dense"])
    (w["lora"] / "adapter_config.json").write_text(json.dumps(cfg))
    w["rag2"] = root / "rag2.yaml"
    w["rag2"].write_text(w["rag"].read_text() + "samples: [docs/doc0.md]\n")
    return w


def _main(argv, capsys):
    from regraft.cli.main import main

    outputs.forget_reads()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _hostile_out(w: dict, scratch: Path, input_key: str, relation: str, kind: str) -> Path | None:
    """An --out for ``relation`` to the input ``input_key``; None when the relation does not apply to it."""
    key, _, rest = input_key.partition("/")
    inp = w[key] / rest if rest else w[key]
    assert inp.exists(), inp
    suffix = ".gguf" if kind == "gguf" else ""
    if relation == "same":
        return inp if not suffix or inp.name.endswith(suffix) else None
    if relation == "inside":
        return inp / f"new{suffix}" if inp.is_dir() else None
    if relation == "contains":
        return inp.parent
    if relation == "link":
        (scratch / f"l{suffix}").symlink_to(inp)
        return scratch / f"l{suffix}"
    if relation == "dangling-link":
        (scratch / f"d{suffix}").symlink_to((inp if inp.is_dir() else inp.parent) / f"not-yet{suffix}")
        return scratch / f"d{suffix}"
    if relation == "link-parent":
        if not inp.is_dir():
            return None
        (scratch / "ld").symlink_to(inp)
        return scratch / "ld" / f"new{suffix}"
    if relation == "hardlink":
        if inp.is_dir() or kind == "dir":
            return None
        os.link(inp, scratch / f"h{suffix}")
        return scratch / f"h{suffix}"
    if relation == "side-link":
        if kind != "gguf" or not inp.is_dir():
            return None
        target = next(p for p in sorted(inp.iterdir()) if p.is_file())
        (scratch / "o.gguf.regraft.json").symlink_to(target)
        return scratch / "o.gguf"
    raise AssertionError(relation)


# CI: 40 drawn cases (each a CLI run); HYPOTHESIS_PROFILE=long draws the profile's count.
CASES = 40 if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci" else settings().max_examples


@settings(max_examples=CASES)
@given(data=st.data())
def test_output_over_an_input_is_refused(sandbox, tmp_path_factory, capsys, data):
    name = data.draw(st.sampled_from(sorted(COMMANDS)), label="command")
    template, ins, kind = COMMANDS[name]
    scratch = tmp_path_factory.mktemp("scratch")
    out = _hostile_out(sandbox, scratch, data.draw(st.sampled_from(ins), label="input"),
                       data.draw(st.sampled_from(RELATIONS), label="relation"), kind)
    if out is None:
        return
    force = data.draw(st.booleans(), label="force")
    before = tree_hashes(sandbox["root"])
    scratch_before = sorted(p.name for p in scratch.iterdir())
    argv = [a.format(**{k: str(v) for k, v in sandbox.items()}) for a in template] + ["--out", out]
    code, _, err = _main(argv + (["--force"] if force else []), capsys)
    assert code == 2, (argv, err)
    assert err.startswith("regraft port: error:") and len(err.strip().splitlines()) == 1, err
    assert tree_hashes(sandbox["root"]) == before, f"{argv} changed an input"
    assert sorted(p.name for p in scratch.iterdir()) == scratch_before, "something was written"


@pytest.mark.parametrize("exchange", [True, False])
def test_commit_replaces_a_folder_and_a_file(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setenv("REGRAFT_NO_EXCHANGE", "1")
    out = tmp_path / "out"
    for version in ("old", "new"):
        with outputs.staged(out, [], force=True, kind="dir") as st_:
            (st_.path / "adapter_config.json").write_text(version)
        assert (out / "adapter_config.json").read_text() == version
    f = tmp_path / "f.yaml"
    for version in ("old", "new"):
        outputs.write_text(f, version, [], force=True)
    assert f.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.yaml", "out"]


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ZeroDivisionError), outputs.staged(tmp_path / "o", [], kind="dir") as st_:
        (st_.path / "x").write_text("partial")
        raise ZeroDivisionError
    assert list(tmp_path.iterdir()) == []


def test_recover_restores_the_aside_copy(tmp_path):
    """What a kill between the two renames of the fallback leaves (old aside, new staged) is undone next run."""
    out = tmp_path / "out"
    aside = tmp_path / f".out{outputs.OLD_TAG}"
    aside.mkdir()
    (aside / "adapter_config.json").write_text("old")
    dead = tmp_path / f".out{outputs.TMP_TAG}999999999"
    dead.mkdir()
    outputs.guard(out, [], force=True, kind="dir")
    assert (out / "adapter_config.json").read_text() == "old" and not dead.exists() and not aside.exists()


def test_force_never_replaces_a_folder_that_is_not_an_output(tmp_path):
    home = tmp_path / "home"
    (home / "thesis").mkdir(parents=True)
    (home / "thesis" / "chapter1.tex").write_text("years of work")
    with pytest.raises(outputs.InputError, match="does not look like a regraft output"):
        outputs.guard(home, [], force=True, kind="dir")


def test_guard_refuses_what_a_reader_opened(tmp_path):
    from regraft.inspection.files import read_json

    cfg = tmp_path / "m" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text("{}")
    outputs.forget_reads()
    read_json(cfg)
    with pytest.raises(outputs.InputError, match="is the input|contains, or is inside"):
        outputs.guard(cfg, [], force=True)
    outputs.forget_reads()
