"""RG113-RG114: is the architecture regraft derived from config.json the one the weights (or transformers) have?"""

from __future__ import annotations

from operator import itemgetter

from regraft.checks.context import LoraContext
from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule
from regraft.inspection.safetensors_header import TensorTable


def header_disagreements(spec) -> tuple[list[str], list[str]]:
    """(missing, wrong-shape) tensor names: what config.json implies vs what the safetensors headers hold.

    Every tensor is compared, but without an object per tensor: a layer's modules are derived once per kind of
    layer (their shapes depend on the config only), and the experts of one module are checked together (36k
    tensors on a 235B checkpoint); only a group with a missing or differently shaped expert is walked one by one.
    """
    arch, tensors = spec.arch, spec.tensors
    if arch is None or not tensors or arch.num_layers is None:
        return [], []
    shapes = tensors.shapes if isinstance(tensors, TensorTable) else {n: list(t.shape) for n, t in tensors.items()}
    get = shapes.get
    missing: list[str] = []
    wrong: list[str] = []
    seen: set[str] = set()

    def compare(names: list[str], shape: tuple) -> None:
        shape = list(shape)  # the headers' shapes are lists
        if len(names) > 1:
            try:
                if itemgetter(*names)(shapes).count(shape) == len(names):  # all present (else KeyError), all equal
                    return
            except KeyError:
                pass
        got = list(map(get, names))
        for name, have in zip(names, got):
            if have is None:
                missing.append(name)
            elif list(have) != shape:
                wrong.append(f"{name} {list(have)} (config implies {shape})")

    def expect(name: str, shape: tuple) -> None:
        if name not in seen:
            seen.add(name)
            compare([name], shape)

    for m in arch.globals("disk"):
        if not m.tied_to and m.shape:
            for name in m.param_names():
                expect(name, tuple(m.shape) if not name.endswith(".bias") else (m.shape[0],))
    experts = [str(e) for e in range(arch.num_experts or 0)]
    # (layer type, sparse) -> [(layer-relative names: one, or one per expert; shape)]
    kinds: dict[tuple, list[tuple[list[str], tuple]]] = {}
    for i in range(arch.num_layers):
        prefix = arch.data["layer_prefix"].format(i=i)
        key = (arch.layer_type(i), arch.is_sparse(i))
        rel = kinds.get(key)
        if rel is None:
            full = _layer_expected(arch, i)
            if all(name.startswith(prefix) for name, _ in full):
                rel = kinds[key] = [(_expand(name[len(prefix):], experts), shape) for name, shape in full]
            else:  # names not under the layer prefix: use them as they are, uncached
                rel, prefix = [(_expand(name, experts), shape) for name, shape in full], ""
        for names, shape in rel:
            if len(names) == 1 and "{e}" not in names[0]:
                expect(prefix + names[0], shape)
            else:
                compare(list(map(prefix.__add__, names)), shape)  # all experts of one module, unique per layer
    return missing, wrong


def _expand(name: str, experts: list[str]) -> list[str]:
    return [name.replace("{e}", e) for e in experts] if "{e}" in name else [name]


def _layer_expected(arch, i: int) -> list[tuple[str, tuple]]:
    out = []
    for m in arch.layer_modules(i, "disk"):
        if m.shape is not None:
            for name in m.param_names():
                out.append((name, tuple(m.shape) if not name.endswith(".bias") else (m.shape[0],)))
    return out


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
