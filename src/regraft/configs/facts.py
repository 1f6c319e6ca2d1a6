"""Family facts for a ModelSpec: thinking protocol, sampling per mode, native/extended context, stop ids, parsers.

Facts come from ``families.json`` (each family cites its sources). A model that matches no family (e.g. a local
folder with another name) gets facts *inferred* from its chat template and config.json, marked ``inferred``; what
cannot be inferred stays None and the checks say "unknown" rather than guess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def _data() -> dict:
    return json.loads(resources.files("regraft.configs").joinpath("families.json").read_text(encoding="utf-8"))


@dataclass
class Facts:
    family: str  # family id, or "inferred" / "unknown"
    label: str
    thinking: str  # hybrid | thinking-only | instruct-only | none | base | unknown
    thinking_default: bool | None
    enable_thinking: str  # supported | ignored | no-template | unknown
    template_injects_think: bool | None
    chat_template: bool | None
    reasoning_parser: dict | None
    tool_call_parser: dict | None
    sampling: dict | None  # mode -> {temperature, ...}
    greedy_ok: bool | None
    native_context: int | None
    extended_context: int | None
    yarn_factor: float | None
    config_max_position_embeddings: int | None
    max_output: dict | None
    eos_token_id: int | None
    stop_token_ids: list[int] = field(default_factory=list)
    stop_strings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    inferred: bool = False
    context_note: str = ""
    default_system_prompt: bool = False
    soft_switches: bool | None = None  # /think and /no_think honoured (Qwen3 2504 hybrid)

    @property
    def thinks(self) -> bool | None:
        """Whether the model thinks by default."""
        return self.thinking_default

    def mode(self, flag: bool | None) -> str | None:
        """The mode a request runs in, given enable_thinking (None: not set)."""
        if self.thinking in ("instruct-only", "none"):
            return "non-thinking"
        if self.thinking == "thinking-only":
            return "thinking"
        if self.thinking == "hybrid":
            if flag is None:
                return "thinking" if self.thinking_default else "non-thinking"
            return "thinking" if flag else "non-thinking"
        return None

    def sampling_for(self, mode: str | None) -> dict | None:
        if not self.sampling or mode is None:
            return None
        return self.sampling.get(mode)

    def parser(self, runtime: str) -> str | None:
        return (self.reasoning_parser or {}).get(runtime)

    @property
    def max_context(self) -> int | None:
        """The longest context the family supports (extended when it has one, else native)."""
        return self.extended_context or self.native_context

    def source_text(self) -> str:
        if self.inferred:
            return "inferred from the model's chat template and config.json"
        srcs = _data()["_sources"]
        return "; ".join(srcs.get(s, s) for s in self.sources)


def _from_entry(e: dict, spec) -> Facts:
    ctx = e.get("context") or {}
    native = ctx.get("native")
    if native == "config":
        native = spec.get("max_position_embeddings")
    return Facts(
        family=e["id"], label=e["label"], thinking=e["thinking"], thinking_default=e.get("thinking_default"),
        enable_thinking=e.get("enable_thinking") or "unknown", template_injects_think=e.get("template_injects_think"),
        chat_template=e.get("chat_template"), reasoning_parser=e.get("reasoning_parser"),
        tool_call_parser=e.get("tool_call_parser"), sampling=e.get("sampling"), greedy_ok=e.get("greedy_ok"),
        native_context=native, extended_context=ctx.get("extended"), yarn_factor=ctx.get("yarn_factor"),
        config_max_position_embeddings=ctx.get("config_max_position_embeddings"), max_output=e.get("max_output"),
        eos_token_id=e.get("eos_token_id"), stop_token_ids=list(e.get("stop_token_ids") or []),
        stop_strings=list(e.get("stop_strings") or []), sources=list(e.get("sources") or []),
        context_note=ctx.get("note", ""), default_system_prompt=bool(e.get("default_system_prompt")),
        soft_switches=e.get("soft_switches"))


def served_context(config: dict) -> tuple[int | None, str]:
    """The context window a runtime serves from a config.json, and why: with static YaRN in the config
    (``rope_scaling``, or transformers-5 ``rope_parameters``, ``rope_type``/``type`` "yarn" and a ``factor``), vLLM
    derives max_model_len = original_max_position_embeddings x factor (Qwen3: 32,768 x 4 = 131,072; see
    research/ecosystem.md on YaRN and the Qwen deployment docs); other scalings, or none: max_position_embeddings."""
    rs = config.get("rope_scaling") or config.get("rope_parameters") or {}
    mpe = config.get("max_position_embeddings")
    mpe = mpe if isinstance(mpe, int) and not isinstance(mpe, bool) and mpe > 0 else None
    if isinstance(rs, dict) and (rs.get("rope_type") or rs.get("type")) == "yarn":
        f, orig = rs.get("factor"), rs.get("original_max_position_embeddings") or mpe
        if isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0 and isinstance(orig, int) and orig > 0:
            return int(orig * f), f"YaRN: original_max_position_embeddings {orig} x factor {f:g}"
    if mpe:
        return mpe, "max_position_embeddings"
    for key in ("max_sequence_length", "seq_length", "n_positions"):
        v = config.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v, key
    return None, "no context length in config.json"


def family_entry(name: str) -> dict | None:
    for e in _data()["families"]:
        if re.search(e["match"], name):
            return e
    return None


def family_ids() -> list[str]:
    return [e["id"] for e in _data()["families"]]


_ORGS = ("Qwen", "meta-llama", "mistralai")


class PairFacts:
    """Mixin of the check contexts that hold a ``source`` (or None) and a ``target`` ModelSpec: their facts."""

    @cached_property
    def tf(self) -> Facts:
        return facts_for(self.target)

    @cached_property
    def sf(self) -> Facts | None:
        return facts_for(self.source) if self.source is not None else None


def facts_for(spec) -> Facts:
    """Family facts for a ModelSpec (by Hub id; local folders by folder name when the model_type fits; else inferred)."""
    e = family_entry(spec.name)
    if e is None and spec.path is not None:
        mt = spec.model_type
        for org in _ORGS:
            cand = family_entry(f"{org}/{spec.short_name}")
            if cand is not None and mt in cand.get("model_types", []):
                e = cand
                break
    if e is not None:
        return _from_entry(e, spec)
    return infer_facts(spec)


def infer_facts(spec) -> Facts:
    """Facts from the chat template and config.json alone (a local or unknown model)."""
    t = spec.chat_template
    eos = spec.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) and eos else eos
    max_pos = spec.get("max_position_embeddings")
    native = max_pos
    note = ""
    if spec.model_type in ("qwen3", "qwen3_moe") and max_pos == 40960:
        native, note = 32768, "config max_position_embeddings 40960 is 32,768 + 8,192 reserve (Qwen3 docs)"
    thinking, default, et, inject = "unknown", None, "unknown", None
    if t is None:
        if spec.tokenizer_config is not None or spec.origin in ("local", "hf-cache"):
            thinking, default, et = "base", False, "no-template"
    elif "enable_thinking" in t:
        thinking, default, et = "hybrid", True, "supported"
        inject = bool(re.search(r"add_generation_prompt[\s\S]*'<think>\\n'", t)) and "enable_thinking is false" in t
    elif re.search(r"add_generation_prompt[\s\S]*<think>", t):
        thinking, default, et, inject = "thinking-only", True, "ignored", True
    else:
        thinking, default, et, inject = "none", False, "ignored", False
    stop = []
    if isinstance(spec.get("eos_token_id"), list):
        stop = list(spec.get("eos_token_id"))
    elif eos is not None:
        stop = [eos]
    return Facts(family="inferred" if thinking != "unknown" else "unknown",
                 label=f"{spec.model_type or 'unknown'} (inferred)", thinking=thinking, thinking_default=default,
                 enable_thinking=et, template_injects_think=inject, chat_template=t is not None if thinking != "unknown"
                 else None, reasoning_parser=None, tool_call_parser=None, sampling=None, greedy_ok=None,
                 native_context=native, extended_context=None, yarn_factor=None,
                 config_max_position_embeddings=max_pos, max_output=None, eos_token_id=eos, stop_token_ids=stop,
                 stop_strings=[], sources=[], inferred=True, context_note=note)
