"""An adapter's tensors in one working form: a list of :class:`Item`, one per adapted module.

Every item carries its own effective scale (``alpha/r``, ``alpha/sqrt(r)`` with rsLoRA, after rank/alpha
patterns), so later steps (relayout, pad, fold) never re-derive it. MoE experts are held per expert
(transformers 4 layout, ``model.layers.L.mlp.experts.E.gate_proj``); :mod:`regraft.port.relayout` converts the
fused transformers 5 layout to and from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from regraft.inspection.adapter import PREFIX, AdapterModule, AdapterSpec


@dataclass
class Item:
    module: str  # model namespace, no "base_model.model." (fused experts: "model.layers.L.mlp.experts")
    kind: str  # lora | lora_embedding | fused_experts | full_copy | trainable_tokens
    scale: float = 1.0
    a: "object | None" = None  # torch.Tensor
    b: "object | None" = None
    bias: "object | None" = None
    magnitude: "object | None" = None
    full: "object | None" = None
    param: str | None = None  # fused experts: gate_up_proj | down_proj
    nesting: int = 0
    layer: int | None = None
    expert: int | None = None
    keys: dict = field(default_factory=dict)  # slot -> original tensor name (for messages)

    @property
    def rank(self) -> int | None:
        return None if self.a is None else int(self.a.shape[0])

    @property
    def leaf(self) -> str:
        return self.module.rsplit(".", 1)[-1]

    def copy(self, **kw) -> "Item":
        return replace(self, **kw)

    def delta(self):
        """s * B @ A for a plain LoRA item (float32)."""
        return self.scale * (self.b.float() @ self.a.float())


def load_tensors(spec: AdapterSpec) -> dict:
    """All adapter tensors as torch tensors (safetensors or, when read_adapter allowed it, a weights_only .bin)."""
    from regraft.errors import need

    torch = need("torch", "changing adapter tensors (relayout, pad, fold, GGUF)", "torch")
    need("safetensors", "changing adapter tensors", "torch")

    path = spec.path / spec.weights_file
    if spec.weights_file.endswith(".safetensors"):
        from safetensors.torch import load_file

        from regraft.inspection.safetensors_header import refuse_packed, tensor_dtypes

        refuse_packed(tensor_dtypes(spec.tensors), str(path), "change the adapter's tensors")

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _scale_name(am: AdapterModule) -> str:
    return f"{am.module}.{am.param}" if am.kind == "fused_experts" else am.module


def items_from_spec(spec: AdapterSpec, tensors: dict | None = None) -> list[Item]:
    tensors = tensors if tensors is not None else load_tensors(spec)
    out = []
    for am in spec.modules:
        it = Item(am.module, am.kind, param=am.param, nesting=am.nesting, layer=am.layer, expert=am.expert)
        for slot in ("a", "b", "bias", "magnitude", "full"):
            t = getattr(am, slot)
            if t is not None:
                setattr(it, slot, tensors[t.name])
                it.keys[slot] = t.name
        if am.kind in ("lora", "lora_embedding", "fused_experts"):
            it.scale = spec.scale(_scale_name(am))
        out.append(it)
    return out


def tensor_key(item: Item, slot: str) -> str:
    """The PEFT safetensors key of one slot of an item (the original key when the item was not rebuilt)."""
    if slot in item.keys:
        return item.keys[slot]
    if item.kind == "fused_experts":
        base = item.module + ".base_layer" * item.nesting
        return PREFIX + base + {"a": ".lora_A.weight", "b": ".lora_B.weight"}[slot]
    if item.kind == "lora_embedding":
        return PREFIX + item.module + {"a": ".lora_embedding_A", "b": ".lora_embedding_B"}[slot]
    if item.kind == "trainable_tokens":
        return PREFIX + item.module + ".token_adapter.trainable_tokens_delta"
    if item.kind == "full_copy":
        return item.keys.get("full") or PREFIX + item.module + ".weight"
    return PREFIX + item.module + {"a": ".lora_A.weight", "b": ".lora_B.weight", "bias": ".lora_B.bias",
                                   "magnitude": ".lora_magnitude_vector"}[slot]
