"""RG61x: context length, YaRN and the rope field names each library version expects."""

from __future__ import annotations

from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule


def _fmt(n) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


@rule("RG610", "context-beyond-target", area="config", severity=Severity.ERROR, verdict=Verdict.CANNOT)
def beyond(ctx):
    """The requested context is longer than the target supports even with YaRN.

    Qwen3 (2504) is trained at 32,768 and reaches 131,072 with YaRN factor 4 (0.6B/1.7B: 32,768 only); the 2507
    models are 262,144 native (1M only through the model card's separate procedure). Past that the model was never
    evaluated, and vLLM refuses a max_model_len above the position limit unless forced.
    Bad:  max-model-len 262144 (written for Qwen3-235B-A22B-Instruct-2507) on Qwen3-32B
    Good: max-model-len 131072 with YaRN factor 4 on Qwen3-32B
    """
    req = ctx.requested_context
    top = ctx.context_limit
    if req is None or top is None or req <= top:
        return
    how = "native" if ctx.tf.extended_context in (None, ctx.tf.native_context) else (
        f"with YaRN factor {ctx.tf.yarn_factor:g} (native {_fmt(ctx.tf.native_context)})")
    note = f"; {ctx.tf.context_note}" if ctx.tf.context_note else ""
    yield beyond.rule.finding(f"{ctx.cfg.where('max_model_len')} = {_fmt(req)} but {ctx.target.short_name} supports "
                              f"at most {_fmt(top)} {how}{note}",
                              hint=f"lower it to {_fmt(top)} (regraft port config does)",
                              data={"requested": req, "max": top})


