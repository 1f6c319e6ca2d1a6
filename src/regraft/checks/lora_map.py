"""Match every adapter module against a target architecture: the facts the LoRA rules read (pure).

For each adapter module we find the target module by name (checkpoint namespace first, then the transformers 5
namespace) and compute the shapes the target needs for each tensor:

    lora_A [r, in]   lora_B [out, r]   lora_B.bias [out]   magnitude [out]
    embedding: lora_embedding_A [r, vocab]   lora_embedding_B [hidden, r]
    fused experts (v5): A [E*r, in]  B [out, E*r]   with (in, out) = (H, 2I) for gate_up, (I, H) for down
    (the parameter is (E, out, in) for Qwen MoE, (E, in, out) for gpt-oss / Llama 4: role ``*_in_out``)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from regraft.inspection.adapter import AdapterModule, AdapterSpec
from regraft.inspection.arch import Architecture, ModuleInfo

MLP_LEAVES = {"gate_proj", "up_proj", "down_proj", "w1", "w2", "w3"}


@dataclass
class Match:
    am: AdapterModule
    target: ModuleInfo | None
    status: str  # ok | mismatch | missing | extra-layer | dense-on-moe | experts-on-dense | expert-count | unknown | malformed
    why: str = ""
    expected: dict = field(default_factory=dict)  # slot -> shape
    got: dict = field(default_factory=dict)  # slot -> shape

    @property
    def template(self) -> str:
        return self.target.template if self.target else _template(self.am.module)


def _template(module: str) -> str:
    import re

    module = re.sub(r"^.*layers\.\d+\.", "", module)
    return re.sub(r"(^|\.)experts\.\d+\.", r"\1experts.{e}.", module)


def _got(am: AdapterModule) -> dict:
    out = {}
    for slot in ("a", "b", "bias", "magnitude", "full"):
        t = getattr(am, slot)
        if t is not None:
            out[slot] = tuple(t.shape)
    return out


def match_module(am: AdapterModule, arch: Architecture, adapter: AdapterSpec) -> Match:
    got = _got(am)
    if am.kind in ("lora", "lora_embedding", "fused_experts") and (am.a is None or am.b is None):
        return Match(am, None, "malformed", "lora_A or lora_B is missing for this module", got=got)
    if am.a is not None and am.b is not None and am.kind != "fused_experts" and am.a.shape[0] != am.b.shape[-1]:
        return Match(am, None, "malformed", f"lora_A rank {am.a.shape[0]} differs from lora_B rank {am.b.shape[-1]}",
                     got=got)
    if am.layer is not None and arch.num_layers is not None and am.layer >= arch.num_layers:
        return Match(am, None, "extra-layer", f"target has {arch.num_layers} layers (0..{arch.num_layers - 1})", got=got)
    if am.kind == "fused_experts":
        return _match_fused(am, arch, got, adapter)
    target = arch.lookup(am.module, "disk") or arch.lookup(am.module, "v5")
    if target is None:
        leaf = am.leaf
        if am.layer is not None and arch.num_layers is None:
            return Match(am, None, "unknown", "the target's number of layers is unknown", got=got)
        if am.expert is not None and not arch.is_sparse(am.layer or 0):
            return Match(am, None, "experts-on-dense", "target layer has a dense MLP, no experts", got=got)
        if am.expert is not None and arch.num_experts is not None and am.expert >= arch.num_experts:
            return Match(am, None, "expert-count", f"target has {arch.num_experts} experts", got=got)
        if leaf in MLP_LEAVES and am.expert is None and am.layer is not None and arch.is_sparse(am.layer):
            return Match(am, None, "dense-on-moe", "target layer is MoE: it has experts, no dense MLP", got=got)
        return Match(am, None, "missing", "no module of this name in the target", got=got)
    if target.shape is None:
        return Match(am, target, "unknown", f"target shape unknown (missing: {', '.join(target.unknown)})", got=got)
    expected = _expected(am, target, adapter)
    bad = [s for s, shape in expected.items() if s in got and got[s] != shape]
    if bad:
        why = "; ".join(f"{_slot_name(s, am)} {list(got[s])} vs target {list(expected[s])}" for s in bad)
        return Match(am, target, "mismatch", why, expected, got)
    return Match(am, target, "ok", "", expected, got)


def _slot_name(slot: str, am: AdapterModule) -> str:
    if am.kind == "lora_embedding":
        return {"a": "lora_embedding_A", "b": "lora_embedding_B"}.get(slot, slot)
    return {"a": "lora_A", "b": "lora_B", "bias": "lora_B.bias", "magnitude": "magnitude", "full": "weight"}[slot]


def _expected(am: AdapterModule, t: ModuleInfo, adapter: AdapterSpec) -> dict:
    r = am.rank or adapter.r
    if am.kind == "full_copy" or am.kind == "trainable_tokens":
        if am.kind == "trainable_tokens":
            return {"full": (am.full.shape[0], t.shape[1])}
        return {"full": t.shape}
    if am.kind == "lora_embedding":
        vocab, hidden = t.shape
        return {"a": (r, vocab), "b": (hidden, r)}
    if t.kind in ("linear", "router"):
        out, inn = t.shape[0], t.shape[1]
        exp = {"a": (r, inn), "b": (out, r), "bias": (out,), "magnitude": (out,)}
        return exp
    return {}


def _match_fused(am: AdapterModule, arch: Architecture, got: dict, adapter: AdapterSpec) -> Match:
    layer = am.layer if am.layer is not None else 0
    if arch.num_layers is None or arch.num_experts is None and not arch.values.get("hidden_size"):
        return Match(am, None, "unknown", "the target's layers or experts are unknown", got=got)
    if not arch.is_sparse(layer):
        return Match(am, None, "experts-on-dense", "target layer has a dense MLP, no experts", got=got)
    name = f"{am.module}.{am.param}"
    target = arch.lookup(name, "v5")
    if target is None:
        return Match(am, None, "missing", f"no fused parameter {am.param} in the target", got=got)
    if target.shape is None:
        return Match(am, target, "unknown", f"target shape unknown (missing: {', '.join(target.unknown)})", got=got)
    n_exp, out, inn = target.shape
    if target.role.endswith("_in_out"):  # gpt-oss / Llama 4 store fused experts as (E, in, out)
        n_exp, inn, out = target.shape
    total = am.a.shape[0]
    r = adapter.rank_alpha(name)[0]  # PEFT sizes fused LoRA as E * r (rank_pattern doubles r for gate_up)
    if total % r or am.b.shape[1] != total:
        return Match(am, target, "malformed", f"lora_A has {total} rows, not a multiple of r={r}", got=got)
    if total != n_exp * r:
        return Match(am, target, "expert-count", f"lora_A has {total} rows = {total // r} experts x r={r}; "
                     f"the target has {n_exp} experts", got=got)
    expected = {"a": (n_exp * r, inn), "b": (out, n_exp * r)}
    bad = [s for s, shape in expected.items() if got.get(s) != shape]
    if bad:
        why = "; ".join(f"{_slot_name(s, am)} {list(got[s])} vs target {list(expected[s])}" for s in bad)
        return Match(am, target, "mismatch", why, expected, got)
    return Match(am, target, "ok", "", expected, got)


def match_adapter(adapter: AdapterSpec, arch: Architecture) -> list[Match]:
    return [match_module(am, arch, adapter) for am in adapter.modules]


def uncovered_layers(adapter: AdapterSpec, arch: Architecture) -> dict[str, list[int]]:
    """Target layers where a module the adapter adapts exists but the adapter has no tensors (PEFT: missing keys)."""
    if arch.num_layers is None:
        return {}
    wanted = adapter.layers_to_transform
    if isinstance(wanted, int):
        wanted = [wanted]
    have: dict[str, set[int]] = {}
    for am in adapter.lora_modules:
        if am.layer is not None:
            have.setdefault(_template(am.module).split("layers.{i}.", 1)[-1], set()).add(am.layer)
    out = {}
    for tmpl, layers in have.items():
        missing = []
        for i in range(arch.num_layers):
            if i in layers or (wanted is not None and i not in wanted):
                continue
            rest = tmpl.replace("{e}", "0")
            name = arch.data["layer_prefix"].format(i=i) + rest
            if "experts" in tmpl and "{e}" not in tmpl:  # fused experts module
                if arch.is_sparse(i):
                    missing.append(i)
            elif arch.lookup(name, "disk") or arch.lookup(name, "v5"):
                missing.append(i)
        if missing:
            out[tmpl] = missing
    return out
