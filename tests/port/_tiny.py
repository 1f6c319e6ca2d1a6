"""Tiny real models and adapters for the port / verify / drift tests (built at test time, seeded)."""

from __future__ import annotations

import json
import os
from pathlib import Path

DENSE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=8, vocab_size=128, max_position_embeddings=64, tie_word_embeddings=False)
MOE = dict(DENSE, moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2)
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


def make_model(path: Path, model_type: str = "qwen3", seed: int = 0, **over) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    base = MOE if model_type == "qwen3_moe" else DENSE
    cfg = AutoConfig.for_model(model_type, **{**base, **over})
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(cfg)
    m.save_pretrained(path)
    return Path(path)


def sibling_of(src: Path, dst: Path, noise: float = 0.02, seed: int = 1) -> Path:
    """A copy of ``src`` with every weight perturbed by ``noise`` relative (a stand-in for post-training)."""
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(src)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise * p.std().clamp_min(1e-3))
    m.save_pretrained(dst)
    return Path(dst)


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)


def peft_adapter(model_dir: Path, out: Path, targets=None, r=4, alpha=8, seed=0, **kw) -> Path:
    """A PEFT LoRA saved by PEFT itself, with non-zero random B so every tensor matters."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    m = load(model_dir)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets or ATTN + MLP, lora_dropout=0.0, **kw)
    pm = get_peft_model(m, cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn_like(p) * 0.3)
    pm.save_pretrained(out)
    return Path(out)


def v4_moe_adapter(model_dir: Path, out: Path, r=2, alpha=4, seed=0, attn=True, layers=None,
                   extra: dict | None = None) -> Path:
    """A transformers-4 style per-expert MoE adapter (keys mlp.experts.E.{gate,up,down}_proj), written by hand."""
    import torch
    from safetensors.torch import save_file

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    H, I, E = cfg["hidden_size"], cfg["moe_intermediate_size"], cfg.get("num_experts") or cfg["num_local_experts"]
    L = layers if layers is not None else cfg["num_hidden_layers"]
    nq, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    g = torch.Generator().manual_seed(seed)
    sd = {}
    P = "base_model.model.model.layers"

    def pair(name, out_f, in_f):
        sd[f"{name}.lora_A.weight"] = torch.randn(r, in_f, generator=g) * 0.3
        sd[f"{name}.lora_B.weight"] = torch.randn(out_f, r, generator=g) * 0.3

    for li in range(L):
        for e in range(E):
            pair(f"{P}.{li}.mlp.experts.{e}.gate_proj", I, H)
            pair(f"{P}.{li}.mlp.experts.{e}.up_proj", I, H)
            pair(f"{P}.{li}.mlp.experts.{e}.down_proj", H, I)
        if attn:
            pair(f"{P}.{li}.self_attn.q_proj", nq * hd, H)
            pair(f"{P}.{li}.self_attn.v_proj", nkv * hd, H)
    os.makedirs(out, exist_ok=True)
    save_file(sd, str(Path(out) / "adapter_model.safetensors"))
    conf = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
            "target_modules": MLP + (["q_proj", "v_proj"] if attn else []), "base_model_name_or_path": str(model_dir),
            "bias": "none", "use_rslora": False, "use_dora": False}
    conf.update(extra or {})
    (Path(out) / "adapter_config.json").write_text(json.dumps(conf))
    return Path(out)


def ids(vocab=128, n=3, length=12, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, length), generator=g)


def peft_logits(model_dir, adapter_dir, x):
    import torch
    from peft import PeftModel

    pm = PeftModel.from_pretrained(load(model_dir), str(adapter_dir))
    pm.eval()
    with torch.no_grad():
        return pm(input_ids=x).logits


def merged_logits(model_dir, adapter_dir, x):
    """Reference: merge s*B@A into the base weights by hand from the adapter files (per-expert or fused)."""
    import torch
    from regraft.inspection.adapter import read_adapter
    from regraft.port.items import items_from_spec
    from regraft.port import relayout

    spec = read_adapter(adapter_dir)
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    items = relayout.to_v4(items_from_spec(spec), cfg.get("num_experts") or cfg.get("num_local_experts") or 1, cfg.get("moe_intermediate_size"))
    m = load(model_dir)
    sd = m.state_dict()
    I = cfg.get("moe_intermediate_size")
    with torch.no_grad():
        for it in items:
            if it.kind != "lora":
                continue
            d = it.delta()
            if it.expert is not None:
                layer_key = it.module.rsplit(".experts.", 1)[0] + ".experts"
                proj = it.leaf
                if proj in ("gate_proj", "up_proj"):
                    w = sd[layer_key + ".gate_up_proj"]
                    sl = slice(0, I) if proj == "gate_proj" else slice(I, 2 * I)
                    w[it.expert, sl] += d
                else:
                    sd[layer_key + ".down_proj"][it.expert] += d
            else:
                sd[it.module + ".weight"] += d
        m.eval()
        return m(input_ids=x).logits


def tiny_world(d: Path) -> dict:
    """dense (qwen3), its sibling, an unrelated dense model, a MoE (qwen3_moe) model and adapters for them.

    Shared by the session fixture ``tiny`` of tests/port, tests/verify and tests/drift.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {"dir": d}
        out["dense"] = make_model(d / "dense", "qwen3", seed=0)
        out["sib"] = sibling_of(out["dense"], d / "dense-sib")
        out["other"] = make_model(d / "other", "qwen3", seed=7)
        out["moe"] = make_model(d / "moe", "qwen3_moe", seed=0)
        out["lora"] = peft_adapter(out["dense"], d / "lora")
        out["v4"] = v4_moe_adapter(out["moe"], d / "v4")
    return out
