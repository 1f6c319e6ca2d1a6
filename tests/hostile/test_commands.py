"""Every CLI command leaves its inputs byte-for-byte unchanged (sha256, mode, mtime of every input file before and
after), never prints a traceback, and never overwrites an existing output without --force."""

from __future__ import annotations

import pytest

from tests.hostile._files import tree_hashes

pytest.importorskip("torch")
pytest.importorskip("peft")


def _main(argv, capsys):
    from regraft.cli.main import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse: a command or option this checkout does not have
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# command templates: {x} is a world path, {out} a fresh output path
COMMANDS = {
    "inspect-model": ["inspect", "{dense}"],
    "inspect-adapter": ["inspect", "{lora}", "--format", "json"],
    "check-adapter": ["check", "{dense}", "{sib}", "{moe}", "--adapter", "{lora}", "--layers", "--format", "markdown"],
    "check-v4": ["check", "{moe}", "{moe}", "{dense}", "--adapter", "{v4}", "--runtime", "vllm"],
    "check-config": ["check", "{dense}", "{sib}", "--config", "{vllm}", "--format", "json"],
    "check-modelfile": ["check", "{dense}", "{sib}", "--config", "{modelfile}", "--runtime", "ollama"],
    "check-rag": ["check", "{dense}", "{sib}", "--rag", "{rag}"],
    "port-lora": ["port", "lora", "{lora}", "--to", "{sib}", "--from", "{dense}", "--out", "{out}"],
    "port-lora-vllm": ["port", "lora", "{lora}", "--to", "{sib}", "--runtime", "vllm", "--out", "{out}", "--no-drift"],
    "port-lora-gguf": ["port", "lora", "{v4}", "--to", "{moe}", "--runtime", "llama.cpp", "--out", "{out}.gguf",
                       "--no-drift"],
    "port-lora-dry": ["port", "lora", "{v4}", "--to", "{moe}", "--layout", "v5", "--dry-run"],
    "port-config": ["port", "config", "{vllm}", "--to", "{sib}", "--out", "{out}.yaml"],
    "port-config-gen": ["port", "config", "{genconf}", "--to", "{moe}", "--runtime", "vllm"],
    "port-config-cmd": ["port", "config", "{command}", "--to", "{sib}", "--out", "{out}.sh"],
    "port-rag": ["port", "rag", "{rag}", "--to", "{sib}", "--out", "{out}.yaml"],
    "verify": ["verify", "{lora}", "--on", "{dense}", "--probes", "1", "--seq-len", "8"],
    "drift": ["drift", "{dense}", "{sib}", "--format", "json"],
    "index": ["index", "{docs}", "--store", "{out}", "--embedder", "hashing-64", "--format", "json", "--no-progress"],
    "index-tokenizer": ["index", "{docs}", "--store", "{out}", "--embedder", "hashing-64", "--tokenizer", "{dense}"],
    "ask-unreachable": ["ask", "hello", "--small", "http://127.0.0.1:9/v1", "--policy", "{policy}", "--timeout", "1",
                        "--retries", "0", "--no-contract"],
    "serve-unreachable": ["serve", "--small", "http://127.0.0.1:9/v1", "--policy", "{policy}", "--check-only",
                          "--timeout", "1", "--retries", "0"],
    "rules": ["rules", "list"],
    "catalog": ["catalog", "show", "Qwen/Qwen3-8B"],
}


def _argv(template, world, out):
    return [a.format(out=out, **{k: str(v) for k, v in world.items()}) for a in template]


SLOW_COMMANDS = {"check-rag", "index-tokenizer"}  # tokenizer builds: seconds each


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_COMMANDS else n
                                  for n in sorted(COMMANDS)])
def test_inputs_unchanged(world, tmp_path, capsys, name):
    before = tree_hashes(world["root"])
    code, out, err = _main(_argv(COMMANDS[name], world, tmp_path / "out"), capsys)
    assert "Traceback" not in err, err
    if code == 2 and ("invalid choice" in err or "unrecognized arguments" in err):
        pytest.skip(f"`{name}` is not built in this checkout: {err.strip()[-120:]}")
    assert code in (0, 1, 2), (code, err)
    if code == 2:
        assert err.startswith("regraft") and len(err.strip().splitlines()) == 1, err
    assert tree_hashes(world["root"]) == before, f"{name} changed its inputs"


