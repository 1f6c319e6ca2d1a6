"""Module names, roles and shapes of a model, derived from its config alone.

An :class:`Architecture` binds an architecture file (``catalog/architectures/<model_type>.json``) to one config.
It answers, for any layer, which modules exist and with which shapes, in two namespaces:

- ``disk``: checkpoint keys (and transformers 4 module names); MoE experts are per-expert ``mlp.experts.E.*``.
- ``v5``: the modules/parameters transformers 5 builds; MoE experts are fused 3-D ``mlp.experts.gate_up_proj``.

Entries marked ``"namespace": "both"`` (the default) exist in both. An architecture file may also give
``disk_prefixes`` (``[[v5_prefix, disk_prefix], ...]``: Mistral 3 and LLaVA-style wrappers save
``language_model.model.*`` for the module ``model.language_model.*``), per-file ``aliases`` of config keys, and
``towers``: other stacks of the same checkpoint (a vision encoder), each a small architecture of its own over a
config sub-dict, listed by :meth:`Architecture.modules` only with ``towers=True`` and found by ``lookup``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from regraft.catalog import architecture_data
from regraft.catalog.shapes import UnknownField, evaluate

NAMESPACES = ("disk", "v5")
_LAYER_RE = re.compile(r"^(?P<i>\d+)\.(?P<rest>.+)$")  # what follows a layer prefix
_EXPERT_RE = re.compile(r"\.experts\.(\d+)\.")
# transformers 5 re-serialises some keys under new names (research: Qwen3-30B-A3B-Thinking-2507 copy).
ALIASES = {"num_local_experts": "num_experts", "torch_dtype": "dtype"}


@dataclass(frozen=True)
class ModuleInfo:
    """One module (or raw parameter) of a model, with its shape when the config allows it."""

    name: str  # full name without ".weight", e.g. "model.layers.3.self_attn.q_proj"
    template: str  # layer-relative template, e.g. "self_attn.q_proj" or "mlp.experts.{e}.gate_proj"
    role: str  # shared vocabulary across families: attn.q, mlp.down, moe.expert.gate, embed, ...
    kind: str  # linear | embedding | norm | router | experts | conv | param
    shape: tuple[int, ...] | None  # None when a needed config field is unknown
    layer: int | None = None
    expert: int | None = None
    namespace: str = "both"
    bias: bool | None = False
    unknown: tuple[str, ...] = ()  # config fields that were needed and missing
    tied_to: str | None = None

    @property
    def out_features(self) -> int | None:
        return self.shape[0] if self.shape and self.kind in ("linear", "router", "embedding") else None

    @property
    def in_features(self) -> int | None:
        return self.shape[1] if self.shape and self.kind in ("linear", "router", "embedding") else None

    def param_names(self) -> list[str]:
        """Tensor names this module owns (".weight"/".bias"; raw parameters have no suffix)."""
        if self.kind in ("experts", "param"):
            return [self.name]
        names = [self.name + ".weight"]
        if self.bias:
            names.append(self.name + ".bias")
        return names


@dataclass
class Architecture:
    """An architecture file bound to one config (a dict, already taken from ``config_root`` if any)."""

    data: dict
    config: dict
    partial: bool = False  # partial catalog entry: no defaults are filled in, unknowns stay unknown
    full_config: dict | None = None  # the whole config.json when ``config`` is a sub-dict (text_config)
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def for_config(cls, config: dict, partial: bool = False) -> "Architecture | None":
        model_type = config.get("model_type")
        data = architecture_data(model_type) if model_type else None
        if data is None:
            return None
        full = config
        if data.get("config_root"):
            config = config.get(data["config_root"]) or {}
        return cls(data, config, partial, full)

    @cached_property
    def towers(self) -> list["Architecture"]:
        """The other stacks described by the file (a vision encoder), each bound to its config sub-dict; a tower
        whose config is absent (a partial entry without vision_config) is left out, not guessed."""
        out = []
        full = self.full_config if self.full_config is not None else self.config
        for t in self.data.get("towers", []):
            cfg = full.get(t["config_root"]) if t.get("config_root") else full
            if isinstance(cfg, dict):
                data = {"model_type": self.model_type, "layer_types": "all_full", "defaults": {}, **t}
                out.append(Architecture(data, cfg, self.partial, full))
        return out

    def to_disk(self, name: str) -> str:
        """A transformers-5 module name as the checkpoint names it (``disk_prefixes``)."""
        for v5, disk in self.data.get("disk_prefixes", ()):
            if name.startswith(v5):
                return disk + name[len(v5):]
        return name

    def from_disk(self, name: str) -> str:
        for v5, disk in self.data.get("disk_prefixes", ()):
            if name.startswith(disk):
                return v5 + name[len(disk):]
        return name

    @property
    def model_type(self) -> str:
        return self.data["model_type"]

    @cached_property
    def values(self) -> dict:
        """Config values plus the architecture's defaults (defaults only for complete configs)."""
        vals = {k: v for k, v in self.config.items() if v is not None or k not in self.data["defaults"]}
        for alias, canonical in (*ALIASES.items(), *self.data.get("aliases", {}).items()):
            if vals.get(canonical) is None and vals.get(alias) is not None:
                vals[canonical] = vals[alias]
        if self.full_config is not None and self.full_config is not self.config \
                and self.full_config.get("tie_word_embeddings") is not None:
            # a wrapper ties (or not) by its top-level key; transformers may also write the text config's class
            # default into text_config (Qwen3-VL-MoE: true there, false at the top, lm_head saved)
            vals["tie_word_embeddings"] = self.full_config["tie_word_embeddings"]
        rope = vals.get("rope_parameters")
        if vals.get("rope_theta") is None and isinstance(rope, dict) and rope.get("rope_theta") is not None:
            vals["rope_theta"] = rope["rope_theta"]
        if not self.partial:
            for key, default in self.data["defaults"].items():
                if vals.get(key) is None:
                    try:
                        vals[key] = evaluate(default, vals) if isinstance(default, str) else default
                    except UnknownField:
                        pass
        return vals

    def value(self, key: str):
        return self.values.get(key)

    @property
    def num_layers(self) -> int | None:
        return self.values.get(self.data.get("num_layers_key", "num_hidden_layers"))

    @property
    def is_moe(self) -> bool:
        return "sparse_mlp" in self.data["blocks"] and bool(self.values.get("num_experts"))

    @property
    def num_experts(self) -> int | None:
        return self.values.get("num_experts") if "sparse_mlp" in self.data["blocks"] else None

    @property
    def inferred(self) -> bool:
        return bool(self.data.get("inferred"))

    def layer_type(self, i: int) -> str:
        explicit = self.data.get("explicit_layer_types")
        if explicit:
            return explicit[i] if i < len(explicit) else explicit[-1]
        types = self.values.get("layer_types")
        if isinstance(types, list) and i < len(types):
            return types[i]
        if self.data["layer_types"] == "interval":
            interval = self.values.get("full_attention_interval") or 4
            return "full_attention" if (i + 1) % interval == 0 else "linear_attention"
        return "full_attention"

    def is_sparse(self, i: int) -> bool:
        if not self.is_moe:
            return False
        step = self.values.get("decoder_sparse_step") or 1
        return i not in (self.values.get("mlp_only_layers") or []) and (i + 1) % step == 0

    def layer_entries(self, i: int) -> list[dict]:
        key = ("entries", self.layer_type(i), self.is_sparse(i))
        if key not in self._cache:
            blocks = self.data["blocks"]
            entries = list(blocks.get(self.layer_type(i), []))
            entries += blocks["sparse_mlp"] if self.is_sparse(i) else blocks.get("dense_mlp", [])
            entries += blocks.get("common", [])
            self._cache[key] = entries
        return self._cache[key]

    def _module(self, entry: dict, layer: int | None, expert: int | None = None, namespace: str = "both",
                prefix: str = "") -> ModuleInfo:
        template = entry["name"]
        name = prefix + template if layer is None else self.data["layer_prefix"].format(i=layer) + template
        if expert is not None:
            name = name.replace("{e}", str(expert))
        if namespace == "disk":
            name = self.to_disk(name)
        key = ("module", id(entry))
        cached = self._cache.get(key)
        if cached is None or cached[0] is not entry:  # shape, bias and tying depend on the entry and config only
            shape, unknown = None, []
            try:
                shape = tuple(evaluate(d, self.values) for d in entry["shape"])
            except UnknownField as e:
                unknown.append(e.args[0])
            bias = entry.get("bias", False)
            if isinstance(bias, str):
                bias = self.values.get(bias)
            tied = None
            if entry.get("tied_to") and self.values.get(entry.get("tie_key", "tie_word_embeddings")):
                tied = entry["tied_to"]
            cached = self._cache[key] = (entry, shape, tuple(unknown), bias, tied)
        _, shape, unknown, bias, tied = cached
        if tied and namespace == "disk":
            tied = self.to_disk(tied)
        return ModuleInfo(name, template, entry["role"], entry["kind"], shape, layer, expert,
                          entry.get("namespace", "both"), bias, unknown, tied)

    def globals(self, namespace: str = "both") -> list[ModuleInfo]:
        out = [self._module(e, None, namespace=namespace) for e in self.data["globals"] if _in_ns(e, namespace)]
        for group in self.data.get("lists", ()):  # numbered modules outside the layers (deepstack mergers)
            count = self.values.get(group["count"])
            count = len(count) if isinstance(count, list) else count or 0
            for j in range(count):
                out.extend(self._module(e, None, namespace=namespace, prefix=group["prefix"].format(j=j))
                           for e in group["entries"] if _in_ns(e, namespace))
        return out

    def layer_modules(self, i: int, namespace: str = "both", expand_experts: bool = False) -> list[ModuleInfo]:
        """Modules of layer ``i``; per-expert entries appear once with expert=None unless expand_experts."""
        out = []
        for e in self.layer_entries(i):
            if not _in_ns(e, namespace):
                continue
            if e.get("per_expert") and expand_experts and self.num_experts:
                out.extend(self._module(e, i, x, namespace) for x in range(self.num_experts))
            else:
                out.append(self._module(e, i, namespace=namespace))
        return out

    def modules(self, namespace: str = "both", expand_experts: bool = False, towers: bool = False) -> list[ModuleInfo]:
        """Every module of the language model (and, with ``towers``, of the other stacks such as the vision tower)."""
        mods = self.globals(namespace)
        for i in range(self.num_layers or 0):
            mods.extend(self.layer_modules(i, namespace, expand_experts))
        if towers:
            for t in self.towers:
                mods.extend(t.modules(namespace, expand_experts))
        return mods

    def lookup(self, name: str, namespace: str = "both") -> ModuleInfo | None:
        """The module at full name ``name`` (no ".weight"), or None if the model has no such module."""
        if namespace in ("disk", "both") and self.data.get("disk_prefixes"):
            v5 = self.from_disk(name)
            if v5 != name:
                return self._lookup(v5, "disk")
        found = self._lookup(name, namespace)
        if found is None:
            for t in self.towers:
                found = t.lookup(name, namespace)
                if found is not None:
                    break
        return found

    def _lookup(self, name: str, namespace: str) -> ModuleInfo | None:
        key = ("globals", namespace)
        if key not in self._cache:
            self._cache[key] = {self.from_disk(m.name): m for m in self.globals(namespace)}
        if name in self._cache[key]:
            return self._cache[key][name]
        lp = self.data["layer_prefix"].split("{i}")[0]
        m = _LAYER_RE.match(name[len(lp):]) if name.startswith(lp) else None
        if not m:
            return None
        layer = int(m.group("i"))
        if self.num_layers is None or layer >= self.num_layers:
            return None
        rest, expert = m.group("rest"), None
        em = _EXPERT_RE.search("." + rest + ".")
        if em:
            expert = int(em.group(1))
            rest = _EXPERT_RE.sub(".experts.{e}.", "." + rest + ".")[1:-1]
            if self.num_experts is None or expert >= self.num_experts:
                return None
        for e in self.layer_entries(layer):
            if e["name"] == rest and _in_ns(e, namespace):
                return self._module(e, layer, expert, namespace)
        return None

    def roles(self, namespace: str = "both") -> dict[str, dict]:
        """Layer-relative template -> entry, over all layer kinds this config uses."""
        out: dict[str, dict] = {}
        for i in range(self.num_layers or 1):
            for e in self.layer_entries(i):
                if _in_ns(e, namespace):
                    out.setdefault(e["name"], e)
        return out


