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


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    strategy: st.SearchStrategy
    run: Callable


TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("safetensors-header", "read_header on generated .safetensors files (length prefix, JSON, offsets, "
           "dtypes, overlaps, out-of-range spans, huge declared sizes)", S.safetensors_files(), run_safetensors),
    Target("adapter", "read_adapter + describe + render (adapter_config.json + adapter_model.safetensors)",
           S.adapters(), run_adapter),
    Target("model-folder", "resolve_model on a folder + describe + render (config.json, generation_config.json, "
           "tokenizer_config.json, chat_template.jinja/json, safetensors index)", S.model_folders(),
           run_model_folder),
    Target("check", "check() end to end on generated source/target configs and adapters, all runtimes, "
           "all report formats", check_cases, run_check),
]}
