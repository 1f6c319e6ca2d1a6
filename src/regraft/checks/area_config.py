"""The Config column: is a serving / generation config for SOURCE usable on TARGET, and what must change.

Registers ``AREA_RUNNERS["config"]``. The file is read once per path (cached by path, mtime and size); rules are
pure functions of a :class:`ConfigContext`. Verdicts: loads (usable as is), needs-relayout (only names/format
change for the runtime), needs-port (values must change: ``regraft port config``), cannot (the target cannot do
what the config asks), unknown (facts missing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from regraft.catalog import runtime_data
from regraft.checks.engine import AREA_RUNNERS, run_rules
from regraft.checks.finding import AreaResult, Verdict
from regraft.configs.facts import PairFacts
from regraft.configs.memory import MemoryEstimate, estimate, valid_tp_sizes
from regraft.configs.model import ServingConfig
from regraft.configs.readers import read_config
from regraft.inspection.model import ModelSpec

SERVING_RUNTIMES = ("vllm", "sglang", "llama.cpp", "ollama", "transformers")


@dataclass
class ConfigContext(PairFacts):
    source: ModelSpec | None
    target: ModelSpec
    cfg: ServingConfig
    runtime: str  # the serving runtime the config is for
    adapter: object | None = None  # the AdapterSpec of `check --adapter`, when the engine passes it in options

    @property
    def requested_context(self) -> int | None:
        return self.cfg.requested_context

    @property
    def effective_context(self) -> int | None:
        """The context the runtime will use: the config's; else, with YaRN, original x factor (what vLLM derives);
        else the target's max_position_embeddings."""
        if self.cfg.requested_context:
            return self.cfg.requested_context
        y = self.cfg.yarn
        if y and y.get("factor"):
            orig = y.get("original_max_position_embeddings") or self.tf.native_context
            if orig:  # both checked when the config was read (configs.model.coerce)
                return int(orig * float(y["factor"]))
        return self.target.get("max_position_embeddings")

    @property
    def position_limit(self) -> int:
        """config.json's max_position_embeddings as the family documents it (Qwen3: 40,960), or the native length."""
        return (self.tf.config_max_position_embeddings or self.tf.native_context
                or self.target.get("max_position_embeddings") or 0)

    @property
    def context_limit(self) -> int | None:
        """The longest context the config may ask for on the target (extended, or the position limit)."""
        top = self.tf.max_context
        return None if top is None else max(top, self.position_limit)

    @property
    def thinking_flag(self) -> bool | None:
        """enable_thinking as configured (chat_template_kwargs, llama.cpp --reasoning-budget 0)."""
        return self.cfg.thinking_flag

    @property
    def effective_flag(self) -> bool | None:
        """The flag, else a /think or /no_think soft switch in the system prompt when the target honours them."""
        if self.cfg.thinking_flag is not None:
            return self.cfg.thinking_flag
        import re

        sw = re.findall(r"(?<![\w/])/(no_think|think)\b", self.cfg.get("system") or "")
        if sw and self.tf.soft_switches:
            return sw[-1] == "think"
        return None

    @property
    def target_mode(self) -> str | None:
        mode = self.cfg.get("mode")
        if mode in ("thinking", "non-thinking") and self.tf.thinking == "hybrid" and self.effective_flag is None:
            return mode
        return self.tf.mode(self.effective_flag)

    @property
    def source_mode(self) -> str | None:
        if self.sf is None:
            return self.cfg.get("mode")
        mode = self.cfg.get("mode")
        if mode in ("thinking", "non-thinking") and self.sf.thinking == "hybrid" and self.thinking_flag is None:
            return mode
        return self.sf.mode(self.thinking_flag)

    @cached_property
    def memory(self) -> MemoryEstimate:
        c = self.cfg
        return estimate(self.target, self.effective_context, c.get("concurrent_requests") or 1, c.get("dtype"),
                        c.get("kv_cache_dtype"), c.get("quantization"), c.get("gpu_memory_gb"),
                        c.get("gpu_memory_utilization"))

    @cached_property
    def adapter_rank(self) -> tuple[int | None, str]:
        """The LoRA rank the config must serve: regraft.adapter_rank, else adapter_config.json of --lora-modules."""
        if self.cfg.has("adapter_rank"):
            return self.cfg.get("adapter_rank"), self.cfg.where("adapter_rank")
        r = getattr(self.adapter, "r", None)
        if isinstance(r, int):
            return r, f"--adapter {getattr(self.adapter, 'path', '')}".strip()
        best = None, ""
        from regraft.configs.model import lora_module_path
        from regraft.errors import InputError
        from regraft.inspection.files import read_json
        from regraft.numbers import NumberError, parse_int

        for item in self.cfg.get("lora_modules") or []:
            path = lora_module_path(item)
            if path is None:
                continue
            p = Path(path).expanduser()
            if not p.is_absolute():
                p = self.cfg.path.parent / p
            f = p / "adapter_config.json"
            try:
                if not f.is_file():
                    continue
                r = parse_int(read_json(f).get("r"), f"{f}: 'r'", 1, 1 << 20, strings=False)
            except (OSError, InputError, NumberError):  # unreadable, not JSON, FIFO, no plain rank: not evidence
                continue
            if best[0] is None or r > best[0]:
                import os

                best = r, os.path.relpath(f, self.cfg.path.parent)
        return best

    def yarn_factor_for(self, length: int) -> float | None:
        """The YaRN factor for ``length`` on the target (smallest multiple of 0.5 that covers it), or None."""
        native = self.tf.native_context
        if not native or length <= native:
            return None
        return math.ceil(length / native * 2) / 2

    @property
    def tp_sizes(self) -> list[int]:
        return valid_tp_sizes(self.target)

    @property
    def runtime_facts(self) -> dict:
        return runtime_data(self.runtime) or {}


def config_runtime(cfg: ServingConfig, options: dict) -> str:
    rt = cfg.runtime
    opt = (options or {}).get("runtime")
    if cfg.format == "generation_config" and opt in SERVING_RUNTIMES:
        return opt
    return rt or (opt if opt in SERVING_RUNTIMES else "transformers")


def run_config(source: ModelSpec | None, target: ModelSpec, options: dict) -> AreaResult:
    cfg = read_config(options["config"])
    ctx = ConfigContext(source, target, cfg, config_runtime(cfg, options), options.get("adapter"))
    select, ignore = options.get("select"), options.get("ignore")
    findings, verdict = run_rules("config", ctx, select, ignore)
    changes = [f for f in findings if f.verdict in (Verdict.NEEDS_PORT, Verdict.NEEDS_RELAYOUT, Verdict.CANNOT)]
    if verdict is Verdict.LOADS:
        summary = f"{cfg.format} usable as is"
    elif verdict is Verdict.UNKNOWN:
        summary = "facts missing: " + ", ".join(sorted({f.code for f in findings if f.verdict is Verdict.UNKNOWN}))
    else:
        summary = f"{len(changes)} change{'s' if len(changes) != 1 else ''}: " + ", ".join(
            dict.fromkeys(f.name for f in changes))
    return AreaResult("config", verdict, findings, [], summary)


AREA_RUNNERS["config"] = run_config
