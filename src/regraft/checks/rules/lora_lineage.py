"""RG2xx: was the adapter trained on these weights?"""

from __future__ import annotations

from regraft.checks.context import LoraContext
from regraft.checks.finding import Severity, Verdict
from regraft.checks.lineage import TOKENIZER_FAMILY, Lineage, normalise_base, relate, resolve_declared
from regraft.checks.registry import rule


def lineage(ctx: LoraContext) -> Lineage:
    """The lineage decision for this pair, computed once per context: from the weights when `check` measured
    drift, else from the declared base resolved like any MODEL, lineage.json and the names."""
    got = ctx.__dict__.get("_lineage")
    if got is None:
        declared = _declared(ctx)
        base = resolve_declared(declared, ctx.target)
        rep = drift_report(ctx, base)
        if rep is not None:
            got = Lineage(rep.relation, "weights", [f"drift sigma {rep.sigma:.4f} between the local checkpoints"],
                          base=normalise_base(declared))
        else:
            got = relate(declared, ctx.target, base)
        ctx.__dict__["_lineage"] = got
    return got


def drift_report(ctx: LoraContext, base=None):
    """Drift measured on the weights: SOURCE vs TARGET when both are local (ctx.weight_drift), else the adapter's
    declared base when it is a local folder with weights (and the sizes / --drift allow it)."""
    if "_drift" in ctx.__dict__:
        return ctx.__dict__["_drift"]
    rep = ctx.weight_drift
    t = ctx.target
    if rep is None and base is not None and ctx.drift != "never" and base.path is not None and base.tensors \
            and t.path is not None and t.tensors and str(base.path.resolve()) != str(t.path.resolve()):
        from regraft.checks.context import DRIFT_AUTO_BYTES
        from regraft.inspection.safetensors_header import total_bytes

        if ctx.drift == "always" or total_bytes(base.tensors) + total_bytes(t.tensors) <= DRIFT_AUTO_BYTES:
            from regraft.drift import lineage_by_weights

            rep = lineage_by_weights(base, t)
            if rep is not None:
                ctx.__dict__["_drift_from"] = base.name
    ctx.__dict__["_drift"] = rep
    return rep


def _shapes_fit(ctx: LoraContext) -> bool:
    return bool(ctx.matches) and all(m.status == "ok" for m in ctx.matches)


def _declared(ctx: LoraContext) -> str | None:
    if ctx.adapter is not None:
        return ctx.adapter.base_model or (ctx.source.name if ctx.source else None)
    return ctx.source.name if ctx.source else None


def _by(lin: Lineage) -> str:
    return f"by {lin.evidence}: {lin.text}"


@rule("RG200", "lineage-same", area="lora", severity=Severity.INFO)
def same(ctx: LoraContext):
    """The target is the adapter's base under another spelling: a renamed repo, a mirror, a quantised or converted
    re-upload, a local or HF-cache path. Says which evidence decided it.

    Bad:  RG202 "unrelated weights" for an adapter trained on unsloth/Qwen3-4B-Instruct-2507-unsloth-bnb-4bit
          checked against Qwen/Qwen3-4B-Instruct-2507
    Good: same trunk, by catalog/lineage.json (the re-upload is a 4-bit copy of the target's weights)
    """
    if ctx.architecture_only or not _shapes_fit(ctx):
        return
    lin = lineage(ctx)
    if lin.relation == "same" and lin.evidence != "names" or lin.relation == "same" and len(lin.why) > 1:
        yield same.rule.finding(f"trained on {lin.base}: the target's own weights ({_by(lin)})",
                                data={"relation": "same", "evidence": lin.evidence})


@rule("RG201", "lineage-sibling", area="lora", severity=Severity.WARNING, verdict=Verdict.LOADS_DIFFERENT_WEIGHTS)
def sibling(ctx: LoraContext):
    """The target is a sibling of the adapter's base (Base/Instruct/Thinking/2507) or derived from it (Coder,
    Math, R1-Distill): it loads, on other weights.

    No runtime checks this (PEFT, vLLM, llama.cpp all accept it silently). The delta was learned against other
    weights; how much survives depends on the drift between the two checkpoints.
    Bad:  a Qwen3-30B-A3B-Base LoRA served on Qwen3-30B-A3B-Instruct-2507 without a check
    Good: `regraft drift BASE TARGET` and `regraft verify ADAPTER --on TARGET --reference BASE`
    """
    if not _shapes_fit(ctx):
        return
    lin = lineage(ctx)
    if lin.relation in ("sibling", "derived"):
        kind = "a sibling of" if lin.relation == "sibling" else "related by derivation to"
        yield sibling.rule.finding(
            f"trained on {lin.base}, {kind} {ctx.target.name}: same shapes, different weights ({_by(lin)})",
            hint="measure with `regraft drift` and `regraft verify --reference`, or port with `regraft port lora "
                 "--method copy` (drift report attached)", data={"relation": lin.relation, "evidence": lin.evidence})


