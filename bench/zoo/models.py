"""Configs of the zoo members (transformers Qwen2 / Qwen3 / Qwen3-MoE), built from small dicts.

A shape dict is ``{"arch": "qwen2"|"qwen3"|"qwen3_moe", "hidden", "layers", "heads", "kv_heads",
"ffn", ...}``; `make_config` turns it into the real transformers config.
"""

from __future__ import annotations

from .world import IM_END_ID, PAD_ID, VOCAB_SIZE

MAX_POS = 128


def make_config(shape: dict):
    from transformers import Qwen2Config, Qwen3Config, Qwen3MoeConfig

    common = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=shape["hidden"],
        intermediate_size=shape["ffn"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=MAX_POS,
        rms_norm_eps=shape.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        bos_token_id=None,
        eos_token_id=[IM_END_ID, PAD_ID],
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        initializer_range=0.02,
        use_cache=True,
        dtype="float32",
    )
    arch = shape["arch"]
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "qwen3":
        return Qwen3Config(head_dim=shape.get("head_dim", shape["hidden"] // shape["heads"]), **common)
    if arch == "qwen3_moe":
        return Qwen3MoeConfig(
            num_experts=shape["experts"],
            num_experts_per_tok=shape["top_k"],
            moe_intermediate_size=shape["moe_ffn"],
            norm_topk_prob=True,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            **common,
        )
    raise ValueError(f"unknown arch {arch}")


def new_model(shape: dict, seed: int):
    """A freshly initialised model; the same (shape, seed) gives the same weights."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(shape), dtype=torch.float32)
    return model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
