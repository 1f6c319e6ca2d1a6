"""Numbers: one parser (regraft.numbers) for CLI flags, adapter_config.json, serving configs, RAG setups; every
value that is not a plain bounded decimal is one error line (never OverflowError/ValueError/TypeError), and the
readers around it stay bounded: JSON in flags nested thousands deep, --lora-modules entries of any type, NUL /
surrogates / 5000-character names in manifests, packed F4 adapters, broken --calib/--prompts files."""

from __future__ import annotations

import json
import math
import os
import re
import struct
import time

import pytest
from hypothesis import given, settings

from regraft.numbers import NumberError, parse_float, parse_int
from tests.hostile._files import adapter_folder, model_folder
from tests.hostile.strategies import number_texts, number_values

FEW = 15 if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci" else settings().max_examples


@given(number_texts())
def test_parse_int_accepts_exactly_plain_decimals(text):
    plain = re.fullmatch(r"[+-]?[0-9]{1,30}", text) is not None
    try:
        n = parse_int(text, "x")
    except NumberError:
        assert not plain, text
    else:
        assert plain and n == int(text), text


@given(number_values())
def test_parse_float_is_finite_or_refused(value):
    try:
        x = parse_float(value, "x", -1e12, 1e12)
    except NumberError:
        return
    assert math.isfinite(x) and -1e12 <= x <= 1e12 and not isinstance(value, bool)


def _cli(argv, capsys, limit=10.0):
    from regraft.cli.main import main

    t0 = time.perf_counter()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse refused a flag (one line, see cli.main._Parser)
        code = e.code
    took = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert took < limit, f"{argv}: {took:.1f} s"
    assert "Traceback" not in err and code in (0, 1, 2), (argv, code, err)
    if code == 2:
        assert err.strip().startswith("regraft ") and len(err.strip().splitlines()) == 1, err
    return code, out, err


def _raw_json(doc: dict, raw: dict) -> str:
    """json.dumps(doc) with raw JSON text substituted for some values (10**400 as digits, NaN, ...)."""
    text = json.dumps({**doc, **{k: f"__RAW_{k}__" for k in raw}})
    for k, v in raw.items():
        text = text.replace(f'"__RAW_{k}__"', v)
    return text


@settings(max_examples=FEW)
@given(key_value=number_values().flatmap(lambda v: __import__("hypothesis").strategies.tuples(
    __import__("hypothesis").strategies.sampled_from(["r", "lora_alpha", "layers_to_transform", "rank_pattern",
                                                      "alpha_pattern"]),
    __import__("hypothesis").strategies.just(v))))
def test_adapter_numbers(tmp_path_factory, capsys, key_value):
    key, value = key_value
    a = adapter_folder(tmp_path_factory.mktemp("num") / "a")
    doc = json.loads((a / "adapter_config.json").read_text())
    if key in ("rank_pattern", "alpha_pattern"):
        value = {"q_proj": value}
    elif key == "layers_to_transform":
        value = [0, value]
    raw = json.dumps(value, allow_nan=True) if not isinstance(value, int) or isinstance(value, bool) else str(value)
    (a / "adapter_config.json").write_text(_raw_json(doc, {key: raw}))
    _cli(["inspect", a], capsys)
    _cli(["check", "Qwen/Qwen3-8B", "Qwen/Qwen3-4B", "--adapter", a], capsys)


@settings(max_examples=FEW)
@given(value=number_texts())
def test_serving_and_rag_numbers(tmp_path_factory, capsys, value):
    d = tmp_path_factory.mktemp("num")
    v = json.dumps(value)
    (d / "serve.yaml").write_text(f"model: Qwen/Qwen3-8B\nmax-model-len: {v}\ntemperature: {v}\n"
                                  f"rope-scaling: {{rope_type: yarn, factor: {v}}}\n")
    _cli(["check", "Qwen/Qwen3-8B", "Qwen/Qwen3-4B", "--config", d / "serve.yaml"], capsys)
    (d / "Modelfile").write_text(f"FROM qwen3\nPARAMETER num_ctx {value or 1}\nPARAMETER temperature {value or 1}\n")
    _cli(["port", "config", d / "Modelfile", "--to", "Qwen/Qwen3-4B", "--runtime", "vllm"], capsys)
    (d / "rag.yaml").write_text(f"embedding: {{model: BAAI/bge-m3}}\nchunking: {{size: {v}}}\n"
                                f"retrieval: {{top_k: {v}}}\n")
    _cli(["port", "rag", d / "rag.yaml", "--to", "Qwen/Qwen3-4B"], capsys)