@rule("RG202", "lineage-unrelated", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def unrelated(ctx: LoraContext):
    """Shapes fit but there is positive evidence that the target is not of the adapter's lineage.

    Positive evidence only: drift above the sibling range (RG205), the declared base's config facts differing from
    the target's, or two different known trunks (catalog / lineage.json). A name regraft cannot place is RG206.
    Equal shapes do not make equal bases (Llama-3.1-8B vs Mistral-7B share every linear shape).
    Bad:  a Llama-3.1-8B LoRA on Mistral-7B-Instruct-v0.3
    Good: distillation (`regraft port lora --method distill`)
    """
    if not _shapes_fit(ctx):
        return
    lin = lineage(ctx)
    if lin.relation == "unrelated":
        yield unrelated.rule.finding(
            f"trained on {lin.base}, which is not {ctx.target.name} nor a sibling of it; equal shapes, unrelated "
            f"weights ({_by(lin)})", hint="copying is unlikely to work: `regraft port lora --method distill`",
            data={"relation": "unrelated", "evidence": lin.evidence})


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
    """Lineage measured on the weights: drift between the local source (or the adapter's declared base, when it is
    a local folder) and target checkpoints (streamed).

    sigma = sum|A-B| / (sum|A| + sum|B|) over all tensors of equal name and shape: <= 1e-4 same weights,
    <= 0.30 siblings, above: unrelated; an adapter is copied only when sigma <= 0.15 (research/lora_transfer.md 6.5).
    `check` measures it when both checkpoints are local and together under 4 GiB (`--drift always` for larger ones).
    Bad:  trusting a name ("...-Instruct") for lineage when both weights are on disk
    Good: `regraft check SRC TGT --adapter A --drift always`, or `regraft drift SRC TGT --plot drift.png`
    """
    if not _shapes_fit(ctx):
        return
    lineage(ctx)  # measures the drift (SOURCE or the declared base vs TARGET) when the weights are local
    rep = drift_report(ctx)
    if rep is not None:
        copy = "copy is advised" if rep.sigma <= 0.15 else "do not copy (sigma > 0.15)"
        src = ctx.__dict__.get("_drift_from") or ctx.source.name
        yield by_weights.rule.finding(f"drift {src} -> {ctx.target.name}: sigma {rep.sigma:.4f} "
                                      f"({rep.verdict}); {copy}", data={"sigma": rep.sigma, "relation": rep.relation})
        return
    if ctx.weights_bytes is None:
        return
    elif ctx.drift != "never" and str(ctx.source.path) != str(ctx.target.path):
        yield by_weights.rule.finding(f"both checkpoints are local ({ctx.weights_bytes / 2**30:.1f} GiB together): "
                                      "lineage was judged by names; `--drift always` measures it on the weights")


@rule("RG206", "lineage-unconfirmed", area="lora", severity=Severity.WARNING)
def unconfirmed(ctx: LoraContext):
    """The declared base cannot be placed relative to the target: lineage unconfirmed (not "unrelated").

    A local path that is not on this machine, a fine-tune's repo id, a name outside the catalog and lineage.json:
    none of these is evidence that the weights differ. The finding says what is missing and how to confirm.
    Bad:  base_model_name_or_path "/home/me/outputs/merged" called "unrelated weights"
    Good: `regraft check BASE_DIR TARGET_DIR --adapter A --drift always` measures it
    """
    if not _shapes_fit(ctx) or not _declared(ctx):
        return
    lin = lineage(ctx)
    if lin.relation == "unknown":
        yield unconfirmed.rule.finding(f"lineage unconfirmed: trained on {lin.base}; {lin.text}",
                                       hint=lin.how_to_confirm, data={"relation": "unknown", "evidence": lin.evidence})
