"""What a LoRA rule sees: the source, the target, the adapter, the runtime facts, and the module matches."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from regraft.checks.lora_map import Match, match_adapter, uncovered_layers
from regraft.inspection.adapter import AdapterModule, AdapterSpec
from regraft.inspection.model import ModelSpec
from regraft.inspection.safetensors_header import TensorInfo, total_bytes

DRIFT_AUTO_BYTES = 4 * 2**30  # `check` streams weights for lineage only when both checkpoints are small
USUAL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraContext:
    source: ModelSpec | None
    target: ModelSpec
    adapter: AdapterSpec | None  # None: the architecture-level question, answered with a synthetic adapter
    runtime: str
    runtime_data: dict = field(default_factory=dict)
    drift: str = "auto"  # auto (both local and <= DRIFT_AUTO_BYTES) | always | never
    serving_config: str | None = None  # check --config: the serving command line / file the LoRA flags come from

    @cached_property
    def weights_bytes(self) -> int | None:
        """Bytes of weights of source + target when both are local folders with safetensors, else None."""
        s, t = self.source, self.target
        if not s or s.path is None or t.path is None or not s.tensors or not t.tensors:
            return None
        return total_bytes(s.tensors) + total_bytes(t.tensors)

    @cached_property
    def weight_drift(self):
        """regraft.drift report between the local source and target weights (streamed), when allowed."""
        size = self.weights_bytes
        if size is None or self.drift == "never" or (self.drift == "auto" and size > DRIFT_AUTO_BYTES):
            return None
        if str(self.source.path) == str(self.target.path):
            return None
        from regraft.drift import lineage_by_weights

        return lineage_by_weights(self.source, self.target)

    @cached_property
    def producer(self):
        """Which tool made the adapter and its layout (regraft.inspection.producer; reads README.md only)."""
        if self.adapter is None:
            return None
        from regraft.inspection.producer import producer_of

        return producer_of(self.adapter, base_widths(self.source, self.target))

    @cached_property
    def layout_evidence(self):
        """Numbers where shapes are blind (regraft.checks.weights_evidence), only with a local base model."""
        if self.adapter is None or self.drift == "never" or self.producer is None or not self.producer.fused:
            return None
        if not any(m is not None and m.path is not None and m.tensors for m in (self.source, self.target)):
            return None  # no local base: nothing to measure, and torch stays unimported
        from regraft.checks.weights_evidence import evidence_for_context

        return evidence_for_context(self)

    @cached_property
    def effective_adapter(self) -> AdapterSpec | None:
        return self.adapter or (synthetic_adapter(self.source) if self.source else None)

    @property
    def architecture_only(self) -> bool:
        return self.adapter is None

    @cached_property
    def namespace_mismatch(self):
        """regraft.checks.namespaces.Mismatch when the adapter is named for another class of the target (RG115)."""
        a = self.effective_adapter
        if a is None or self.target.arch is None:
            return None
        from regraft.checks.namespaces import namespace_mismatch

        return namespace_mismatch([am.module for am in a.modules], self.target.arch)

    @cached_property
    def matched_adapter(self) -> AdapterSpec | None:
        """The adapter as the shape rules see it: renamed exactly into the target's namespace when RG115 applies
        (the rename is reported once by RG115; the other rules then judge the tensors, not the prefix)."""
        a, m = self.effective_adapter, self.namespace_mismatch
        if a is None or m is None:
            return a
        from dataclasses import replace

        from regraft.checks.namespaces import rename_keys

        new = rename_keys([am.module for am in a.modules], m.from_ns, m.to_ns)
        return replace(a, modules=[replace(am, module=new[am.module]) for am in a.modules])

    @cached_property
    def matches(self) -> list[Match]:
        a = self.matched_adapter
        if a is None or self.target.arch is None:
            return []
        return match_adapter(a, self.target.arch)

    @cached_property
    def uncovered(self) -> dict[str, list[int]]:
        a = self.matched_adapter
        if a is None or self.target.arch is None:
            return {}
        return uncovered_layers(a, self.target.arch)

    def by_status(self, *statuses: str) -> list[Match]:
        return [m for m in self.matches if m.status in statuses]


def base_widths(*models) -> tuple[int, int] | None:
    """(hidden_size, moe_intermediate_size) of the first model whose architecture knows both."""
    for m in models:
        arch = getattr(m, "arch", None)
        if arch is not None and arch.values.get("hidden_size") and arch.values.get("moe_intermediate_size"):
            return int(arch.values["hidden_size"]), int(arch.values["moe_intermediate_size"])
    return None


def synthetic_adapter(source: ModelSpec, r: int = 16) -> AdapterSpec | None:
    """A stand-in for 'a LoRA on the usual target modules of SOURCE' (q,k,v,o,gate,up,down incl. experts, r=16)."""
    arch = source.arch
    if arch is None or arch.num_layers is None:
        return None
    mods = []
    for i in range(arch.num_layers):
        for m in arch.layer_modules(i, "disk", expand_experts=False):
            if m.kind != "linear" or m.template.rsplit(".", 1)[-1] not in USUAL_TARGETS or m.shape is None:
                continue
            name = m.name.replace("{e}", "0")
            a = TensorInfo(name + ".lora_A.weight", "F32", (r, m.shape[1]), "-", 0)
            b = TensorInfo(name + ".lora_B.weight", "F32", (m.shape[0], r), "-", 0)
            mods.append(AdapterModule(name, "lora", i, 0 if m.expert is not None or "{e}" in m.name else None, a, b))
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": list(USUAL_TARGETS),
           "base_model_name_or_path": source.name}
    return AdapterSpec(source.path or source.name, cfg, {}, mods, "(synthetic)")
