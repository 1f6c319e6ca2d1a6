"""RG65x / RG66x: LoRA serving limits and memory (weights + KV cache) at the requested context."""

from __future__ import annotations

from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule


@rule("RG650", "max-lora-rank", area="config", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def lora_rank(ctx):
    """max_lora_rank below the adapter's rank, or not a rank the runtime allows.

    vLLM rejects an adapter whose rank exceeds --max-lora-rank ("LoRA rank {r} is greater than max_lora_rank") and
    only accepts max_lora_rank in {1, 8, 16, 32, 64, 128, 256, 320, 512}; its default is 16.
    Bad:  enable-lora with the default max-lora-rank 16 for an r=64 adapter
    Good: max-lora-rank 64
    """
    c = ctx.cfg
    if not c.get("enable_lora") and not c.get("lora_modules"):
        return
    rf = ctx.runtime_facts
    allowed = rf.get("allowed_ranks")
    mlr = c.get("max_lora_rank")
    eff = mlr if mlr is not None else rf.get("default_max_lora_rank")
    if mlr is not None and allowed and mlr not in allowed:
        up = [r for r in allowed if r >= mlr]
        yield lora_rank.rule.finding(f"{c.where('max_lora_rank')} = {mlr} is not one of {ctx.runtime}'s ranks "
                                     f"{allowed}", hint=f"use {up[0] if up else allowed[-1]}")
    rank, where = ctx.adapter_rank
    if rank is not None and eff is not None and rank > eff:
        up = [r for r in (allowed or [rank]) if r >= rank]
        yield lora_rank.rule.finding(f"adapter rank {rank} ({where}) > max_lora_rank {eff}"
                                     + ("" if mlr is not None else f" ({ctx.runtime} default)"),
                                     hint=f"set max-lora-rank {up[0] if up else rank}")


@rule("RG651", "lora-architecture", area="config", severity=Severity.ERROR, verdict=Verdict.CANNOT)
def lora_arch(ctx):
    """LoRA serving enabled for a target architecture the runtime cannot serve LoRA on.

    Bad:  enable-lora on a model_type missing from the runtime's LoRA list
    Good: merge the adapter first, or pick a runtime that supports it
    """
    if not ctx.cfg.get("enable_lora"):
        return
    archs = ctx.runtime_facts.get("architectures")
    mt = ctx.target.get("model_type") if ctx.target.arch else ctx.target.model_type
    if archs and ctx.target.model_type not in archs and mt not in archs:
        yield lora_arch.rule.finding(f"{ctx.runtime} serves LoRA for {', '.join(archs)}; "
                                     f"{ctx.target.short_name} is {ctx.target.model_type}",
                                     hint="merge the adapter into the weights, or serve without LoRA")


@rule("RG660", "memory-fit", area="config", severity=Severity.INFO)
def memory(ctx):
    """Weights + KV cache at the requested context and concurrency, and the GPUs of a given size that needs.

    KV cache per token = 2 x attention layers x kv_heads x head_dim x bytes (fp8 KV halves it); linear-attention
    layers keep a fixed state instead. The GPU size comes from regraft.gpu_memory_gb (80 GiB assumed otherwise);
    activations and CUDA graphs are not counted, hence gpu_memory_utilization.
    Bad:  tensor-parallel-size 4 x 80 GiB for Qwen3-235B-A22B in bf16 (438 GiB of weights)
    Good: 8 x 80 GiB, or FP8 weights
    """
    m = ctx.memory
    if m.total_bytes is None:
        if ctx.cfg.has("tensor_parallel_size") or ctx.cfg.has("gpu_memory_gb"):
            yield memory.rule.finding(f"memory not estimated: {ctx.target.short_name}'s shapes are not all known",
                                      verdict=Verdict.UNKNOWN)
        return
    gpus = (ctx.cfg.get("tensor_parallel_size") or 1) * (ctx.cfg.get("pipeline_parallel_size") or 1)
    if ctx.cfg.get("data_parallel_size") and ctx.cfg.get("enable_expert_parallel"):
        gpus *= 1  # DP replicas each hold the full KV of their sequences; weights split by EP: not modelled
    data = m.to_dict()
    data["gpus_configured"] = gpus
    if m.gpus_needed is not None and gpus < m.gpus_needed and not m.gpu_gb_assumed:
        up = [s for s in ctx.tp_sizes if s >= m.gpus_needed]
        yield memory.rule.finding(f"{m.text()}; the config gives {gpus} GPU{'s' if gpus != 1 else ''}",
                                  severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT, data=data,
                                  hint=f"use tensor-parallel-size {up[0] if up else m.gpus_needed}, FP8 weights / KV, "
                                       "or a shorter context")
    elif m.gpus_needed is not None and gpus < m.gpus_needed:
        yield memory.rule.finding(f"{m.text()}; the config gives {gpus} GPU{'s' if gpus != 1 else ''}",
                                  severity=Severity.WARNING, data=data,
                                  hint="set regraft.gpu_memory_gb to your GPU size for a decided answer")
    else:
        yield memory.rule.finding(m.text(), data=data)
