"""ModelSpec: the one normalised view of a model that every rule reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from regraft.inspection.arch import Architecture
from regraft.inspection.safetensors_header import TensorInfo, tensor_dtypes, total_bytes

# Fields a complete config of a decoder LLM has; a partial catalog entry lists which of them are unknown.
CORE_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "intermediate_size", "vocab_size", "max_position_embeddings", "rope_theta", "eos_token_id",
               "tie_word_embeddings")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what the user typed, normalised (hub id or folder path)
    origin: str  # local | hf-cache | user-catalog | catalog | hub
    config: dict  # config.json without catalog metadata keys
    status: str = "local"  # local | hf-cache | hub | user | one of regraft.catalog.STATUSES
    path: Path | None = None
    meta: dict = field(default_factory=dict)  # catalog metadata: _source, _notes, _corroborated_by
    generation_config: dict | None = None
    tokenizer_config: dict | None = None
    chat_template: str | None = None
    # from safetensors headers, when the weights are local (a TensorTable for a folder, a dict from the Hub)
    tensors: Mapping[str, TensorInfo] | None = None
    bytes_read: int = 0

    @property
    def partial(self) -> bool:
        return self.status == "partial"

    @cached_property
    def arch(self) -> Architecture | None:
        arch = Architecture.for_config(self.config, partial=self.partial)
        if arch is None and not self.partial and self.model_type:
            from regraft.inspection.meta_arch import infer_architecture_data

            data = infer_architecture_data(self.config)  # None without transformers: stays unknown
            if data is not None:
                arch = Architecture(data, self.config)
        return arch

    @property
    def model_type(self) -> str | None:
        return self.config.get("model_type")

    @property
    def text_config(self) -> dict:
        """The language-model config (``text_config`` for multimodal wrappers such as Qwen3.5)."""
        return self.arch.values if self.arch else self.config

    def get(self, key: str, default=None):
        v = self.text_config.get(key)
        return default if v is None else v

    @property
    def unknown_fields(self) -> list[str]:
        """Core fields this spec does not know (non-empty only for partial catalog entries)."""
        if not self.partial:
            return []
        return [f for f in CORE_FIELDS if self.text_config.get(f) is None]

    @property
    def source(self) -> str:
        if self.origin == "catalog":
            return f"catalog ({self.status}): {self.meta.get('_source', '?')}"
        if self.origin == "user-catalog":
            return f"user catalog: {self.meta.get('_source', '?')} (added {self.meta.get('_added', '?')})"
        return f"{self.origin}: {self.path}" if self.path else self.origin

    @property
    def is_moe(self) -> bool:
        return bool(self.arch and self.arch.is_moe)

    @property
    def short_name(self) -> str:
        return self.name.rstrip("/").split("/")[-1]

    def describe(self) -> dict:
        """A JSON-able architecture card."""
        a = self.arch
        card = {
            "name": self.name, "origin": self.origin, "status": self.status, "source": self.source,
            "model_type": self.model_type, "architectures": self.config.get("architectures"),
            "supported_architecture": a is not None,
        }
        keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                "intermediate_size", "moe_intermediate_size", "num_experts", "num_experts_per_tok",
                "shared_expert_intermediate_size", "vocab_size", "max_position_embeddings", "rope_theta",
                "rope_scaling", "tie_word_embeddings", "eos_token_id", "bos_token_id")
        vals = a.values if a else self.config
        card["config"] = {k: vals.get(k) for k in keys if vals.get(k) is not None}
        card["unknown_fields"] = self.unknown_fields
        card["notes"] = list(self.meta.get("_notes", [])) + (a.data.get("notes", []) if a else [])
        card["chat_template"] = bool(self.chat_template)
        card["weights"] = None
        if self.tensors is not None:
            card["weights"] = {"tensors": len(self.tensors), "bytes": total_bytes(self.tensors),
                               "dtypes": sorted(tensor_dtypes(self.tensors))}
        if a and a.num_layers:
            per_layer = {}
            for m in a.layer_modules(0, "both"):
                per_layer[m.template] = {"role": m.role, "kind": m.kind, "shape": m.shape, "namespace": m.namespace}
            card["layer0_modules"] = per_layer
            card["layer_types"] = sorted({a.layer_type(i) for i in range(a.num_layers)})
            card["sparse_layers"] = sum(a.is_sparse(i) for i in range(a.num_layers))
        return card
