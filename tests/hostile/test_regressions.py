"""One test per bug the hostile-input fuzzers found (each failed before its fix), plus the size guarantees:
declared sizes are checked against the file before anything is allocated."""

from __future__ import annotations

import json
import os
import struct
import time
import tracemalloc

import pytest

from regraft.errors import FileFormatError, InputError, RegraftError, UnsafeInputError
from tests.hostile._files import TINY_CONFIG, adapter_folder, model_folder, safetensors_bytes


def _header_file(path, text: bytes, declared=None, data=b""):
    path.write_bytes(struct.pack("<Q", len(text) if declared is None else declared) + text + data)
    return path


@pytest.fixture
def peak():
    """Peak Python allocation (bytes) of the block under test."""
    class P:
        def __enter__(self):
            tracemalloc.start()
            return self

        def __exit__(self, *a):
            self.bytes = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    return P


# -- safetensors header ---------------------------------------------------------------------------------------------
def test_header_integer_over_4300_digits(tmp_path):
    from regraft.inspection.safetensors_header import read_header

    p = _header_file(tmp_path / "x.safetensors", b'{"a": ' + b"9" * 5000 + b"}")
    with pytest.raises(FileFormatError, match="not valid UTF-8 JSON"):
        read_header(p)


@pytest.mark.parametrize("dtype", [[], {}, ["F32"], 3, None])
def test_header_dtype_not_a_string(tmp_path, dtype):
    from regraft.inspection.safetensors_header import read_header

    doc = {"w": {"dtype": dtype, "shape": [1], "data_offsets": [0, 4]}}
    with pytest.raises(FileFormatError, match="unknown dtype"):
        read_header(_header_file(tmp_path / "x.safetensors", json.dumps(doc).encode(), data=b"\0" * 4))


@pytest.mark.parametrize("declared", [100_000_000, 2**63, 2**64 - 1, 99_999_999])
def test_header_declared_length_is_not_allocated(tmp_path, peak, declared):
    from regraft.inspection.safetensors_header import read_header

    p = _header_file(tmp_path / "x.safetensors", b"{}", declared=declared)
    with peak() as pk, pytest.raises(FileFormatError, match="declared header length"):
        read_header(p)
    assert pk.bytes < 1 << 20


def test_huge_declared_tensors_are_not_allocated(tmp_path, peak):
    """A valid header that declares a terabyte of tensors (sparse file): read without touching the data."""
    from regraft.inspection.safetensors_header import read_header

    n = 1 << 38  # 1 TiB of F32
    doc = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    p = _header_file(tmp_path / "x.safetensors", doc)
    with open(p, "r+b") as f:
        f.truncate(8 + len(doc) + 4 * n)
    with peak() as pk:
        h = read_header(p)
    assert h.tensors["w"].nbytes == 4 * n and pk.bytes < 1 << 20


def test_declared_span_past_the_end_is_refused(tmp_path):
    from regraft.inspection.safetensors_header import read_header

    doc = json.dumps({"w": {"dtype": "F32", "shape": [1 << 30], "data_offsets": [0, 4 << 30]}}).encode()
    with pytest.raises(FileFormatError, match="outside the data region"):
        read_header(_header_file(tmp_path / "x.safetensors", doc, data=b"\0" * 16))


def test_oversized_json_is_refused_before_reading(tmp_path, peak):
    from regraft.inspection.files import MAX_SMALL_FILE, read_json

    p = tmp_path / "config.json"
    with open(p, "wb") as f:
        f.truncate(MAX_SMALL_FILE + 1)
    with peak() as pk, pytest.raises(FileFormatError, match="more than"):
        read_json(p)
    assert pk.bytes < 1 << 20


# -- configs --------------------------------------------------------------------------------------------------------
def test_config_integer_over_4300_digits(tmp_path):
    from regraft.inspection.resolve import read_model_folder

    d = model_folder(tmp_path / "m", weights=False)
    (d / "config.json").write_text('{"model_type": "qwen3", "hidden_size": ' + "1" * 5000 + "}")
    with pytest.raises(FileFormatError, match="Exceeds the limit"):
        read_model_folder(d)


