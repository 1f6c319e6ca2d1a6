"""RG113-RG114: is the architecture regraft derived from config.json the one the weights (or transformers) have?"""

from __future__ import annotations

from regraft.checks.context import LoraContext
from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule


def header_disagreements(spec) -> tuple[list[str], list[str]]:
    """(missing, wrong-shape) tensor names: what config.json implies vs what the safetensors headers hold."""
    arch, tensors = spec.arch, spec.tensors
    if arch is None or not tensors or arch.num_layers is None:
        return [], []
    missing, wrong = [], []
    expected: dict[str, tuple] = {}
    for m in arch.globals("disk"):
        if not m.tied_to and m.shape:
            for name in m.param_names():
                expected[name] = m.shape if not name.endswith(".bias") else (m.shape[0],)
    n_exp = arch.num_experts or 0
    for i in range(arch.num_layers):
        for m in arch.layer_modules(i, "disk"):
            if m.shape is None:
                continue
            for name in m.param_names():
                shape = m.shape if not name.endswith(".bias") else (m.shape[0],)
                if "{e}" in name:
                    for e in range(n_exp):
                        expected[name.replace("{e}", str(e))] = shape
                else:
                    expected[name] = shape
    for name, shape in expected.items():
        t = tensors.get(name)
        if t is None:
            missing.append(name)
        elif tuple(t.shape) != tuple(shape):
            wrong.append(f"{name} {list(t.shape)} (config implies {list(shape)})")
    return missing, wrong


@rule("RG113", "config-weights-disagree", area="lora", severity=Severity.ERROR, verdict=Verdict.UNKNOWN)
def config_weights(ctx: LoraContext):
    """The target's safetensors headers disagree with its config.json: the derived shapes cannot be trusted.

    Happens with hand-edited configs, partial downloads, quantised or renamed checkpoints, and architectures whose
    checkpoint names transformers converts on load.
    Bad:  config.json says hidden_size 4096, the weights are 5120 wide
    Good: the config that came with the weights
    """
    missing, wrong = header_disagreements(ctx.target)
    if wrong:
        yield config_weights.rule.finding(f"{len(wrong)} tensors have other shapes than config.json implies, e.g. "
                                          f"{wrong[0]}", hint="use the config.json that belongs to these weights")
    if missing:
        yield config_weights.rule.finding(
            f"{len(missing)} tensors that config.json implies are not in the safetensors headers, e.g. {missing[0]}",
            severity=Severity.WARNING if not wrong and len(missing) < 3 else None,
            hint="the download may be incomplete, or the checkpoint uses other names (quantised / converted)")


@rule("RG114", "architecture-inferred", area="lora", severity=Severity.INFO)
def inferred(ctx: LoraContext):
    """The target's architecture has no regraft architecture file; it was inferred from transformers (meta device).

    The module names and shapes are transformers' own; the checkpoint namespace is assumed to be the same.
    Bad:  silently trusting an inferred layout for an MoE whose experts transformers fuses on load
    Good: add catalog/architectures/<model_type>.json (the sweep test then checks it)
    """
    if ctx.target.arch is not None and ctx.target.arch.inferred:
        yield inferred.rule.finding(f"model_type {ctx.target.model_type!r}: {ctx.target.arch.data['source']}")
