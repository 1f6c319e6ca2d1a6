"""Tiny models and adapters built at test time from the catalog's own configs (no downloads)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from regraft import catalog

TINY = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48,
            moe_intermediate_size=16, shared_expert_intermediate_size=16, num_experts=4, num_local_experts=4, num_experts_per_tok=2,
            vocab_size=128, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
            linear_value_head_dim=8, max_window_layers=2)


def tiny_config(model_id: str, layers: int = 2, **over) -> dict:
    """A catalog config shrunk to test size, keeping its structure (model_type, MoE, hybrid layers, ties)."""
    entry = {k: v for k, v in catalog.model_entry(model_id).items() if not k.startswith("_")}
    cfg = copy.deepcopy(entry)
    root = cfg["text_config"] if "text_config" in cfg else cfg
    layers = max(layers, root.get("full_attention_interval") or 0)
    for k, v in TINY.items():
        if k in root or k in ("head_dim",):
            root[k] = v
    if root.get("num_key_value_heads") == root.get("num_attention_heads"):
        root["num_key_value_heads"] = TINY["num_attention_heads"]
    root["num_hidden_layers"] = layers
    if isinstance(root.get("layer_types"), list):
        root["layer_types"] = root["layer_types"][:layers]
    for k in ("mlp_only_layers",):
        if root.get(k):
            root[k] = [x for x in root[k] if x < layers]
    root.update(over)
    return cfg


def build_model(tmp: Path, config: dict, seed: int = 0, meta: bool = False):
    """Instantiate (and save, unless meta) a transformers model for ``config``; returns (model, folder)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)
    torch.manual_seed(seed)
    if meta:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(cfg), None
    model = AutoModelForCausalLM.from_config(cfg)
    folder = Path(tmp)
    model.save_pretrained(folder)
    return model, folder


def build_adapter(folder: Path, model, seed: int = 1, **lora_kwargs) -> Path:
    """A PEFT LoRA on ``model`` with non-zero B (so it has an effect), saved to ``folder``."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    lora_kwargs.setdefault("task_type", "CAUSAL_LM")
    pm = get_peft_model(copy.deepcopy(model), LoraConfig(**lora_kwargs))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n or "lora_embedding_B" in n:
                p.normal_(0, 0.1)
    pm.save_pretrained(folder)
    return Path(folder)


def set_base(adapter_dir: Path, base: str) -> None:
    p = Path(adapter_dir) / "adapter_config.json"
    cfg = json.loads(p.read_text())
    cfg["base_model_name_or_path"] = base
    p.write_text(json.dumps(cfg))