@pytest.mark.parametrize("key,value", [
    ("num_hidden_layers", 10**12), ("num_hidden_layers", "32"), ("num_hidden_layers", 32.0), ("num_hidden_layers", -1),
    ("num_attention_heads", 0), ("hidden_size", "4096"), ("hidden_size", [4096]), ("hidden_size", True),
    ("vocab_size", 2**80), ("num_experts", 10**9), ("layer_types", [{"a": 1}]), ("layer_types", "full_attention"),
    ("mlp_only_layers", ["0"]), ("model_type", ["qwen3"]), ("model_type", {"a": 1}),
])
def test_config_values_the_shape_code_cannot_use(tmp_path, key, value):
    """Each of these crashed (TypeError, ZeroDivisionError, unhashable) or looped for hours in check/inspect."""
    from regraft.checks.engine import check
    from regraft.inspection.resolve import read_model_folder

    d = model_folder(tmp_path / "m", {**TINY_CONFIG, "model_type": "qwen3_moe", key: value}, weights=False)
    t0 = time.monotonic()
    with pytest.raises(FileFormatError, match=key):
        check(read_model_folder(d), [read_model_folder(d)])
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("model_type", ["../models/Qwen__Qwen3-8B", "qwen3/../qwen3", "", "qwen3.json"])
def test_model_type_cannot_walk_the_catalog(tmp_path, model_type):
    from regraft.inspection.resolve import read_model_folder

    d = model_folder(tmp_path / "m", dict(TINY_CONFIG, model_type=model_type), weights=False)
    spec = read_model_folder(d)
    assert spec.arch is None
    spec.describe()


# -- adapters -------------------------------------------------------------------------------------------------------
def test_rank_pattern_zero_rank(tmp_path):
    from regraft.inspection.adapter import read_adapter

    d = adapter_folder(tmp_path / "a")
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["rank_pattern"] = {"q_proj": 0}
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileFormatError, match="positive rank"):
        read_adapter(d)


@pytest.mark.parametrize("key", ["(a+)+$", "((a*)*)*b", ".*.*.*.*x", r"(a)\1"])
def test_rank_pattern_redos_is_refused_fast(tmp_path, key):
    from regraft.inspection.adapter import read_adapter

    d = adapter_folder(tmp_path / "a")
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["rank_pattern"] = {key: 8}
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    t0 = time.monotonic()
    with pytest.raises(FileFormatError, match="rank_pattern"):
        read_adapter(d)
    assert time.monotonic() - t0 < 2


def test_long_module_name_with_pattern_does_not_hang(tmp_path):
    from regraft.inspection.adapter import read_adapter

    d = adapter_folder(tmp_path / "a")
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["rank_pattern"] = {".*q_proj": 8}
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    name = "base_model.model." + "a." * 200_000 + "q_proj"
    (d / "adapter_model.safetensors").write_bytes(safetensors_bytes({name + ".lora_A.weight": ("F32", [8, 4]),
                                                                     name + ".lora_B.weight": ("F32", [4, 8])}))
    t0 = time.monotonic()
    spec = read_adapter(d)
    spec.describe()
    assert time.monotonic() - t0 < 10


def test_lone_surrogate_names_print(tmp_path, capsys):
    """JSON escapes such as "\\ud800" give strings that a UTF-8 stdout cannot encode: the CLI must still print."""
    import io
    import sys

    from regraft.cli.main import main

    d = tmp_path / "a"
    d.mkdir()
    (d / "adapter_config.json").write_text('{"\\ud800peft_type": "LORA", "r": 16}')
    (d / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    buf = io.BytesIO()
    old, out = sys.stdout, io.TextIOWrapper(buf, encoding="utf-8", write_through=True)  # strict, like a terminal
    sys.stdout = out
    try:
        code = main(["inspect", str(d), "--format", "markdown"])
        out.flush()
        data = buf.getvalue()
    finally:
        sys.stdout = old
        out.detach()
    assert code == 0 and b"\\ud800" in data


# -- serving configs, RAG setups, policies, stores ------------------------------------------------------------------
BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nKEY: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n")


def _readers():
    from regraft.configs.readers import read_config
    from regraft.rag.setup import read_rag
    from regraft.hybrid.policy import load_policy

    return {"serve.yaml": read_config, "rag.yaml": read_rag, "policy.yaml": load_policy}


@pytest.mark.parametrize("name,key", [("serve.yaml", "temperature"), ("rag.yaml", "retrieval"),
                                      ("policy.yaml", "escalate_if")])
def test_yaml_alias_bomb_is_refused_fast(tmp_path, name, key):
    p = tmp_path / name
    p.write_text(BOMB.replace("KEY", key))
    t0 = time.monotonic()
    with pytest.raises(FileFormatError):
        _readers()[name](p)
    assert time.monotonic() - t0 < 5


def test_yaml_anchors_that_stay_small_still_work(tmp_path):
    from regraft.inspection.files import load_yaml

    assert load_yaml("a: &x {t: 1}\nb: *x\n") == {"a": {"t": 1}, "b": {"t": 1}}


@pytest.mark.parametrize("name", ["serve.json", "rag.json"])
@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a": ' + "9" * 5000 + "}"])
def test_deep_or_bigint_json_setup_files(tmp_path, name, text):
    from regraft.configs.readers import read_config
    from regraft.rag.setup import read_rag

    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(FileFormatError):
        (read_config if name.startswith("serve") else read_rag)(p)