@pytest.mark.parametrize("name", ["port-lora-vllm", "port-config", "port-lora-gguf", "port-rag"])
def test_existing_output_needs_force(world, tmp_path, capsys, name):
    out = tmp_path / "out"
    argv = _argv(COMMANDS[name], world, out)
    code, _, err = _main(argv, capsys)
    if code == 2 and ("invalid choice" in err or "unrecognized arguments" in err):
        pytest.skip(f"`{name}` is not built in this checkout")
    assert code == 0, err
    target = next(p for p in tmp_path.iterdir() if p.name.startswith("out") and not p.name.endswith(".regraft.json"))
    first = tree_hashes(target)
    code, _, err = _main(argv, capsys)
    assert code == 2 and "--force" in err, err
    assert tree_hashes(target) == first, "an existing output was modified without --force"
    code, _, err = _main(argv + ["--force"], capsys)
    assert code == 0, err
    leftovers = [p.name for p in tmp_path.iterdir() if "regraft-tmp" in p.name or "regraft-old" in p.name]
    assert not leftovers, leftovers


def test_output_never_over_an_input(world, tmp_path, capsys):
    before = tree_hashes(world["root"])
    for argv in (["port", "lora", world["lora"], "--to", world["sib"], "--out", world["lora"], "--force"],
                 ["port", "lora", world["lora"], "--to", world["sib"], "--out", world["sib"], "--force"],
                 ["port", "lora", world["lora"], "--to", world["sib"], "--out", world["lora"] / "sub", "--force"],
                 ["port", "config", world["vllm"], "--to", world["sib"], "--out", world["vllm"], "--force"]):
        code, _, err = _main(argv, capsys)
        assert code == 2, err
    assert tree_hashes(world["root"]) == before


def _broken_copies(world, root):
    """Copies of the dense model, each broken one way."""
    import json
    import shutil

    out = {}

    def copy(name):
        d = root / name
        shutil.copytree(world["dense"], d)
        return d

    d = copy("truncated-header")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:100])
    out["truncated-header"] = d
    d = copy("truncated-data")
    (d / "model.safetensors").write_bytes(data[: len(data) - 1000])
    out["truncated-data"] = d
    d = copy("shape-mismatch")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] *= 2
    (d / "config.json").write_text(json.dumps(cfg))
    out["shape-mismatch"] = d
    d = copy("bad-tokenizer")
    (d / "tokenizer.json").write_text('{"model": 3}')
    out["bad-tokenizer"] = d
    d = copy("garbage-config")
    (d / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    out["garbage-config"] = d
    return out


@pytest.mark.parametrize("broken", ["truncated-header"] + [pytest.param(b, marks=pytest.mark.slow) for b in (
    "truncated-data", "shape-mismatch", "bad-tokenizer", "garbage-config")])
def test_broken_model_through_every_command(world, tmp_path, capsys, broken):
    b = _broken_copies(world, tmp_path)[broken]
    before = tree_hashes(b, world["root"])
    for argv in (["inspect", b], ["check", world["dense"], b, "--adapter", world["lora"]],
                 ["check", world["dense"], b, "--rag", world["rag"]],
                 ["port", "lora", world["lora"], "--to", b, "--out", tmp_path / "o1"],
                 ["port", "config", world["vllm"], "--to", b, "--out", tmp_path / "o2.yaml"],
                 ["verify", world["lora"], "--on", b, "--probes", "1", "--seq-len", "4"],
                 ["drift", world["dense"], b],
                 ["index", world["docs"], "--store", tmp_path / "kb", "--embedder", "hashing-16", "--tokenizer", b]):
        code, _, err = _main(argv, capsys)
        assert "Traceback" not in err, (argv, err)
        assert code in (0, 1, 2), (argv, code, err)
        if code == 2:  # the error is the last line (verify lets transformers print its load report first)
            assert err.strip().splitlines()[-1].startswith("regraft "), (argv, err)
    assert tree_hashes(b, world["root"]) == before