@settings(max_examples=FEW)
@given(value=number_texts())
def test_number_flags(capsys, value):
    code, _, err = _cli(["drift", "a", "b", "--top", value or "x"], capsys)
    if not re.fullmatch(r"[+-]?[0-9]{1,30}", value):
        assert code == 2, err


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("line", [
    f"vllm serve Qwen/Qwen3-8B --hf-overrides '{DEEP}'",
    "vllm serve Qwen/Qwen3-8B --hf-overrides '" + '{"a":' * 3000 + "1" + "}" * 3000 + "'",
    "vllm serve Qwen/Qwen3-8B --enable-lora --lora-modules '{\"name\": 5, \"path\": [1]}'",
    f"vllm serve Qwen/Qwen3-8B --enable-lora --lora-modules '{DEEP}'",
    "vllm serve Qwen/Qwen3-8B --enable-lora --lora-modules a=" + "x" * 100_000,
    "vllm serve Qwen/Qwen3-8B --rope-scaling '{\"rope_type\": \"yarn\", \"factor\": \"1e400\"}'",
])
def test_json_and_lists_in_flags(tmp_path, capsys, line):
    (tmp_path / "serve.sh").write_text(line + "\n")
    _cli(["check", "Qwen/Qwen3-8B", "Qwen/Qwen3-4B", "--config", tmp_path / "serve.sh"], capsys)
    _cli(["port", "config", tmp_path / "serve.sh", "--to", "Qwen/Qwen3-4B"], capsys)


@pytest.mark.parametrize("shard", ["model\0.safetensors", "model\udc80.safetensors", "y" * 5000 + ".safetensors",
                                   "fifo.safetensors", "../outside.safetensors"])
def test_manifest_names(tmp_path, capsys, shard):
    m = model_folder(tmp_path / "m")
    if shard == "fifo.safetensors":
        os.mkfifo(m / shard)  # open() on it would block forever
    (m / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x" * 5000: shard,
                                                                               "a\0b\ud800": shard}}))
    code, _, err = _cli(["inspect", m], capsys)
    assert code == 2 and len(err) < 2100, err


def test_packed_f4_adapter_is_refused_before_torch(world, tmp_path, capsys):
    import shutil

    a = tmp_path / "f4"
    shutil.copytree(world["lora"], a)
    raw = (a / "adapter_model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    head, data, out, new = json.loads(raw[8:8 + n]), raw[8 + n:], b"", {}
    for k, e in head.items():
        if k != "__metadata__":
            nb = math.prod(e["shape"]) // 2
            new[k] = {"dtype": "F4", "shape": e["shape"], "data_offsets": [len(out), len(out) + nb]}
            out += data[e["data_offsets"][0]:e["data_offsets"][0] + nb]
    h = json.dumps(new).encode()
    (a / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + out)
    for runtime in ("vllm", "llama.cpp"):
        code, _, err = _cli(["port", "lora", a, "--to", world["sib"], "--runtime", runtime, "--no-drift", "--out",
                             tmp_path / ("o.gguf" if runtime == "llama.cpp" else "o")], capsys)
        assert code == 2 and "F4" in err, err


@pytest.mark.parametrize("body", ['{"text": 5}\n', "[1, 2]\n", "not json\n", "[" * 5000 + "\n", '"x"\n',
                                  "\udcff\n"])
def test_calib_and_prompts_files(tmp_path, body):
    from regraft.port.request import read_calib
    from regraft.errors import InputError
    from regraft.port.prompts import load_seeds

    f = tmp_path / "f.jsonl"
    f.write_bytes(body.encode("utf-8", "surrogateescape"))
    for read in (read_calib, load_seeds):
        with pytest.raises(InputError):
            read(f)