@pytest.mark.parametrize("text", ["model: {model_id: x}\nvariants: 1\n", "model: {model_id: x}\nfeatures: [1]\n",
                                  "model: {model_id: x, base_args: 3}\nmeta: {}\n"])
def test_recipe_sections_of_the_wrong_type(tmp_path, text):
    from regraft.configs.readers import read_config

    p = tmp_path / "recipe.yaml"
    p.write_text(text)
    with pytest.raises(FileFormatError, match="must be a"):
        read_config(p)


@pytest.mark.parametrize("reader,name,key", [("regraft.rag.setup:read_rag", "rag.yaml", b"top_k"),
                                             ("regraft.hybrid.policy:load_policy", "policy.yaml", b"escalate_if")])
def test_yaml_inputs_not_utf8(tmp_path, reader, name, key):
    import importlib

    mod, fn = reader.split(":")
    p = tmp_path / name
    p.write_bytes(key + b": \xff\xfe\n")
    with pytest.raises(FileFormatError, match="UTF-8"):
        getattr(importlib.import_module(mod), fn)(p)


@pytest.mark.parametrize("meta", ['[1, 2]', '{"embedder": 3, "dim": 64}', '{"embedder": "hashing-64", "dim": "x"}',
                                  '"x"', "\udcff", '{"embedder": "hashing-64", "dim": ' + "9" * 5000 + "}"])
def test_store_meta_not_what_index_writes(tmp_path, meta):
    pytest.importorskip("lancedb")
    from regraft.hybrid.store import open_store

    s = tmp_path / "store"
    s.mkdir()
    (s / "regraft_store.json").write_text(meta, errors="surrogateescape")
    with pytest.raises(FileFormatError):
        open_store(str(s))


@pytest.mark.parametrize("name", ["/", "..", "/etc", "hashing-0", "hashing--3", "hashing-9999999", "x/y"])
def test_store_cannot_make_regraft_load_an_embedder_folder(tmp_path, capsys, name):
    pytest.importorskip("lancedb")
    from regraft.cli.main import main

    s = tmp_path / "store"
    s.mkdir()
    (s / "regraft_store.json").write_text(json.dumps({"format": 1, "embedder": name, "dim": 64}))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("hello")
    assert main(["index", str(docs), "--store", str(s), "--no-progress"]) == 2
    assert "embedder" in capsys.readouterr().err


def test_hashing_embedder_dims():
    from regraft.hybrid.embed import get_embedder

    for bad in ("hashing-0", "hashing--1", "hashing-70000"):
        with pytest.raises(InputError):
            get_embedder(bad)


# -- chat templates -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("template", [
    "{{ 'a' * 10**10 }}", "{{ 'x'|center(10**10) }}", "{{ '{:>3000000000}'.format(1) }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    pytest.param("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                 marks=pytest.mark.slow),
])
def test_chat_template_time_and_memory_are_bounded(template):
    import resource

    from regraft.rag.template import RENDER_SECONDS, render

    before = resource.getrlimit(resource.RLIMIT_AS)
    t0 = time.monotonic()
    with pytest.raises(RegraftError):
        render(template, [{"role": "user", "content": "hi"}])
    assert time.monotonic() - t0 < 2 * RENDER_SECONDS + 5
    assert resource.getrlimit(resource.RLIMIT_AS) == before  # the limit is given back


