"""The readers under fuzz: name -> (strategy, run). Shared by the tests and ``bench/fuzz.py``.

``run(case, folder)`` writes the generated case under ``folder`` and runs the reader end to end, including
what a command does next with the result (describe, check, render), since a crash there is just as fatal.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Callable

from hypothesis import strategies as st

from tests.hostile import strategies as S
from tests.hostile import strategies_files as F


def _render_all_card(card: dict) -> None:
    from rich.console import Console

    from regraft.report import render_card

    json.dumps(card, default=list)
    for fmt in ("json", "markdown"):
        _encode_utf8(render_card(card, fmt))
    render_card(card, "table", console=Console(file=_Utf8Sink(), width=120))


def _render_all_check(report) -> None:
    from rich.console import Console

    from regraft.report import render_check

    for fmt in ("json", "markdown"):
        _encode_utf8(render_check(report, fmt, layers=True))
    render_check(report, "table", layers=False, console=Console(file=_Utf8Sink(), width=120))  # layers: md/json


class _Utf8Sink(io.StringIO):
    """A console file that encodes like the CLI's stdout (UTF-8, lone surrogates backslash-escaped)."""

    def write(self, s):
        s.encode("utf-8", "backslashreplace")
        return super().write(s)


def _encode_utf8(text: str | None) -> None:
    if text is not None:
        text.encode("utf-8", "backslashreplace")  # what the CLI's stdout does (see test_cli_output.py)


def run_safetensors(case: S.StFile, folder) -> None:
    from regraft.inspection.safetensors_header import read_header

    h = read_header(case.write(folder / "x.safetensors"))
    assert h.bytes_read <= case.size


def run_adapter(case, folder) -> None:
    from regraft.inspection.adapter import read_adapter

    spec = read_adapter(S.write_adapter(folder / "adapter", case))
    _render_all_card(spec.describe())


def run_model_folder(case: S.ModelFolder, folder) -> None:
    from regraft.inspection.resolve import resolve_model

    spec = resolve_model(case.write(folder / "model"), use_hub=False)
    _render_all_card(spec.describe())


def run_check(case, folder) -> None:
    """check end to end: generated source, target and adapter, every runtime, every format."""
    from regraft.checks.engine import check
    from regraft.inspection.adapter import read_adapter
    from regraft.inspection.resolve import resolve_model

    src_case, tgt_case, adapter_case, runtime = case
    source = resolve_model(src_case.write(folder / "src"), use_hub=False)
    target = resolve_model(tgt_case.write(folder / "tgt"), use_hub=False)
    adapter = read_adapter(S.write_adapter(folder / "adapter", adapter_case)) if adapter_case else None
    report = check(source, [target], adapter, runtime)
    _render_all_check(report)


def _config_only_folders():
    return st.builds(lambda cfg: S.ModelFolder({"config.json": S.dumps(cfg)}), S.model_configs())


check_cases = st.tuples(
    st.one_of(_config_only_folders(), S.model_folders()),
    _config_only_folders(),
    st.one_of(st.none(), S.adapters()),
    st.sampled_from(["peft", "vllm", "sglang", "llama.cpp", "ollama"]),
)


# -- setup files ------------------------------------------------------------------------------------------------
def _catalog(name):
    from regraft.inspection.resolve import catalog_model

    return catalog_model(name)


def _write(folder, name_text):
    name, text = name_text
    path = folder / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    (folder / "sample.txt").write_text("Some sample text for token counts. " * 20)
    return path


def run_serving_config(case, folder) -> None:
    """read_config + `check --config` rules + `port config` plan and writer, for a dense and a MoE target."""
    from regraft.checks.engine import area_runner
    from regraft.configs.port import plan
    from regraft.configs.readers import read_config
    from regraft.configs.writers import render

    path = _write(folder, case)
    cfg = read_config(path)
    src, tgt = _catalog("Qwen/Qwen3-8B"), _catalog("Qwen/Qwen3-30B-A3B")
    area_runner("config")(src, tgt, {"config": str(path), "runtime": "vllm"})
    for rt in (None, "llama.cpp"):
        text, command = render(plan(cfg, src, tgt, rt))
        _encode_utf8(text)


def run_rag_setup(case, folder) -> None:
    """read_rag + `check --rag` rules (tokenizers, template, budget) + `port rag` plan."""
    from regraft.checks.engine import area_runner
    from regraft.rag.port import plan_rag
    from regraft.rag.setup import read_rag

    path = _write(folder, case)
    setup = read_rag(path)
    src, tgt = _catalog("Qwen/Qwen3-8B"), _catalog("Qwen/Qwen3-30B-A3B-Base")
    area_runner("rag")(src, tgt, {"rag": str(path)})
    plan_rag(setup, src, tgt)


def run_policy(case, folder) -> None:
    from regraft.hybrid.policy import load_policy

    load_policy(_write(folder, case))


def run_chat_template(case, folder) -> None:
    """The sandboxed renderer on generated templates and messages (also via a model folder's tokenizer_config)."""
    from regraft.rag.template import render

    template, msgs = case
    _encode_utf8(render(template, msgs))


