"""Multimodal wrapper namespaces: one mechanism, pure functions over catalog/namespaces.json.

A model's language model is named ``model.layers.*`` in its text-only CausalLM class and
``model.language_model.layers.*`` in its ConditionalGeneration wrapper (LLaVA-style checkpoints and Llama 4:
``language_model.model.layers.*``). An adapter names its modules after the class it was trained on, so it matches
nothing on the other class. This module says which namespace names belong to, and renames them exactly.

    rename_keys(keys, from_ns, to_ns) -> {old: new}    # adapter tensor keys or module names, PEFT prefix kept
    detect_namespace(names) -> namespace id | None
    target_namespace(arch, checkpoint=False) -> namespace id
    namespace_mismatch(module_names, arch) -> Mismatch | None   # the facts behind rule RG115
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from regraft.errors import NamespaceError

__all__ = ["NamespaceError", "detect_namespace", "namespace_mismatch", "namespaces", "rename_keys", "target_namespace"]

PEFT_PREFIX = "base_model.model."


@lru_cache(maxsize=1)
def data() -> dict:
    return json.loads(resources.files("regraft.catalog").joinpath("namespaces.json").read_text(encoding="utf-8"))


def namespaces() -> dict[str, dict[str, str]]:
    """Namespace id -> {part: prefix}, e.g. causal_lm -> {language_model: "model.", lm_head: "lm_head"}."""
    return {k: v["parts"] for k, v in data()["namespaces"].items()}


def _part_of(name: str, parts: dict[str, str]) -> tuple[str, str] | None:
    """(part, prefix) of the longest prefix of ``parts`` that ``name`` starts with (at a name boundary)."""
    best = None
    for part, prefix in parts.items():
        if name == prefix or name.startswith(prefix if prefix.endswith(".") else prefix + "."):
            if best is None or len(prefix) > len(best[1]):
                best = (part, prefix)
    return best


def _longest_any(name: str) -> int:
    return max((len(hit[1]) for ps in namespaces().values() if (hit := _part_of(name, ps))), default=0)


def key_namespaces(name: str) -> list[str]:
    """The namespaces ``name`` (a module name or key without the PEFT prefix) most specifically belongs to."""
    best = _longest_any(name)
    return [ns for ns, ps in namespaces().items() if best and (hit := _part_of(name, ps)) and len(hit[1]) == best]


def detect_namespace(names) -> str | None:
    """The one namespace every name fits (causal_lm before the wrappers when several fit), or None."""
    common: set[str] | None = None
    for n in names:
        n = n[len(PEFT_PREFIX):] if n.startswith(PEFT_PREFIX) else n
        found = set(key_namespaces(n))
        common = found if common is None else common & found
        if not common:
            return None
    if not common:
        return None
    order = list(namespaces())
    return min(common, key=order.index)


def rename_keys(keys, from_ns: str, to_ns: str) -> dict[str, str]:
    """Rename adapter tensor keys (or module names) from namespace ``from_ns`` to ``to_ns``, exactly.

    The PEFT prefix ``base_model.model.`` is kept; the part prefix (language model, lm_head, vision tower,
    projector) is swapped; the rest of the name is unchanged. Raises NamespaceError (naming the key) when a key
    does not belong to ``from_ns`` (e.g. ``model.language_model.layers.0...`` given as causal_lm) or when ``to_ns``
    has no such part (a vision-tower key cannot go to a text-only class). Never passes a key through unmapped.

        >>> rename_keys(["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"], "causal_lm", "qwen_vl")
        {'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': \
'base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight'}
    """
    spaces = namespaces()
    for ns in (from_ns, to_ns):
        if ns not in spaces:
            raise NamespaceError(f"Unknown namespace '{ns}'; expected one of: {', '.join(spaces)}.")
    src, dst = spaces[from_ns], spaces[to_ns]
    out: dict[str, str] = {}
    for key in keys:
        peft = key.startswith(PEFT_PREFIX)
        name = key[len(PEFT_PREFIX):] if peft else key
        hit = _part_of(name, src)
        if hit is None or len(hit[1]) < _longest_any(name) and from_ns not in key_namespaces(name):
            raise NamespaceError(f"Key '{key}' is not in namespace '{from_ns}' (its parts: "
                                 f"{', '.join(f'{p}={v}' for p, v in src.items())}); detect it with detect_namespace.")
        part, prefix = hit
        if part not in dst:
            raise NamespaceError(f"Key '{key}' is in the {part} of '{from_ns}', which '{to_ns}' does not have: "
                                 "it cannot be renamed exactly (drop it, or keep the adapter on the wrapper class).")
        out[key] = (PEFT_PREFIX if peft else "") + dst[part] + name[len(prefix):]
    return out


def target_namespace(arch, checkpoint: bool = False) -> str:
    """The namespace of a target architecture's module names (or checkpoint keys); causal_lm unless listed."""
    entry = data()["model_types"].get(arch.model_type) if arch is not None else None
    if not entry:
        return "causal_lm"
    return entry["checkpoint" if checkpoint else "module_names"]


def model_type_info(model_type: str | None) -> dict | None:
    return data()["model_types"].get(model_type) if model_type else None


@dataclass(frozen=True)
class Mismatch:
    """An adapter named for one class on a target of the other class (rule RG115)."""

    from_ns: str
    to_ns: str
    modules: int  # adapter modules considered (language-model layers, lm_head, towers)
    matched: int  # of them found in the target as named
    matched_renamed: int  # found after rename_keys(from_ns -> to_ns)
    example: tuple[str, str]  # (adapter name, the target's name for it)


def namespace_mismatch(module_names: list[str], arch) -> Mismatch | None:
    """Facts for RG115: every adapter module misses the target as named, and is found once renamed exactly.

    ``module_names`` are adapter module names without the PEFT prefix; ``arch`` the target Architecture.
    None when the names already match (any of them), when they fit no namespace, or when renaming finds nothing.
    """
    if arch is None or not module_names:
        return None

    def found(n: str) -> bool:
        return arch.lookup(n, "disk") is not None or arch.lookup(n, "v5") is not None

    names = sorted(set(module_names))
    if any(found(n) for n in names):
        return None
    from_ns = detect_namespace(names)
    if from_ns is None:
        return None
    for to_ns in dict.fromkeys((target_namespace(arch), target_namespace(arch, checkpoint=True))):
        if to_ns == from_ns:
            continue
        try:
            renamed = rename_keys(names, from_ns, to_ns)
        except NamespaceError:
            continue
        hits = [n for n in names if found(renamed[n])]
        if hits:
            return Mismatch(from_ns, to_ns, len(names), 0, len(hits), (hits[0], renamed[hits[0]]))
    return None
