"""Tiny real models (torch) for the conversion tests: merge deltas by hand, load converted adapters in PEFT."""

from __future__ import annotations

import json
from pathlib import Path

from tests.factories import ids, load, make_model, peft_adapter

EXPERTS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def moe_world(d: Path) -> dict:
    """A qwen3_moe (H=32, I=16: 2*I == H, the shape-blind case) and a PEFT >= 0.19 fused adapter on it."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        moe = make_model(d / "moe", "qwen3_moe", seed=0)
        fused = peft_adapter(moe, d / "fused", targets=["q_proj"], target_parameters=EXPERTS, r=2, alpha=4)
        dense = make_model(d / "dense", "qwen3", seed=0)
    cfg = json.loads((moe / "config.json").read_text())
    return {"moe": moe, "fused": fused, "dense": dense, "E": cfg.get("num_experts") or cfg["num_local_experts"], "H": cfg["hidden_size"],
            "I": cfg["moe_intermediate_size"], "x": ids()}


def hand_merged_logits(model_dir: Path, dense: dict, experts: dict, x):
    """Logits of the base with deltas added by hand: dense {module: [out, in]}, experts {param_key: [E, out, in]}."""
    import torch

    m = load(model_dir)
    sd = m.state_dict()
    with torch.no_grad():
        for mod, d in dense.items():
            sd[mod + ".weight"] += d
        for key, d in experts.items():
            sd[key] += d
        m.eval()
        return m(input_ids=x).logits


def save_adapter(folder: Path, tensors: dict, config: dict, weights: str = "adapter_model.safetensors") -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / weights))
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def read_adapter_files(folder: Path, weights: str = "adapter_model.safetensors"):
    from safetensors.torch import load_file

    return load_file(str(folder / weights)), json.loads((folder / "adapter_config.json").read_text())
