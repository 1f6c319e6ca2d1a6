"""Translate a ServingConfig for a target model and runtime: one reason per change, unknowns left out and named.

The decisions use the same facts and helpers as the RG6xx checks (:class:`regraft.checks.area_config.ConfigContext`),
so a ported config re-checks clean on the points regraft knows about.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from regraft.configs.model import SAMPLING_KEYS, ServingConfig

OUT_RUNTIMES = ("vllm", "sglang", "llama.cpp", "ollama", "transformers")


@dataclass
class Change:
    key: str
    old: object
    new: object  # None: removed
    reason: str

    def text(self) -> str:
        def show(v):
            return "(unset)" if v is None else json.dumps(v) if isinstance(v, (dict, list)) else str(v)

        if self.new is None:
            return f"- {self.key}: {show(self.old)} removed: {self.reason}"
        if self.old is None:
            return f"+ {self.key}: {show(self.new)}: {self.reason}"
        return f"~ {self.key}: {show(self.old)} -> {show(self.new)}: {self.reason}"

    def to_dict(self) -> dict:
        return {"key": self.key, "old": self.old, "new": self.new, "reason": self.reason}


@dataclass
class ConfigPortResult:
    source: str | None
    target: str
    runtime: str
    values: dict
    changes: list[Change] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (key, why)
    passthrough: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "runtime": self.runtime, "values": self.values,
                "changes": [c.to_dict() for c in self.changes],
                "left_out": [{"key": k, "why": w} for k, w in self.left_out], "passthrough": self.passthrough,
                "notes": self.notes}

    def diff_text(self) -> str:
        lines = [c.text() for c in self.changes] or ["(no setting changed)"]
        for k, why in self.left_out:
            lines.append(f"? {k}: left out: {why}")
        return "\n".join(lines)


def plan(cfg: ServingConfig, source, target, runtime: str | None = None) -> ConfigPortResult:
    from regraft.checks.area_config import ConfigContext

    rt = runtime or (cfg.runtime if cfg.runtime in OUT_RUNTIMES else "transformers")
    ctx = ConfigContext(source, target, cfg, rt)
    tf = ctx.tf
    v = {k: val for k, val in cfg.values.items() if val is not None}
    res = ConfigPortResult(source.name if source else None, target.name, rt, v)
    ch = res.changes

    def change(key, new, reason):
        old = v.get(key)
        if old == new:
            return
        if new is None:
            v.pop(key, None)
        else:
            v[key] = new
        ch.append(Change(key, old, new, reason))

    # model
    if rt != "ollama" and rt != "llama.cpp":
        change("model", target.name, "the target model")
    elif v.get("model") is not None:
        change("model", None, f"the {rt} model file/tag of {target.name} is not known to regraft")
        what = "GGUF file (-m)" if rt == "llama.cpp" else "FROM tag/GGUF"
        res.left_out.append(("model", f"set the {what} of {target.name}"))

    # context and rope scaling
    native = tf.native_context
    req = v.get("max_model_len")
    top = ctx.context_limit
    if req is not None and top is not None and req > top:
        change("max_model_len", top, f"{target.short_name} supports at most {top:,} tokens")
        req = top
    old_rope = v.get("rope_scaling")
    new_rope = None
    if req is not None and native and req > max(native, ctx.position_limit if tf.extended_context else native):
        factor = ctx.yarn_factor_for(req)
        if factor is not None and tf.extended_context and tf.extended_context > native:
            new_rope = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": native}
    elif req is None and old_rope is not None and native:
        res.notes.append("no max-model-len in the config: rope scaling dropped with it; set a length to get YaRN")
    if old_rope != new_rope:
        if new_rope is None:
            why = (f"{req:,} tokens fit {target.short_name}'s native {native:,} (static YaRN costs quality on short "
                   "texts)") if req and native and req <= native else (
                f"within config.json's position limit {ctx.position_limit:,}" if req and req <= ctx.position_limit
                else "no documented YaRN setting for the target at this length")
            change("rope_scaling", None, why)
        else:
            change("rope_scaling", new_rope, f"{req:,} tokens need YaRN factor {new_rope['factor']:g} over "
                                             f"{target.short_name}'s native {native:,}")
    elif new_rope is not None and cfg.rope_field in ("--rope-scaling",) and rt == "vllm":
        ch.append(Change("rope_scaling", old_rope, new_rope, "written as hf-overrides rope_parameters: --rope-scaling "
                                                             "was removed in vLLM 0.11.1"))
    if v.get("rope_theta") is not None and v["rope_theta"] != target.get("rope_theta"):
        change("rope_theta", None, f"the target's own rope_theta ({target.get('rope_theta')}) applies")
    if new_rope is not None and rt == "ollama":
        res.left_out.append(("rope_scaling", "a Modelfile cannot set YaRN (it comes from the GGUF metadata)"))
    if native and req is None and ctx.position_limit > native and rt in ("vllm", "sglang"):
        res.notes.append(f"no max-model-len: the runtime uses config.json's {ctx.position_limit:,}, past the trained "
                         f"{native:,} (Qwen's default; set {native} to stay within the trained length)")

    # MoE knobs
    if target.arch is not None and not target.is_moe:
        for k in ("enable_expert_parallel", "expert_parallel_size", "num_experts_per_tok"):
            if v.get(k) not in (None, False):
                change(k, None, f"{target.short_name} is dense (no experts)")
    elif target.is_moe and v.get("num_experts_per_tok") not in (None, target.get("num_experts_per_tok")):
        change("num_experts_per_tok", None, f"{target.short_name} routes top-{target.get('num_experts_per_tok')} of "
                                            f"{target.get('num_experts')} experts as trained")

    # tensor parallel
    tp = v.get("tensor_parallel_size")
    sizes = ctx.tp_sizes
    if tp and sizes and tp not in sizes:
        up = [s for s in sizes if s >= tp]
        if up:
            change("tensor_parallel_size", up[0], f"{tp} does not split {target.short_name}'s heads")
    mem = ctx.memory
    need = mem.gpus_needed
    have = (v.get("tensor_parallel_size") or 1) * (v.get("pipeline_parallel_size") or 1)
    if need and need > have and rt in ("vllm", "sglang"):
        up = [s for s in sizes if s >= need]
        if not mem.gpu_gb_assumed and up:
            change("tensor_parallel_size", up[0], f"{mem.text()}")
        else:
            res.notes.append(f"memory: {mem.text()}; the config gives {have} GPU(s): tensor-parallel-size not changed "
                             "(GPU size not given: set regraft.gpu_memory_gb)")

    # thinking protocol
    kwargs = dict(v.get("chat_template_kwargs") or {})
    flag = kwargs.get("enable_thinking")
    if tf.thinking == "base":
        for k in ("chat_template_kwargs", "reasoning_parser", "enable_reasoning", "tool_call_parser",
                  "enable_auto_tool_choice", "chat_template", "reasoning_format"):
            if v.get(k) not in (None, False, {}):
                change(k, None, f"{target.short_name} is a Base model with no chat template (serve /v1/completions)")
        kwargs = {}
    elif tf.thinking in ("instruct-only", "none", "thinking-only") and "enable_thinking" in kwargs:
        kwargs.pop("enable_thinking")
        change("chat_template_kwargs", kwargs or None, f"{target.short_name}'s template ignores enable_thinking "
                                                       f"({tf.thinking})")
    elif tf.thinking == "hybrid" and flag is None and ctx.source_mode == "non-thinking" and v.get("mode") != "thinking":
        kwargs["enable_thinking"] = False
        change("chat_template_kwargs", kwargs, f"{target.short_name} thinks by default; "
                                              f"{source.short_name if source else 'the source'} did not")
    # reasoning parser
    t_mode = ctx.tf.mode((v.get("chat_template_kwargs") or {}).get("enable_thinking"))
    if v.get("mode") in ("thinking", "non-thinking") and tf.thinking == "hybrid" and "enable_thinking" not in (
            v.get("chat_template_kwargs") or {}):
        t_mode = v["mode"]
    pkey = "reasoning_format" if rt == "llama.cpp" else "reasoning_parser"
    other = "reasoning_parser" if pkey == "reasoning_format" else "reasoning_format"
    if v.get(other) is not None:
        change(other, None, f"{rt} uses {pkey}")
    if tf.thinking in ("hybrid", "thinking-only"):
        want = tf.parser(rt)
        if want:
            change(pkey, want, f"{target.short_name} ({tf.thinking}) is documented with '{want}' on {rt}")
        elif rt in ("vllm", "sglang", "llama.cpp"):
            if v.get(pkey):
                change(pkey, None, f"no documented {rt} reasoning parser for {target.short_name}")
            res.left_out.append((pkey, f"{target.short_name} thinks but its {rt} reasoning parser is not documented"))
    elif tf.thinking in ("instruct-only", "none") and v.get(pkey):
        change(pkey, None, f"{target.short_name} never thinks")
    if v.get("enable_reasoning") is not None and rt == "vllm":
        change("enable_reasoning", None, "not needed since vLLM 0.9.0 (--reasoning-parser enables it)")
    if tf.thinking != "base" and v.get("tool_call_parser") and tf.tool_call_parser:
        want = tf.tool_call_parser.get(rt)
        if want and want != v["tool_call_parser"]:
            change("tool_call_parser", want, f"{target.short_name}'s documented {rt} tool parser")

    # sampling
    want = tf.sampling_for(t_mode)
    s_mode = ctx.source_mode
    s_want = ctx.sf.sampling_for(s_mode) if ctx.sf else None
    have = {k: v[k] for k in SAMPLING_KEYS if k in v}
    if want:
        for k, val in want.items():
            if k not in have or abs(float(have[k]) - float(val)) > 1e-9:
                change(k, val, f"recommended for {target.short_name} ({t_mode})")
        if v.get("do_sample") is False and not tf.greedy_ok:
            change("do_sample", True, f"{target.short_name} must not decode greedily while thinking")
    elif have and tf.thinking != "base":
        for k, val in have.items():
            if s_want and k in s_want and abs(float(s_want[k]) - float(val)) < 1e-9:
                change(k, None, "the source's recommended value; the target's is not known")
                res.left_out.append((k, f"{target.short_name}'s recommended {k} is not documented in regraft"))

    # stop ids / strings
    if tf.stop_token_ids:
        for k in ("stop_token_ids", "eos_token_id"):
            if v.get(k) is not None and sorted(v[k]) != sorted(tf.stop_token_ids):
                change(k, list(tf.stop_token_ids), f"{target.short_name}'s end-of-turn / end-of-text ids")
    if v.get("bos_token_id") is not None and target.get("bos_token_id") not in (None, v["bos_token_id"]):
        change("bos_token_id", target.get("bos_token_id"), "the target's bos id")
    if v.get("stop") and tf.stop_strings:
        import re

        markers = [s for s in v["stop"] if re.fullmatch(r"<\|[^|]+\|>|</s>|<end_of_turn>", s)]
        if any(s not in tf.stop_strings for s in markers):
            new = [s for s in v["stop"] if s not in markers] + list(tf.stop_strings)
            change("stop", new, f"{target.short_name}'s end markers")

    # answer length
    mt = v.get("max_tokens")
    adv = (tf.max_output or {}).get(t_mode or "")
    ctxlen = v.get("max_model_len") or target.get("max_position_embeddings")
    if mt is not None and t_mode == "thinking" and adv and mt < min(8192, adv):
        new = adv if not ctxlen or adv < ctxlen else ctxlen // 2
        change("max_tokens", new, f"{target.short_name} thinks; advised output up to {adv:,}")

    # LoRA serving
    if v.get("enable_lora") or v.get("lora_modules"):
        rf = ctx.runtime_facts
        archs = rf.get("architectures")
        if archs and target.model_type not in archs:
            for k in ("enable_lora", "max_lora_rank", "max_loras", "lora_modules"):
                if v.get(k) is not None:
                    change(k, None, f"{rt} cannot serve LoRA on {target.model_type}")
            res.left_out.append(("lora", "merge the adapter into the weights (the runtime has no LoRA support here)"))
        else:
            allowed = rf.get("allowed_ranks")
            mlr = v.get("max_lora_rank")
            rank, _where = ctx.adapter_rank
            need_rank = max([r for r in (mlr, rank) if r is not None], default=None)
            if need_rank is not None and allowed:
                up = [r for r in allowed if r >= need_rank]
                if up and up[0] != mlr:
                    change("max_lora_rank", up[0], f"{rt} accepts {allowed}" + (f"; adapter rank {rank}" if rank
                                                                                   else ""))
            if any(":" in str(m) or "/" in str(m) for m in v.get("lora_modules") or []):
                res.notes.append("lora-modules kept as written: the adapters themselves must be ported "
                                 "(regraft check --adapter / regraft port lora)")

    # what cannot be carried
    for key, why in cfg.unknown:
        res.left_out.append((key, f"unknown key ({why}); not carried over"))
    if rt == cfg.runtime:
        res.passthrough = dict(cfg.passthrough)
    elif cfg.passthrough:
        for k in cfg.passthrough:
            res.left_out.append((k, f"a {cfg.runtime} setting with no {rt} equivalent in regraft"))
    for n in cfg.notes:
        res.notes.append(f"input: {n}")
    return res
