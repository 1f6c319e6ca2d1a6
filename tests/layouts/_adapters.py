"""Adapter folders of every producer layout, written as headers + zero bytes (no torch): names and shapes only."""

from __future__ import annotations

import json
from math import prod
from pathlib import Path

from regraft.inspection.safetensors_header import write_safetensors

P = "base_model.model.model.layers"
MOE_CFG = {"model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 32,
           "intermediate_size": 64, "moe_intermediate_size": 16, "num_experts": 4, "num_experts_per_tok": 2,
           "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
           "vocab_size": 128, "max_position_embeddings": 64, "tie_word_embeddings": False, "rms_norm_eps": 1e-6,
           "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True}


def write(folder: Path, config: dict | None, shapes: dict[str, tuple], weights: str = "adapter_model.safetensors",
          readme: str | None = None, extra_files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (folder / "adapter_config.json").write_text(json.dumps(config))
    write_safetensors(folder / weights, {k: ("F16", s, b"\0" * (2 * prod(s))) for k, s in shapes.items()})
    if readme is not None:
        (folder / "README.md").write_text(readme)
    for name, text in (extra_files or {}).items():
        (folder / name).write_text(text)
    return folder


def model_dir(folder: Path, cfg: dict = MOE_CFG) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def peft_cfg(**kw) -> dict:
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4, **kw}


def fused(E=4, r=2, H=32, I=16, orientation="linear", gate_up=True, down=True) -> dict:
    out = {}
    if gate_up:
        a, b = ((E * r, H), (2 * I, E * r)) if orientation == "linear" else ((E * r, 2 * I), (H, E * r))
        out[f"{P}.0.mlp.experts.base_layer.lora_A.weight"] = a
        out[f"{P}.0.mlp.experts.base_layer.lora_B.weight"] = b
    if down:
        a, b = ((E * r, I), (H, E * r)) if orientation == "linear" else ((E * r, H), (I, E * r))
        out[f"{P}.0.mlp.experts.lora_A.weight"] = a
        out[f"{P}.0.mlp.experts.lora_B.weight"] = b
    return out


def attn(r=2, H=32) -> dict:
    return {f"{P}.0.self_attn.q_proj.lora_A.weight": (r, H), f"{P}.0.self_attn.q_proj.lora_B.weight": (32, r)}