@rule("RG611", "context-needs-yarn", area="config", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def needs_yarn(ctx):
    """The requested context is past the target's native length and no (or too small a) YaRN factor is set.

    Without rope scaling, positions past the trained length are extrapolated and quality collapses; YaRN must cover
    factor x original >= requested length, with original = the target's native length.
    Bad:  vllm serve Qwen/Qwen3-8B --max-model-len 131072            (no YaRN)
    Good: ... --hf-overrides '{"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}'
    """
    req, native = ctx.requested_context, ctx.tf.native_context
    top = ctx.context_limit
    if req is None or native is None or req <= native or (top is not None and req > top):
        return
    if ctx.tf.extended_context in (None, native) or req <= ctx.position_limit:
        return  # RG610 / RG614 cover it
    y = ctx.cfg.yarn
    need = ctx.yarn_factor_for(req)
    if y is None:
        yield needs_yarn.rule.finding(
            f"{ctx.cfg.where('max_model_len')} = {_fmt(req)} is past {ctx.target.short_name}'s native {_fmt(native)} "
            "and no YaRN rope scaling is set", hint=f"add YaRN factor {need:g}, original_max_position_embeddings "
            f"{native} (regraft port config does)", data={"factor": need, "original": native})
        return
    factor = float(y.get("factor") or 1.0)
    orig = y.get("original_max_position_embeddings") or native
    if factor * orig < req:
        yield needs_yarn.rule.finding(
            f"YaRN factor {factor:g} x original {_fmt(orig)} = {_fmt(int(factor * orig))} < requested {_fmt(req)}",
            hint=f"use factor {need:g} with original {native}", data={"factor": need, "original": native})


@rule("RG612", "yarn-mismatch", area="config", severity=Severity.WARNING, verdict=Verdict.NEEDS_PORT)
def yarn_mismatch(ctx):
    """YaRN is set but not needed on the target, larger than needed, or anchored at the wrong original length.

    Runtimes implement static YaRN: the factor applies to every request and degrades short texts (Qwen docs), so
    it should be off when the requested context fits natively and as small as the length needs. Its
    original_max_position_embeddings must be the target's native length (32,768 for Qwen3, 262,144 for 2507).
    Bad:  a Qwen3-32B config with YaRN factor 4 moved to Qwen3-235B-A22B-Instruct-2507 (262,144 native)
    Good: no rope scaling on the 2507 model; factor 2.0 for 65,536 on Qwen3-32B
    """
    y = ctx.cfg.yarn
    rs = ctx.cfg.get("rope_scaling")
    if rs is not None and y is None and (rs.get("rope_type") or rs.get("type")) not in (None, "default"):
        yield yarn_mismatch.rule.finding(f"rope scaling type '{rs.get('rope_type') or rs.get('type')}' is not what "
                                         f"{ctx.target.short_name} is documented with (YaRN)",
                                         hint="use rope_type yarn, or remove it")
        return
    if y is None:
        return
    native = ctx.tf.native_context
    length = ctx.effective_context
    factor = float(y.get("factor") or 1.0)
    orig = y.get("original_max_position_embeddings")
    if native is None:
        return
    if orig is not None and orig != native:
        yield yarn_mismatch.rule.finding(f"YaRN original_max_position_embeddings {_fmt(orig)} but "
                                         f"{ctx.target.short_name}'s native length is {_fmt(native)}",
                                         hint=f"set it to {native}", severity=Severity.ERROR)
    if length is not None and length <= native:
        yield yarn_mismatch.rule.finding(f"YaRN factor {factor:g} set but the context {_fmt(length)} fits "
                                         f"{ctx.target.short_name}'s native {_fmt(native)}: static YaRN only costs "
                                         "quality on short texts here", hint="remove the rope scaling")
        return
    need = ctx.yarn_factor_for(length) if length else None
    if need is not None and factor > need and (ctx.tf.yarn_factor is None or need <= ctx.tf.yarn_factor):
        yield yarn_mismatch.rule.finding(f"YaRN factor {factor:g} is more than {_fmt(length)} tokens need "
                                         f"({need:g} x {_fmt(native)})", hint=f"use factor {need:g}",
                                         severity=Severity.INFO)


@rule("RG613", "rope-field-name", area="config", severity=Severity.WARNING, verdict=Verdict.NEEDS_RELAYOUT)
def rope_field(ctx):
    """Rope scaling is written under a name this runtime version no longer reads.

    vLLM removed ``--rope-scaling`` in 0.11.1 (vllm PR#28006; recipes PR#856): use ``--hf-overrides`` with
    ``rope_parameters``. transformers 5 renamed ``rope_scaling`` to ``rope_parameters`` (with ``rope_theta``
    inside; the old name is deprecated). The legacy key ``type`` must be ``rope_type`` (vllm#10293).
    Bad:  --rope-scaling '{"type": "yarn", "factor": 4.0, ...}'
    Good: --hf-overrides '{"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}'
    """
    rs = ctx.cfg.get("rope_scaling")
    field = ctx.cfg.rope_field
    if rs is None or field is None:
        return
    if field == "--rope-scaling" and ctx.runtime == "vllm":
        yield rope_field.rule.finding(f"'{ctx.cfg.where('rope_scaling')}' was removed in vLLM 0.11.1 (PR#28006): "
                                      "the server refuses to start", hint="use hf-overrides {\"rope_parameters\": "
                                      "{...}} (regraft port config --runtime vllm does)")
    elif field in ("rope_scaling", "hf_overrides.rope_scaling") and ctx.runtime in ("transformers", "vllm"):
        yield rope_field.rule.finding(f"'{ctx.cfg.where('rope_scaling')}': transformers 5 reads rope_parameters "
                                      "(rope_scaling is deprecated)", severity=Severity.INFO, verdict=None,
                                      hint="write rope_parameters for transformers >= 5")
    if isinstance(rs, dict) and "type" in rs and "rope_type" not in rs:
        yield rope_field.rule.finding(f"'{ctx.cfg.where('rope_scaling')}' uses the legacy key 'type'; vLLM and "
                                      "transformers read 'rope_type'", hint="rename 'type' to 'rope_type'")


@rule("RG614", "context-past-trained", area="config", severity=Severity.WARNING)
def past_trained(ctx):
    """The context the runtime will use is past the trained length but within config.json's position limit.

    Qwen3 (2504) configs say max_position_embeddings 40,960, which is 32,768 output + 8,192 prompt reserve (Qwen
    docs), not the trained length; vLLM uses it when --max-model-len is not given. Prompts past 32,768 are then
    served without YaRN.
    Bad:  vllm serve Qwen/Qwen3-32B   (max_model_len 40,960, no YaRN)
    Good: --max-model-len 32768, or YaRN factor 2 for longer prompts
    """
    native = ctx.tf.native_context
    eff = ctx.effective_context
    if ctx.cfg.format == "generation_config":
        return  # a generation_config.json sets no serving context
    if native is None or eff is None or eff <= native or ctx.cfg.yarn is not None or eff > ctx.position_limit:
        return
    req = ctx.requested_context
    src = (f"{ctx.cfg.where('max_model_len')} = {_fmt(req)}" if req is not None
           else f"no context set: the runtime uses max_position_embeddings {_fmt(eff)}")
    yield past_trained.rule.finding(f"{src}, past {ctx.target.short_name}'s trained {_fmt(native)} without YaRN"
                                    + (f" ({ctx.tf.context_note})" if ctx.tf.context_note else ""),
                                    hint=f"set max-model-len {native}, or add YaRN if longer prompts are needed")
