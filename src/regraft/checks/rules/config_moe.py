"""RG62x: MoE-only knobs and parallel sizes against the target's real shapes."""

from __future__ import annotations

from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule


@rule("RG620", "moe-knob-on-dense", area="config", severity=Severity.WARNING, verdict=Verdict.NEEDS_PORT)
def moe_on_dense(ctx):
    """A MoE-only setting (expert parallel, experts per token) in a config for a dense target.

    A dense model has no experts: expert parallelism has nothing to split and a num_experts_per_tok override is
    meaningless; the GPUs planned for expert parallelism must be planned as tensor/pipeline parallel instead.
    Bad:  --enable-expert-parallel (written for Qwen3-30B-A3B) on Qwen3-32B
    Good: drop it; size tensor-parallel-size for the dense model
    """
    if ctx.target.arch is None or ctx.target.is_moe:
        return
    for key in ("enable_expert_parallel", "expert_parallel_size", "num_experts_per_tok"):
        v = ctx.cfg.get(key)
        if v in (None, False):
            continue
        yield moe_on_dense.rule.finding(f"'{ctx.cfg.where(key)}' = {v} but {ctx.target.short_name} is dense "
                                        "(no experts)", hint="remove it (regraft port config does)",
                                        data={"key": key})


@rule("RG621", "moe-expert-values", area="config", severity=Severity.WARNING, verdict=Verdict.NEEDS_PORT)
def moe_values(ctx):
    """A MoE setting that does not fit the target's real experts (count, top-k), or that overrides its top-k.

    Overriding num_experts_per_tok is not a supported knob upstream (users edit config.json; llama.cpp
    --override-kv): it changes the model's computation. Expert-parallel sizes must divide the expert count.
    Bad:  num_experts_per_tok 16 on Qwen3-235B-A22B (128 experts, top-8)
    Good: leave top-k at the model's value; EP size dividing 128
    """
    t = ctx.target
    if t.arch is None or not t.is_moe:
        return
    e, k = t.get("num_experts"), t.get("num_experts_per_tok")
    over = ctx.cfg.get("num_experts_per_tok")
    if over is not None and over != k:
        sev = Severity.ERROR if e and over > e else Severity.WARNING
        yield moe_values.rule.finding(f"'{ctx.cfg.where('num_experts_per_tok')}' = {over} overrides "
                                      f"{t.short_name}'s top-{k} of {e} experts: not how it was trained"
                                      + (" (more than it has)" if sev is Severity.ERROR else ""),
                                      hint=f"remove it, or set {k}", severity=sev,
                                      data={"num_experts": e, "top_k": k, "override": over})
    ep = ctx.cfg.get("expert_parallel_size")
    if ep and e and e % ep:
        yield moe_values.rule.finding(f"expert parallel size {ep} does not divide {t.short_name}'s {e} experts",
                                      severity=Severity.ERROR)
    if over is None and (ctx.cfg.get("enable_expert_parallel") or ep):
        yield moe_values.rule.finding(f"{t.short_name}: {e} experts, top-{k} per token", severity=Severity.INFO,
                                      verdict=None, data={"num_experts": e, "top_k": k})


@rule("RG622", "parallel-size", area="config", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def parallel_size(ctx):
    """A tensor-parallel size the target's heads cannot be split by.

    Attention heads are split across tensor-parallel ranks: TP must divide num_attention_heads, and KV heads must
    divide evenly or be replicated (TP a multiple of kv_heads).
    Bad:  tensor-parallel-size 6 on Qwen3-32B (64 query heads, 8 KV heads)
    Good: 4 or 8
    """
    tp = ctx.cfg.get("tensor_parallel_size")
    if not tp or ctx.target.get("num_attention_heads") is None:
        return
    sizes = ctx.tp_sizes
    if tp not in sizes:
        up = [s for s in sizes if s >= tp]
        yield parallel_size.rule.finding(
            f"'{ctx.cfg.where('tensor_parallel_size')}' = {tp} does not split {ctx.target.short_name}'s "
            f"{ctx.target.get('num_attention_heads')} query / {ctx.target.get('num_key_value_heads')} KV heads",
            hint=f"use one of {', '.join(map(str, sizes[:8]))}" + (f" (next: {up[0]})" if up else ""),
            data={"valid": sizes})