# -- GGUF -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [b"", b"GGUF", b"FGUF" + b"\0" * 60, b"GGUF\x03\0\0\0" + b"\xff" * 16])
def test_gguf_reader_errors_are_regraft_errors(tmp_path, data):
    pytest.importorskip("gguf")
    from regraft.port.gguf_writer import read_gguf_lora

    p = tmp_path / "x.gguf"
    p.write_bytes(data)
    with pytest.raises(RegraftError):
        read_gguf_lora(p)


def test_unsafe_input_error_is_an_input_error():
    assert issubclass(UnsafeInputError, InputError) and os.sep


@pytest.mark.parametrize("text", ['{"model": 3}', "{}", "[", '{"version": "1.0", "model": {"type": "BPE", "vocab": 7}}'])
def test_broken_tokenizer_json_is_a_format_error(tmp_path, text):
    pytest.importorskip("tokenizers")
    from regraft.rag.tokenizer import _local
    from regraft.hybrid.chunking import load_tokenizer

    (tmp_path / "tokenizer.json").write_text(text)
    with pytest.raises(FileFormatError, match="tokenizer"):
        _local(str(tmp_path), None)
    with pytest.raises(FileFormatError, match="tokenizer"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("over", [{"num_hidden_layers": 10**6}, {"num_local_experts": 10**6, "num_hidden_layers": 8},
                                  {"text_config": {"num_hidden_layers": 10**5}}])
def test_unknown_model_type_meta_build_is_bounded(tmp_path, over):
    """model_types without an architecture file are inferred from a transformers meta build: a config asking for
    a million layers or experts would build a million module objects (minutes, gigabytes)."""
    from regraft.inspection.meta_arch import infer_architecture_data

    cfg = {"model_type": "phi3", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
           "num_key_value_heads": 4, "vocab_size": 128, **over}
    t0 = time.monotonic()
    assert infer_architecture_data(cfg) is None
    assert time.monotonic() - t0 < 1


# -- found by the long campaign (bench/fuzz.py) ---------------------------------------------------------------------
def test_serving_config_nested_too_deep_for_the_writer(tmp_path):
    """Parsed fine (under the JSON recursion limit) but overflowed the YAML writer of `port config`."""
    from regraft.configs.readers import read_config

    p = tmp_path / "serve.json"
    p.write_text('{"served-model-name": ' + "[" * 900 + "]" * 900 + "}")
    with pytest.raises(FileFormatError, match="nested"):
        read_config(p)


@pytest.mark.parametrize("text,match", [('{"repetition_penalty": ' + "9" * 400 + "}", "must be a number"),
                                        ('{"do_sample": ' + "9" * 4000 + "}", "must be true or false")])
def test_serving_config_huge_numbers(tmp_path, text, match):
    from regraft.configs.readers import read_config

    p = tmp_path / "generation_config.json"
    p.write_text(text)
    with pytest.raises(FileFormatError, match=match) as ei:
        read_config(p)
    assert len(str(ei.value)) < 400  # the message quotes the value, shortened


RAG_OK = "chunking: {size: 512, unit: tokens}\nretrieval: {top_k: 8}\n"


def test_rag_samples_null(tmp_path):
    from regraft.checks.engine import area_runner
    from regraft.inspection.resolve import catalog_model

    p = tmp_path / "rag.yaml"
    p.write_text(RAG_OK + "prompt: {user: '{context} {question}'}\nsamples: null\n")
    area_runner("rag")(catalog_model("Qwen/Qwen3-8B"), catalog_model("Qwen/Qwen3-8B"), {"rag": str(p)})


@pytest.mark.parametrize("user", ["{context!r:>99999999} {question}", "{context:>99999999} {question}",
                                  "{context.__class__.__init__.__globals__} {question}", "{context[0]} {question}"])
def test_rag_placeholders_take_no_format_spec_or_attribute(tmp_path, user):
    """{context!r:>99999999} filled a 100 MB prompt per chunk (4.7 GB, then a hang)."""
    from regraft.rag.setup import read_rag

    p = tmp_path / "rag.yaml"
    p.write_text(RAG_OK + f"prompt: {{user: '{user}'}}\n")
    with pytest.raises(FileFormatError, match="placeholder|only plain"):
        read_rag(p)


@pytest.mark.parametrize("fmt,match", [(6, "regex string"), (True, "regex string"), (0.5, "regex string"),
                                       ("(a+)+$", "backtrack")])
def test_policy_format_must_be_a_safe_regex_string(tmp_path, fmt, match):
    from regraft.hybrid.policy import load_policy

    p = tmp_path / "policy.json"
    p.write_text(json.dumps({"escalate_if": {"format": fmt}}))
    with pytest.raises(FileFormatError, match=match):
        load_policy(p)


def test_yaml_flow_nesting_is_refused_before_pyyaml_scans_it(tmp_path):
    """PyYAML's scanner is quadratic in flow nesting: 100,000 '[' took minutes."""
    from regraft.rag.setup import read_rag

    p = tmp_path / "rag.yaml"
    p.write_text("[" * 100_000 + "]" * 100_000)
    t0 = time.monotonic()
    with pytest.raises(FileFormatError):
        read_rag(p)
    assert time.monotonic() - t0 < 5


def test_tokenizer_that_loads_but_cannot_encode(tmp_path):
    pytest.importorskip("tokenizers")
    from regraft.rag.tokenizer import _local

    (tmp_path / "tokenizer.json").write_text(json.dumps({
        "version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None, "decoder": None,
        "model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "BPE"}}))
    _local.cache_clear()
    with pytest.raises(FileFormatError, match="cannot encode"):
        _local(str(tmp_path), None).count("ab ba")


def test_memory_estimate_with_a_context_beyond_float_range(tmp_path):
    from regraft.checks.engine import area_runner
    from regraft.inspection.resolve import catalog_model

    p = tmp_path / "serve.yaml"
    p.write_text("max-model-len: " + "9" * 400 + "\n")
    try:
        area_runner("config")(catalog_model("Qwen/Qwen3-8B"), catalog_model("Qwen/Qwen3-8B"),
                              {"config": str(p), "runtime": "vllm"})
    except RegraftError:
        pass


@pytest.mark.parametrize("counts", [(2**40, 1), (1, 2**40), (2**63, 2**63)])
def test_gguf_declared_counts_are_checked_against_the_file(tmp_path, counts):
    pytest.importorskip("gguf")
    from regraft.port.gguf_writer import read_gguf_lora

    p = tmp_path / "x.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<I", 3) + struct.pack("<QQ", *counts) + b"\0" * 64)
    t0 = time.monotonic()
    with pytest.raises(FileFormatError, match="declares"):
        read_gguf_lora(p)
    assert time.monotonic() - t0 < 2


def test_gguf_damaged_array_count_is_refused_fast(tmp_path):
    """Found by the CI fuzz run: a metadata array whose count was damaged made the gguf package loop for minutes."""
    import ast
    import time
    from pathlib import Path

    from regraft.errors import FileFormatError
    from regraft.port.gguf_writer import read_gguf_lora

    case = ast.literal_eval((Path(__file__).parent / "data" / "gguf_array_count.txt").read_text())
    p = tmp_path / "x.gguf"
    p.write_bytes(case)
    t = time.perf_counter()
    with pytest.raises(FileFormatError, match="array declares"):
        read_gguf_lora(p)
    assert time.perf_counter() - t < 5


def test_adapter_config_list_of_non_strings(tmp_path):
    """Found by the CI fuzz run: target_parameters [null] reached the fused-expert inference (AttributeError)."""
    import json

    from regraft.errors import FileFormatError
    from regraft.inspection.adapter import read_adapter
    from regraft.inspection.safetensors_header import write_safetensors

    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                              "target_parameters": [None]}))
    write_safetensors(tmp_path / "adapter_model.safetensors", {
        "base_model.model.model.layers.0.mlp.experts.lora_A.weight": ("F32", (2, 2), b"\0" * 16),
        "base_model.model.model.layers.0.mlp.experts.lora_B.weight": ("F32", (2, 2), b"\0" * 16)})
    with pytest.raises(FileFormatError, match="'target_parameters' holds NoneType"):
        read_adapter(tmp_path)