def run_store_meta(case, folder) -> None:
    """A downloaded store folder with a generated regraft_store.json, opened the way `index`, `serve` and `ask` do:
    open_store (meta validated), the embedder the store names (never a folder it names), then the store for writing."""
    from regraft.hybrid.embed import get_embedder, stored_embedder
    from regraft.hybrid.store import open_store

    store = folder / "store"
    store.mkdir()
    (store / "regraft_store.json").write_text(case, encoding="utf-8", errors="surrogatepass")
    meta = open_store(str(store)).get_meta()
    name = stored_embedder(meta)
    if name and name.startswith("hashing-"):
        get_embedder(name).embed(["hello lora"])
    open_store(str(store), create=True)


_GGUF: list[bytes] = []


def valid_gguf() -> bytes:
    """A small valid GGUF LoRA written by regraft's own writer (cached)."""
    if not _GGUF:
        import tempfile
        from pathlib import Path

        import torch

        from regraft.port.gguf_writer import write_gguf
        from regraft.port.items import Item

        items = []
        for i in range(2):
            it = Item(f"model.layers.{i}.self_attn.q_proj", "lora", layer=i)
            it.a, it.b = torch.ones(2, 8), torch.ones(8, 2)
            items.append(it)
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "x.gguf"
            write_gguf(out, items, "qwen3", 2, None, 4.0, name="fuzz")
            _GGUF.append(out.read_bytes())
    return _GGUF[0]


def run_gguf(case: bytes, folder) -> None:
    from regraft.port.gguf_writer import read_gguf_lora

    path = folder / "x.gguf"
    path.write_bytes(case)
    read_gguf_lora(path)


def _gguf_strategy():
    from tests.hostile import strategies_files as F

    return st.deferred(lambda: F.gguf_files(valid_gguf()))


def _warm_rag() -> None:
    """Load the bundled Qwen tokenizer once (seconds, cached per process) so that it is not a case's time."""
    from regraft.rag.tokenizer import bundled_qwen

    bundled_qwen()


def run_tokenizer_json(case: str, folder) -> None:
    """A model folder's tokenizer.json, as `check --rag` and `index --tokenizer` load it."""
    from regraft.rag.tokenizer import _local
    from regraft.hybrid.chunking import load_tokenizer

    m = folder / "m"
    m.mkdir()
    (m / "tokenizer.json").write_text(case, encoding="utf-8", errors="surrogatepass")
    _local.cache_clear()
    _local(str(m), None).count("ab ba <|im_end|>")
    load_tokenizer(m).encode("ab ba")


def _warm_transformers() -> None:
    """Import transformers' auto classes once: model types without an architecture file are inferred from a
    transformers meta build, and the first import takes seconds (more on a loaded machine)."""
    try:
        from regraft.inspection.meta_arch import infer_architecture_data

        infer_architecture_data({"model_type": "llama", "hidden_size": 8, "intermediate_size": 8,
                                 "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 8})
    except ImportError:
        pass


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    strategy: st.SearchStrategy
    run: Callable
    warmup: Callable | None = None  # one-time, per-process cost to pay before the cases are timed
    ci_cases: int = 200  # cases in the default (ci) profile; the slow readers run fewer


TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("safetensors-header", "read_header on generated .safetensors files (length prefix, JSON, offsets, "
           "dtypes, overlaps, out-of-range spans, huge declared sizes)", S.safetensors_files(), run_safetensors),
    Target("adapter", "read_adapter + describe + render (adapter_config.json + adapter_model.safetensors)",
           S.adapters(), run_adapter),
    Target("model-folder", "resolve_model on a folder + describe + render (config.json, generation_config.json, "
           "tokenizer_config.json, chat_template.jinja/json, safetensors index)", S.model_folders(),
           run_model_folder, _warm_transformers),
    Target("check", "check() end to end on generated source/target configs and adapters, all runtimes, "
           "all report formats", check_cases, run_check, _warm_transformers, ci_cases=100),
    Target("serving-config", "read_config (vLLM/SGLang YAML/JSON, generation_config.json, command lines, Modelfiles, "
           "recipes) + check --config rules + port config plan/writer", F.serving_files(), run_serving_config,
           ci_cases=100),
    Target("rag-setup", "read_rag (YAML/JSON) + check --rag rules (tokenizers, template, budget) + port rag plan",
           F.rag_files(), run_rag_setup, _warm_rag, ci_cases=100),
    Target("policy", "load_policy (escalation policy YAML/JSON)", F.policy_files(), run_policy, ci_cases=100),
    Target("chat-template", "sandboxed chat-template rendering (rag.template.render) on generated templates",
           st.tuples(F.templates(), F.messages), run_chat_template),
    Target("store-meta", "a store folder with a generated regraft_store.json, opened as index/serve/ask do",
           F.store_metas(), run_store_meta, ci_cases=100),
    Target("tokenizer-json", "a model folder's tokenizer.json (tokenizers library) as check --rag and index "
           "--tokenizer load it", F.tokenizer_jsons(), run_tokenizer_json),
    Target("gguf", "read_gguf_lora (gguf package reader; used by tests only, not by a command) on damaged GGUF "
           "LoRA files", _gguf_strategy(), run_gguf, ci_cases=100),
]}
