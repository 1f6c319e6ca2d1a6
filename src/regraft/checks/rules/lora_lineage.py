"""RG2xx: was the adapter trained on these weights?"""

from __future__ import annotations

from regraft.checks.context import LoraContext
from regraft.checks.finding import Severity, Verdict
from regraft.checks.lineage import TOKENIZER_FAMILY, normalise_base, relation
from regraft.checks.registry import rule


def _relation(ctx: LoraContext) -> tuple[str, str]:
    """(relation, evidence): from the weights when `check` measured drift, else from the names."""
    rep = ctx.weight_drift
    if rep is not None:
        return rep.relation, f"by weights: drift sigma {rep.sigma:.4f}"
    return relation(_declared(ctx), ctx.target.name, ctx.target.path), "by names"


def _shapes_fit(ctx: LoraContext) -> bool:
    return bool(ctx.matches) and all(m.status == "ok" for m in ctx.matches)


def _declared(ctx: LoraContext) -> str | None:
    if ctx.adapter is not None:
        return ctx.adapter.base_model or (ctx.source.name if ctx.source else None)
    return ctx.source.name if ctx.source else None


@rule("RG201", "lineage-sibling", area="lora", severity=Severity.WARNING, verdict=Verdict.LOADS_DIFFERENT_WEIGHTS)
def sibling(ctx: LoraContext):
    """The target is a sibling of the adapter's base (Base/Instruct/Thinking/2507): it loads, on other weights.

    No runtime checks this (PEFT, vLLM, llama.cpp all accept it silently). The delta was learned against other
    weights; how much survives depends on the drift between the two checkpoints.
    Bad:  a Qwen3-30B-A3B-Base LoRA served on Qwen3-30B-A3B-Instruct-2507 without a check
    Good: `regraft drift BASE TARGET` and `regraft verify ADAPTER --on TARGET --reference BASE`
    """
    rel, evidence = _relation(ctx) if _shapes_fit(ctx) else ("", "")
    if rel == "sibling":
        yield sibling.rule.finding(
            f"trained on {normalise_base(_declared(ctx))}, a sibling of {ctx.target.name}: same shapes, "
            f"different weights ({evidence})", hint="measure with `regraft drift` and `regraft verify --reference`, "
            "or port with `regraft port lora --method copy` (drift report attached)")


@rule("RG202", "lineage-unrelated", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def unrelated(ctx: LoraContext):
    """Shapes fit but the target is not of the adapter's lineage: the delta is meaningless on it.

    Equal shapes do not make equal bases (LLaMA LoRA on OpenLLaMA, Qwen2.5-7B vs Qwen2-7B): the weights were
    trained independently and the adapter's directions do not line up with the target's.
    Bad:  a Qwen2.5-7B LoRA on another 7B model with the same config
    Good: distillation (`regraft port lora --method distill`)
    """
    rel, evidence = _relation(ctx) if _shapes_fit(ctx) else ("", "")
    if rel == "unrelated":
        yield unrelated.rule.finding(
            f"trained on {normalise_base(_declared(ctx))}, which is not {ctx.target.name} nor a sibling of it; "
            f"equal shapes, unrelated weights ({evidence})", hint="copying is unlikely to work: `regraft port lora --method distill`")


@rule("RG203", "lineage-unknown", area="lora", severity=Severity.INFO, verdict=None)
def unknown(ctx: LoraContext):
    """The adapter does not say which model it was trained on (base_model_name_or_path is empty).

    Bad:  base_model_name_or_path: null (common in benchmark configs)
    Good: set it; regraft then checks lineage
    """
    if ctx.adapter is not None and not ctx.adapter.base_model:
        yield unknown.rule.finding("adapter_config.json has no base_model_name_or_path: lineage cannot be checked"
                                   + (f"; assuming SOURCE {ctx.source.name}" if ctx.source else ""),
                                   hint="set base_model_name_or_path in adapter_config.json")


@rule("RG204", "tokenizer-family", area="lora", severity=Severity.ERROR, verdict=Verdict.CANNOT)
def tokenizer_family(ctx: LoraContext):
    """Source and target use different vocabularies, so no vocabulary-bound tensor or logit can carry over.

    Qwen2/2.5/3 share one vocabulary; Qwen3.5, Llama 3 and Mistral each have their own.
    Bad:  a Qwen3 adapter moved to Llama-3.1-8B by weights or by logit distillation
    Good: sequence-level distillation (text, not logits), with the target's own chat template
    """
    src, tgt = ctx.source, ctx.target
    if not src or not src.model_type or not tgt.model_type:
        return
    fs, ft = TOKENIZER_FAMILY.get(src.model_type), TOKENIZER_FAMILY.get(tgt.model_type)
    if fs and ft and fs != ft:
        yield tokenizer_family.rule.finding(
            f"{src.name} uses the {fs} tokenizer, {tgt.name} the {ft} one: token ids differ",
            hint="only sequence-level distillation (generated text) can move the behaviour")


@rule("RG205", "lineage-by-weights", area="lora", severity=Severity.INFO)
def by_weights(ctx: LoraContext):
    """Lineage measured on the weights: drift between the local source and target checkpoints (streamed).

    sigma = sum|A-B| / (sum|A| + sum|B|) over all tensors of equal name and shape: <= 1e-4 same weights,
    <= 0.30 siblings, above: unrelated; an adapter is copied only when sigma <= 0.15 (research/lora_transfer.md 6.5).
    `check` measures it when both checkpoints are local and together under 4 GiB (`--drift always` for larger ones).
    Bad:  trusting a name ("...-Instruct") for lineage when both weights are on disk
    Good: `regraft check SRC TGT --adapter A --drift always`, or `regraft drift SRC TGT --plot drift.png`
    """
    if not _shapes_fit(ctx) or ctx.weights_bytes is None:
        return
    rep = ctx.weight_drift
    if rep is not None:
        copy = "copy is advised" if rep.sigma <= 0.15 else "do not copy (sigma > 0.15)"
        yield by_weights.rule.finding(f"drift {ctx.source.name} -> {ctx.target.name}: sigma {rep.sigma:.4f} "
                                      f"({rep.verdict}); {copy}", data={"sigma": rep.sigma, "relation": rep.relation})
    elif ctx.drift != "never" and str(ctx.source.path) != str(ctx.target.path):
        yield by_weights.rule.finding(f"both checkpoints are local ({ctx.weights_bytes / 2**30:.1f} GiB together): "
                                      "lineage was judged by names; `--drift always` measures it on the weights")
