"""A LoRA as per-module numpy factors (A, B, scale) for the methods that compute with them, and the writer of a
PEFT LoRA from such factors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROLES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_MOD = re.compile(r"^(?:.*\.)?layers\.(\d+)\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$")


@dataclass
class LoraFactor:
    module: str  # e.g. model.layers.3.self_attn.q_proj
    layer: int
    role: str
    A: object  # numpy r x d_in
    B: object  # numpy d_out x r
    scale: float


def read_factors(adapter_dir) -> tuple[object, dict[str, LoraFactor], list[str]]:
    """(AdapterSpec, module -> LoraFactor for dense linear LoRA modules, skipped module names with a reason)."""
    import numpy as np
    from safetensors import safe_open

    from regraft.inspection.adapter import read_adapter

    spec = read_adapter(adapter_dir)
    out, skipped = {}, []
    f = safe_open(str(Path(spec.path) / spec.weights_file), framework="pt") if spec.weights_file.endswith(
        ".safetensors") else None
    for m in spec.modules:
        mm = _MOD.match(m.module)
        if m.kind != "lora" or mm is None or m.a is None or m.b is None or m.expert is not None or f is None:
            skipped.append(f"{m.module} ({m.kind}{', expert' if m.expert is not None else ''}: not projected)")
            continue
        A = f.get_tensor(m.a.name).double().numpy()
        B = f.get_tensor(m.b.name).double().numpy()
        out[m.module] = LoraFactor(m.module, int(mm.group(1)), mm.group(3), A.astype(np.float64),
                                   B.astype(np.float64), spec.scale(m.module))
    return spec, out, skipped


def module_name(layer: int, role: str) -> str:
    part = "self_attn" if role in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
    return f"model.layers.{layer}.{part}.{role}"


def write_lora(out: Path, spec, factors: dict[str, tuple], target_dir, report: dict, force: bool = False,
               inputs=()) -> Path:
    """Write a PEFT LoRA atomically (regraft.port.write). ``factors``: module -> (A, B, scale applied).
    Scales are folded into B against the config's alpha/r, so rank/alpha semantics stay those of the source."""
    import math

    import torch

    from regraft.port.write import check_output, write_peft

    out = check_output(out, [spec.path, target_dir, *inputs], force)
    r, alpha, rs = int(spec.r), float(spec.alpha), bool(spec.use_rslora)
    s_cfg = alpha / math.sqrt(r) if rs else alpha / r
    tensors, names = {}, []
    for name, (A, B, s) in sorted(factors.items()):
        A = torch.as_tensor(A, dtype=torch.float32)
        B = torch.as_tensor(B, dtype=torch.float32) * float(s / s_cfg)
        if A.shape[0] != r:  # rank_pattern module: zero-pad to the config rank (exact)
            pad = r - A.shape[0]
            A = torch.cat([A, A.new_zeros(pad, A.shape[1])]) if pad > 0 else A[:r]
            B = torch.cat([B, B.new_zeros(B.shape[0], pad)], 1) if pad > 0 else B[:, :r]
        tensors[f"base_model.model.{name}.lora_A.weight"] = A.contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = B.contiguous()
        names.append(name)
    cfg = {k: v for k, v in dict(spec.config).items()
           if k not in ("rank_pattern", "alpha_pattern", "layers_to_transform", "layers_pattern",
                        "target_parameters", "modules_to_save", "use_dora")}
    cfg.update({"peft_type": "LORA", "r": r, "lora_alpha": alpha, "use_rslora": rs, "target_modules": names,
                "base_model_name_or_path": str(target_dir), "rank_pattern": {}, "alpha_pattern": {},
                "task_type": spec.config.get("task_type") or "CAUSAL_LM"})
    return write_peft(out, cfg, tensors, report)