# Config fields the code loops over or divides by, with the largest value a real model could have.
_STRUCTURAL = {"num_hidden_layers": 100_000, "num_experts": 1_000_000, "decoder_sparse_step": 100_000,
               "full_attention_interval": 100_000}
_DIM_LIMIT = 2**48


def validate_config(config: dict, where: str) -> None:
    """Refuse config values that the shape code cannot compute with; FileFormatError naming the field.

    Every field that a shape expression or a layer loop of the config's architecture reads must be an integer
    in a sane range (divisors at least 1), ``layer_types`` a list of strings, ``mlp_only_layers`` a list of ints.
    """
    from regraft.catalog.shapes import names
    from regraft.errors import FileFormatError

    def bad(key: str, v, want: str) -> FileFormatError:
        return FileFormatError(f"Invalid config {where}: '{key}' is {type(v).__name__} {v!r:.60}, expected {want}. "
                               "Fix the config or re-download it.")

    model_type = config.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise bad("model_type", model_type, "a string")
    data = architecture_data(model_type) if model_type else None
    if data is None:
        return
    if data.get("config_root"):
        root = config.get(data["config_root"])
        if root is not None and not isinstance(root, dict):
            raise bad(data["config_root"], root, "an object")
        config = root or {}
    fields = dict(_STRUCTURAL)
    for entry in [*data["globals"], *(e for block in data["blocks"].values() for e in block)]:
        for expr in entry["shape"]:
            fields.update((n, _DIM_LIMIT) for n in names(expr) if n not in fields)
    for default in data["defaults"].values():
        if isinstance(default, str):
            fields.update((n, _DIM_LIMIT) for n in names(default) if n not in fields)
    for key, limit in fields.items():
        v = config.get(key)
        low = 1 if key in ("num_attention_heads", "decoder_sparse_step", "full_attention_interval") else 0
        if v is not None and (type(v) is not int or not low <= v <= limit):
            raise bad(key, v, f"an integer from {low} to {limit}")
    for key, typ in (("layer_types", str), ("mlp_only_layers", int)):
        v = config.get(key)
        if v is not None and (not isinstance(v, list) or not all(type(x) is typ for x in v)):
            raise bad(key, v, f"a list of {typ.__name__}s")


def _in_ns(entry: dict, namespace: str) -> bool:
    ns = entry.get("namespace", "both")
    return namespace == "both" or ns == "both" or ns == namespace
