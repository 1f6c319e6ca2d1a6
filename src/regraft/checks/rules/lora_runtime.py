"""RG4xx: what the chosen runtime (peft, vllm, sglang, llama.cpp, ollama) will do with this adapter.

Facts come from ``catalog/runtimes/<runtime>.json`` (versioned, with sources); each rule names the exact flag or
the exact fix-up (`regraft port lora --runtime R`), and whether that fix-up is exact or lossy.
"""

from __future__ import annotations

from regraft.checks.context import LoraContext
from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule


def _max_rank(ctx: LoraContext) -> int:
    a = ctx.adapter
    return max((m.rank or 0) for m in a.lora_modules if m.kind != "fused_experts") if a and a.lora_modules else 0


@rule("RG401", "runtime-rank", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def rank(ctx: LoraContext):
    """The adapter's rank is not one the runtime accepts (vLLM: 1, 8, 16, 32, 64, 128, 256, 320, 512).

    Bad:  r=24 on vLLM ("LoRA rank 24 is greater than max_lora_rank 16", and 24 is not an allowed value)
    Good: zero-pad the rank to the next allowed value (exact): `regraft port lora --runtime vllm`
    """
    allowed = ctx.runtime_data.get("allowed_ranks")
    r = _max_rank(ctx)
    if not allowed or not r or ctx.adapter is None:
        return
    ranks = sorted({m.rank for m in ctx.adapter.lora_modules if m.rank and m.kind != "fused_experts"})
    bad = [x for x in ranks if x not in allowed]
    if bad:
        nxt = next((x for x in allowed if x >= max(bad)), None)
        if nxt is None:
            yield rank.rule.finding(f"rank {max(bad)} exceeds the largest rank {ctx.runtime} accepts ({allowed[-1]})",
                                    verdict=Verdict.CANNOT, hint="merge the adapter into the weights instead")
        else:
            yield rank.rule.finding(f"ranks {bad} are not among {ctx.runtime}'s allowed ranks {allowed}",
                                    hint=f"pad with zeros to r={nxt} (exact): `regraft port lora --runtime "
                                         f"{ctx.runtime}`, then --max-lora-rank {nxt}")


def _unsupported(ctx: LoraContext, key: str) -> bool:
    return ctx.adapter is not None and ctx.runtime_data.get(key) is False


@rule("RG402", "runtime-dora", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def dora(ctx: LoraContext):
    """The runtime does not support DoRA (vLLM: "vLLM does not yet support DoRA."; llama.cpp: unexpected name).

    Bad:  use_dora: true on vLLM or llama.cpp
    Good: merge DoRA into the weights, or drop the magnitudes (lossy; `regraft port lora` reports how much)
    """
    a = ctx.adapter
    if _unsupported(ctx, "dora") and (a.use_dora or any(m.magnitude is not None for m in a.modules)):
        yield dora.rule.finding(f"{ctx.runtime} rejects DoRA: {ctx.runtime_data.get('dora_error', 'unsupported')}",
                                hint="merge the adapter, or drop the magnitude vectors (lossy, measured by port)")


@rule("RG403", "runtime-modules-to-save", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def modules_to_save(ctx: LoraContext):
    """The runtime rejects full module copies (modules_to_save, e.g. lm_head/embed_tokens) or trainable tokens.

    Bad:  modules_to_save ["lm_head"] on vLLM ("vLLM only supports modules_to_save being None.")
    Good: drop them (lossy: the port reports the norm of what is dropped) or merge the adapter
    """
    a = ctx.adapter
    if a is None:
        return
    full = sorted({m.module for m in a.modules if m.kind == "full_copy"})
    if full and _unsupported(ctx, "modules_to_save"):
        yield modules_to_save.rule.finding(f"{ctx.runtime} rejects full copies of {', '.join(full)}: "
                                           f"{ctx.runtime_data.get('modules_to_save_error', 'unsupported')}",
                                           hint="`regraft port lora --runtime ...` drops them (lossy, reported)")
    if any(m.kind == "trainable_tokens" for m in a.modules) and _unsupported(ctx, "trainable_tokens"):
        yield modules_to_save.rule.finding(f"{ctx.runtime} does not load trainable token rows "
                                           "(token_adapter.trainable_tokens_delta)",
                                           hint="merge the adapter, or drop them (lossy)")
    if any(m.bias is not None for m in a.modules) and ctx.runtime_data.get("lora_bias") is not True:
        how = ctx.runtime_data.get("lora_bias")
        yield modules_to_save.rule.finding(
            f"adapter has lora_B biases; {ctx.runtime}: {how if isinstance(how, str) else 'not supported'}",
            severity=Severity.WARNING if isinstance(how, str) else None,
            verdict=None if isinstance(how, str) else Verdict.NEEDS_RELAYOUT)


@rule("RG404", "runtime-moe", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def moe(ctx: LoraContext):
    """The runtime's support for expert LoRA in this layout (per-expert v4 vs fused v5).

    Bad:  a PEFT 0.21 fused expert adapter given to llama.cpp's converter ("Unprocessed experts")
    Good: `regraft port lora --runtime llama.cpp` writes the per-expert form, then GGUF (exact relayout)
    """
    a = ctx.adapter
    if a is None or a.layout == "standard" or ctx.runtime == "peft":
        return
    support = ctx.runtime_data.get("moe_expert_lora", {})
    key = "fused_v5" if a.layout == "moe-v5-fused" else "per_expert_v4"
    text = support.get(key, "unknown")
    if "not supported" in text or "rejected" in text:
        other = "per_expert_v4" if key == "fused_v5" else "fused_v5"
        other_text = support.get(other, "")
        if "not supported" in other_text or "rejected" in other_text:
            yield moe.rule.finding(f"{ctx.runtime} cannot apply expert LoRA: {text}", verdict=Verdict.CANNOT,
                                   hint="merge the adapter into the weights, or use vLLM/PEFT")
        else:
            yield moe.rule.finding(f"{ctx.runtime}: {text}; the other layout is accepted ({other_text})",
                                   hint=f"`regraft port lora --runtime {ctx.runtime}` relayouts the experts (exact)")
    elif "since" in support and ctx.runtime == "vllm":
        yield moe.rule.finding(f"expert LoRA needs vLLM >= {support['since']}; {text}", severity=Severity.INFO,
                               verdict=None)


@rule("RG405", "runtime-scale", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def runtime_scale(ctx: LoraContext):
    """The runtime computes another scale than PEFT: it ignores rsLoRA or rank/alpha patterns, or has one alpha.

    llama.cpp writes one `adapter.lora.alpha` and applies alpha/rank from tensor shapes; vLLM does not read
    rank_pattern/alpha_pattern and ignores rsLoRA on MoE experts (vllm#55545).
    Bad:  use_rslora r=64 alpha=64 (scale 8) served by llama.cpp at scale 1
    Good: fold each module's scale into lora_B (exact): `regraft port lora --runtime llama.cpp`
    """
    a, rd = ctx.adapter, ctx.runtime_data
    if a is None or not a.lora_modules:
        return
    problems = []
    if a.use_rslora and rd.get("rslora") is False:
        problems.append("rsLoRA (alpha/sqrt(r)) is not applied")
    if a.use_rslora and rd.get("rslora_moe_experts") is False and a.layout != "standard":
        problems.append("rsLoRA is ignored on expert LoRA (vllm#55545)")
    if (a.rank_pattern or a.alpha_pattern) and rd.get("rank_alpha_patterns") is False:
        scales = {round(a.scale(m.module), 6) for m in a.lora_modules}
        if len(scales) > 1 or a.alpha_pattern:
            problems.append("rank_pattern/alpha_pattern are not read (one global scale)")
    if problems:
        yield runtime_scale.rule.finding(f"{ctx.runtime}: " + "; ".join(problems),
                                         hint=f"fold the scales into lora_B (exact): `regraft port lora --runtime {ctx.runtime}`")


@rule("RG406", "runtime-architecture", area="lora", severity=Severity.ERROR, verdict=Verdict.CANNOT)
def architecture(ctx: LoraContext):
    """The runtime does not support LoRA on this architecture at all.

    Bad:  a Qwen3 safetensors ADAPTER in an Ollama Modelfile (safetensors adapters: Llama, Mistral, Gemma only)
    Good: convert to GGUF first, or pick a runtime that supports the architecture
    """
    archs = ctx.runtime_data.get("architectures")
    mt = ctx.target.model_type
    if isinstance(archs, list) and mt and mt not in archs:
        yield architecture.rule.finding(f"{ctx.runtime} has no LoRA support recorded for model_type {mt!r} "
                                        f"(supported: {', '.join(archs)})", hint="use PEFT (merge) or vLLM")
    st = ctx.runtime_data.get("safetensors_adapter_architectures")
    if st and mt and mt not in st:
        yield architecture.rule.finding(f"{ctx.runtime} takes safetensors adapters only for {', '.join(st)}; "
                                        f"{mt} adapters must be converted to GGUF first", severity=Severity.WARNING,
                                        verdict=Verdict.NEEDS_RELAYOUT,
                                        hint="`regraft port lora --runtime llama.cpp --out lora.gguf`")
    for caveat in ctx.runtime_data.get("caveats", []):
        yield architecture.rule.finding(caveat, severity=Severity.INFO, verdict=None)


@rule("RG407", "runtime-flags", area="lora", severity=Severity.INFO)
def flags(ctx: LoraContext):
    """The command line that serves this adapter on the target with the chosen runtime.

    Bad:  vllm serve ... --enable-lora (default --max-lora-rank 16) with an r=64 adapter
    Good: the printed flags
    """
    tmpl = ctx.runtime_data.get("flags")
    if not tmpl or ctx.adapter is None:
        return
    r = _max_rank(ctx) or ctx.adapter.r
    allowed = ctx.runtime_data.get("allowed_ranks")
    if allowed:
        r = next((x for x in allowed if x >= r), r)
    text = tmpl.format(model=ctx.target.name, rank=r, name="adapter", adapter=str(ctx.adapter.path))
    from regraft.verify.recipes import verify_command

    verify = verify_command(ctx.runtime, ctx.target.name, str(ctx.adapter.path))
    yield flags.rule.finding(f"{ctx.runtime}: {text}" + (f"\nthen prove it is applied: {verify}" if verify else ""),
                             data={"command": text, **({"verify": verify} if verify else {})})
