"""RG115: an adapter named for the text-only CausalLM class on a ConditionalGeneration wrapper (or back)."""

from __future__ import annotations

from regraft.checks.context import LoraContext
from regraft.checks.finding import Severity, Verdict
from regraft.checks.namespaces import data, namespaces
from regraft.checks.registry import rule


def _where(ns: str) -> str:
    return namespaces()[ns]["language_model"] + "layers.*"


@rule("RG115", "wrapper-namespace-mismatch", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def wrapper_namespace(ctx: LoraContext):
    """The adapter's modules are named for another class of the same model (text-only CausalLM `model.layers.*`
    vs ConditionalGeneration `model.language_model.layers.*`): it matches zero modules of the target as named.

    PEFT injects LoRA layers by suffix but loads none of the tensors ("Found missing adapter keys"); vLLM loads the
    wrapper class and applies 0 modules without a warning (vllm#34186, #48019). An exact rename of the keys fixes
    it: the weights are the same, only the path to the language model differs (catalog/namespaces.json).
    Bad:  a LoRA trained with AutoModelForCausalLM on Qwen3.6-27B (model.layers.*) served with vLLM on Qwen3.6-27B
    Good: the keys renamed to model.language_model.layers.* (or the adapter trained on the wrapper class)
    """
    m = ctx.namespace_mismatch
    if m is None:
        return
    about = data()["namespaces"]
    yield wrapper_namespace.rule.finding(
        f"the adapter's {m.modules} modules are named for {about[m.from_ns]['about'].split(' (')[0]} "
        f"({_where(m.from_ns)}); {ctx.target.short_name} names them {_where(m.to_ns)} ({m.to_ns}): "
        f"0 of {m.modules} match as named, {m.matched_renamed} after an exact rename "
        f"(e.g. {m.example[0]} -> {m.example[1]}); PEFT loads none of the tensors and vLLM applies 0 modules, "
        "without an error",
        hint=f"rename the keys {m.from_ns} -> {m.to_ns} (regraft.checks.namespaces.rename_keys, exact), or load the "
             "adapter on the class it was trained on",
        data={"from_namespace": m.from_ns, "to_namespace": m.to_ns, "modules": m.modules,
              "matched": m.matched, "matched_renamed": m.matched_renamed})
