"""RG3xx: what the adapter computes (scale semantics and extras), so that a port or a runtime keeps it."""

from __future__ import annotations

from regraft.checks.context import LoraContext
from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule


@rule("RG301", "scale-semantics", area="lora", severity=Severity.INFO)
def scale(ctx: LoraContext):
    """The effective scale per module: alpha/r, or alpha/sqrt(r) with rsLoRA, after rank_pattern/alpha_pattern.

    Runtimes with one global scale (llama.cpp: alpha/rank from tensor shapes; vLLM: no patterns) compute
    another update unless the scale is folded into B first (`regraft port lora --runtime ...` does it, exactly).
    Bad:  use_rslora with r=64, alpha=64 (scale 8) converted to GGUF, which applies alpha/r = 1
    Good: fold the scale into lora_B
    """
    a = ctx.adapter
    if a is None or not a.lora_modules:
        return
    scales = sorted({round(a.scale(m.module), 6) for m in a.lora_modules})
    kind = "alpha/sqrt(r) (rsLoRA)" if a.use_rslora else "alpha/r"
    extra = []
    if a.rank_pattern:
        extra.append(f"rank_pattern {a.rank_pattern}")
    if a.alpha_pattern:
        extra.append(f"alpha_pattern {a.alpha_pattern}")
    yield scale.rule.finding(f"scale = {kind} with r={a.r}, alpha={a.alpha:g}: effective "
                             f"{', '.join(f'{s:g}' for s in scales)}" + (f"; {'; '.join(extra)}" if extra else ""),
                             data={"scales": scales, "rslora": a.use_rslora})


@rule("RG302", "moe-layout", area="lora", severity=Severity.INFO)
def moe_layout(ctx: LoraContext):
    """How the adapter stores MoE expert LoRA, and what transformers 5 + PEFT 0.21 do with it.

    Per-expert keys (transformers 4) are converted on load, exactly, into fused target_parameters with the
    gate_up rank and alpha doubled. Fused keys (PEFT >= 0.18) do not load on transformers 4 and are rejected by
    llama.cpp's converter; regraft relayouts both ways.
    Bad:  a fused adapter handed to convert_lora_to_gguf.py ("Unprocessed experts")
    Good: `regraft port lora --runtime llama.cpp` (writes the per-expert form, then GGUF)
    """
    a = ctx.adapter
    if a is None or a.layout == "standard":
        return
    if a.layout == "moe-v4-per-expert":
        msg = ("experts stored per expert (transformers 4 layout); PEFT 0.21 on transformers 5 fuses them on load "
               "(exact; gate_up rank and alpha doubled)")
    else:
        msg = ("experts stored fused (transformers 5 / PEFT >= 0.18 target_parameters: A [E*r, in], B [out, E*r], "
               "B flattened rank-major)")
    yield moe_layout.rule.finding(msg, data={"layout": a.layout})


@rule("RG303", "adapter-extras", area="lora", severity=Severity.INFO)
def extras(ctx: LoraContext):
    """Parts of the adapter that are not plain LoRA pairs: DoRA magnitudes, modules_to_save, trainable tokens, bias.

    Many runtimes reject or ignore them (see the RG4xx findings for the chosen runtime).
    Bad:  a DoRA adapter sent to vLLM
    Good: know they are there before choosing a runtime
    """
    a = ctx.adapter
    if a is None:
        return
    parts = []
    if a.use_dora or any(m.magnitude is not None for m in a.modules):
        parts.append("DoRA magnitude vectors")
    full = [m.module for m in a.modules if m.kind == "full_copy"]
    if full:
        parts.append(f"full copies of {', '.join(sorted(set(full)))} (modules_to_save)")
    if any(m.kind == "trainable_tokens" for m in a.modules):
        parts.append("trainable token rows")
    if any(m.bias is not None for m in a.modules):
        parts.append("lora_B biases")
    if a.stray_tensors:
        parts.append(f"{len(a.stray_tensors)} tensors of no known layout (e.g. {a.stray_tensors[0]})")
    if parts:
        yield extras.rule.finding("adapter also holds " + "; ".join(parts))


# --- adapter health: numbers that change the answer ---------------------------------------------------------------


def _nonfinite(ctx: LoraContext):
    a = ctx.adapter
    if a is None or a.weights_file != "adapter_model.safetensors":
        return None
    if "_nonfinite" not in a.__dict__:
        from regraft.inspection.adapter_health import MAX_SCAN_BYTES, nonfinite

        a.__dict__["_nonfinite"] = nonfinite(a.path / a.weights_file, MAX_SCAN_BYTES)
    return a.__dict__["_nonfinite"]


@rule("RG320", "adapter-nan-inf", area="lora", severity=Severity.ERROR, verdict=Verdict.CANNOT)
def nan_inf(ctx: LoraContext):
    """The adapter's weights hold NaN or Inf: every output it touches becomes NaN, on any target.

    Found from the exponent bits of every F32/F16/BF16 value (numpy when installed, else bytes; never torch).
    check scans adapters with up to 4 MiB of weights (under 50 ms, no numpy import); larger ones are left to
    `regraft inspect ADAPTER --health` (opt-in: it reads every weight), which scans any size.
    Bad:  a checkpoint saved after the loss diverged (fp16 overflow), served as is
    Good: an earlier checkpoint, or retrain with bf16 / a lower learning rate
    """
    bad = _nonfinite(ctx)
    if bad:
        first = next(iter(bad))
        yield nan_inf.rule.finding(f"{sum(bad.values())} NaN/Inf values in {len(bad)} adapter tensors (e.g. {first}: "
                                   f"{bad[first]})", hint="use an earlier checkpoint or retrain (bf16, lower lr)",
                                   data={"tensors": bad})


@rule("RG322", "experts-never-touched", area="lora", severity=Severity.WARNING)
def experts_never_touched(ctx: LoraContext):
    """An MLP LoRA on an MoE model that never adapted the routed experts (only shared experts, or nothing).

    On transformers-5 MoE models the routed experts are fused 3-D parameters: target_modules (gate_proj, up_proj,
    down_proj) match only the shared expert; the experts need target_parameters (axolotl PR 3515: 13.5 MB adapter
    on Qwen3.5-35B-A3B with target_modules alone, 3.7 GB with lora_target_parameters; the same in ART and TuFT).
    Bad:  target_modules [gate_proj, up_proj, down_proj] on Qwen3.5-35B-A3B and expecting expert-level tuning
    Good: target_parameters [mlp.experts.gate_up_proj, mlp.experts.down_proj] (PEFT >= 0.18)
    """
    from regraft.inspection.adapter_health import experts_untouched

    if ctx.architecture_only or any(m.status != "ok" for m in ctx.matches):  # RG105 and friends say more
        return
    eu = experts_untouched(ctx.adapter, ctx.target)
    if eu:
        shared = ", ".join(eu["shared"]) or "no MLP module"
        yield experts_never_touched.rule.finding(
            f"{ctx.target.short_name}'s {eu['experts']} routed experts were never adapted: target_modules "
            f"{', '.join(eu['targets'])} reached {shared}; adapter {eu['adapter_bytes'] / 2**20:.1f} MiB vs "
            f"~{eu['expert_lora_bytes'] / 2**30:.1f} GiB with the experts", data=eu,
            hint="retrain with target_parameters [mlp.experts.gate_up_proj, mlp.experts.down_proj] if the experts "
                 "were meant to change")
