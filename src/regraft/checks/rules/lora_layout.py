"""RG304-RG307: which producer wrote the adapter, in which layout, and what each runtime version does with it.

Facts: ``catalog/layouts.json`` (layouts, versioned runtime behaviour, sources). Evidence: the adapter's files
(:mod:`regraft.inspection.producer`) and, with a local base model, the numbers (:mod:`regraft.checks.weights_evidence`).
"""

from __future__ import annotations

from regraft.checks.context import LoraContext
from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule

_BAD = ("errors", "drops-silently", "wrong-silently")
_FIX = {  # layout -> the exact conversion `regraft port lora --layout` makes for PEFT and vLLM
    "peft-3d-positional": "peft-3d-linear", "nemo-automodel-3d-swapped": "peft-3d-linear",
    "unsloth-3d-blockwise": "peft-3d-linear", "megatron-3d-per-projection": "peft-3d-linear",
    "mlx-lm": "peft", "peft-3d-linear": "peft-per-expert",
}


def _layout(ctx: LoraContext) -> str | None:
    """The decided layout: the files' answer, or the numbers' answer where the files could not decide."""
    p = ctx.producer
    if p is None:
        return None
    if p.layout == "unknown" and ctx.layout_evidence is not None and ctx.layout_evidence.layout:
        return ctx.layout_evidence.layout
    return p.layout


@rule("RG304", "producer-layout", area="lora", severity=Severity.INFO)
def producer_layout(ctx: LoraContext):
    """Which tool wrote the adapter and how its tensors are laid out, with the evidence (files, names, shapes).

    PEFT, Unsloth, AutoTrain, torchtune, LLaMA-Factory, axolotl and TRL write PEFT files; MLX-LM, Tinker,
    NeMo-Automodel and Megatron/SkyRL write their own names and orientations (catalog/layouts.json).
    Bad:  an MLX-LM adapters.safetensors handed to vLLM (lora_a [in, r] is PEFT's lora_A transposed)
    Good: know the layout first; `regraft port lora --layout FROM:TO` converts the exact cases
    """
    p = ctx.producer
    if p is None:
        return
    yield producer_layout.rule.finding(
        f"producer {p.producer}, layout {p.layout}" + (f" (experts: {p.expert_layout})" if p.expert_layout and
                                                     p.expert_layout != p.layout else "")
        + (f"; evidence: {'; '.join(p.evidence)}" if p.evidence else ""), data=p.to_dict())


@rule("RG305", "layout-undecided", area="lora", severity=Severity.WARNING, verdict=Verdict.UNKNOWN)
def undecided(ctx: LoraContext):
    """The adapter's layout cannot be decided from its files, and no numbers decided it either: never guessed.

    Fused expert LoRA of PEFT 0.18 and >= 0.19 have the same names, and the same shapes where 2*I == H; an
    Unsloth block-wise lora_B has exactly PEFT's interleaved shapes. Either reading loads and computes another
    function.
    Bad:  a gate_up-only fused adapter without peft_version on a model with hidden 2048, moe_intermediate 1024
    Good: peft_version in adapter_config.json, or a local base model (the numbers decide: RG307)
    Not detected yet: an A/B-swapped export carrying a correct-looking peft_version (only NeMo-Automodel's
    automodel_peft_config.json marks it); Unsloth adapters trained after unsloth-zoo#1269 are undecided too.
    """
    p = ctx.producer
    if p is None or p.layout != "unknown" or _layout(ctx) != "unknown":
        return
    ev = ctx.layout_evidence
    why = "; ".join(p.missing) or "no layout fits the tensor names"
    if ev is not None and ev.findings:
        why += "; the numbers did not separate the cases either: " + "; ".join(f.text for f in ev.findings)
    yield undecided.rule.finding(
        f"layout undecided{' between ' + ', '.join(p.candidates) if p.candidates else ''}: {why}",
        hint="give a local base model folder as SOURCE (the weights decide what shapes cannot), or the training "
             "tool and version", data={"candidates": p.candidates, "missing": p.missing})


def _applies(row: dict, ctx: LoraContext) -> bool:
    types = row.get("model_types")
    return not types or ctx.target.model_type in types


@rule("RG306", "layout-runtime", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def layout_runtime(ctx: LoraContext):
    """What the chosen runtime (by version) does with this layout: loads, drops silently, errors, or computes
    another function; with the source thread of each fact.

    Bad:  a PEFT 0.18 fused expert adapter on vLLM: "The size of tensor a (512) must match the size of tensor b
          (2048)" (vllm#52194), or a transposed delta where the widths are equal
    Good: `regraft port lora --layout peft-3d-positional:peft-3d-linear` (exact), then serve
    """
    from regraft.inspection.producer import runtime_behaviour

    layout = _layout(ctx)
    if layout in (None, "unknown"):
        return
    runtime = "peft" if ctx.runtime.startswith("peft") else ctx.runtime
    for row in runtime_behaviour(layout, runtime):
        if not _applies(row, ctx):
            continue
        text = f"{layout} on {runtime} {row['versions']}: {row['outcome']}: {row['detail']} ({row['source']})"
        fix = _FIX.get(layout)
        if layout == "peft-3d-linear":  # the per-expert form is what the runtime's own fix-up path writes
            fix = "peft-per-expert" if runtime == "llama.cpp" else None
        hint = (f"`regraft port lora --runtime {runtime}` writes the per-expert form (exact)" if layout ==
                "peft-3d-linear" else f"`regraft port lora --layout {layout}:{fix}` converts it exactly") if fix else \
            "regraft has no exact conversion for this layout: convert or merge it with the producer's own tool"
        if row.get("current", True) is False:
            yield layout_runtime.rule.finding(text + " [older version]", severity=Severity.INFO, verdict=None)
        elif row["outcome"] not in _BAD:
            yield layout_runtime.rule.finding(text, severity=Severity.INFO, verdict=None)
        else:
            yield layout_runtime.rule.finding(text, hint=hint, data={"layout": layout, "outcome": row["outcome"]})


@rule("RG307", "layout-evidence", area="lora", severity=Severity.INFO)
def layout_evidence(ctx: LoraContext):
    """Numbers where shapes are blind, measured on the adapter and the local base weights: swapped A/B,
    transposed experts, block vs interleaved lora_B, routed vs shared experts covered.

    Each finding gives the measured statistic for every candidate and the margin; `unknown` when the margin is
    too small to separate them.
    Bad:  an A/B-swapped expert export where 2*moe_intermediate == hidden: every shape check passes
    Good: a finding that names the orientation the numbers support, with the numbers
    Not detected yet: on bench/layout_evidence.py (no wrong call in 96) the orientation is never decided and the
    lora_B order only when its columns keep their expert grouping; routed vs shared is judged by names (RG322).
    """
    ev = ctx.layout_evidence
    if ev is None:
        return
    for f in ev.findings:
        if f.decided and f.decided_bad:
            yield layout_evidence.rule.finding(f.text, severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT,
                                               hint=f.hint, data=f.data)
        elif f.decided or ctx.producer.layout != "unknown":
            # an abstention does not undo what the files already decided (peft_version, a producer's own names)
            yield layout_evidence.rule.finding(f.text, data=f.data)
        else:
            yield layout_evidence.rule.finding(f.text, severity=Severity.WARNING, verdict=Verdict.UNKNOWN,
                                               hint=f.hint, data=f.data)
