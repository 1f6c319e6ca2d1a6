"""Adapter weights synthesised at test time: the tensor names and shapes PEFT saves for an adapter_config.json on a
base model, written as a valid safetensors file whose data region is a sparse run of zeros (no disk, no torch).

Names follow PEFT's save format: ``base_model.model.<module>.lora_A.weight`` [r, in] / ``lora_B.weight`` [out, r]
for every linear module of the base matched by ``target_modules`` (a list: exact name or '.'-suffix; a string:
regex fullmatch; "all-linear": every linear of the layers), in ``layers_to_transform``, with ``rank_pattern``;
DoRA adds ``lora_magnitude_vector`` [out]; ``modules_to_save`` a full copy ``<module>.weight``. An MLX-LM config
(``lora_parameters``, ``num_layers``) is turned into the PEFT adapter it stands for: q_proj/v_proj of the last
``num_layers`` layers, base = its ``model``.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def mlx_to_peft(cfg: dict) -> dict:
    """The PEFT adapter_config an MLX-LM adapters/adapter_config.json describes (for check; weights synthesised)."""
    lp = cfg.get("lora_parameters") or {}
    r = int(lp.get("rank", cfg.get("lora_rank", 8)))
    scale = float(lp.get("scale", 20.0))
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": scale * r,
            "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": cfg.get("model"),
            "_mlx_num_layers": int(cfg.get("num_layers", cfg.get("lora_layers", 16)))}


def is_mlx(cfg: dict) -> bool:
    return "lora_parameters" in cfg and "peft_type" not in cfg


def _targets(cfg: dict):
    tm = cfg.get("target_modules")
    if tm is None:  # PEFT's default for llama / qwen / mistral / gemma: q_proj, v_proj
        tm = ["q_proj", "v_proj"]
    if tm == "all-linear":
        return lambda name: True
    if isinstance(tm, str):
        pat = re.compile(tm)
        return lambda name: bool(pat.fullmatch(name))
    names = list(tm or [])
    return lambda name: any(name == t or name.endswith("." + t) for t in names)


def _rank(cfg: dict, module: str) -> int:
    for key, r in (cfg.get("rank_pattern") or {}).items():
        if re.match(rf"(^|.*\.){key}$", module):
            return int(r)
    return int(cfg.get("r", 8))


def peft_tensors(cfg: dict, arch, dtype: str = "BF16") -> dict[str, tuple[str, tuple[int, ...]]]:
    """PEFT key -> (dtype, shape) for ``cfg`` on ``arch`` (regraft's Architecture of the base, disk namespace)."""
    match = _targets(cfg)
    n = arch.num_layers or 0
    layers = cfg.get("layers_to_transform")
    if "_mlx_num_layers" in cfg:
        layers = list(range(max(0, n - cfg["_mlx_num_layers"]), n))
    if isinstance(layers, int):
        layers = [layers]
    keep = set(layers) if layers is not None else set(range(n))
    save = list(cfg.get("modules_to_save") or [])
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for i in sorted(keep):
        for m in arch.layer_modules(i, "disk", expand_experts=True):
            if m.kind != "linear" or m.shape is None or not match(m.name):
                continue
            r = _rank(cfg, m.name)
            key = "base_model.model." + m.name
            out[key + ".lora_A.weight"] = (dtype, (r, m.shape[1]))
            out[key + ".lora_B.weight"] = (dtype, (m.shape[0], r))
            if cfg.get("use_dora"):
                out[key + ".lora_magnitude_vector"] = (dtype, (m.shape[0],))
    for g in arch.globals("disk"):
        if g.shape is None:
            continue
        leaf = g.name.rsplit(".", 1)[-1]
        if g.kind == "linear" and match(g.name) and cfg.get("target_modules") != "all-linear":
            r = _rank(cfg, g.name)
            out[f"base_model.model.{g.name}.lora_A.weight"] = (dtype, (r, g.shape[1]))
            out[f"base_model.model.{g.name}.lora_B.weight"] = (dtype, (g.shape[0], r))
        if leaf in save or g.name in save:
            out[f"base_model.model.{g.name}.weight"] = (dtype, tuple(g.shape))
    return out


def write_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]], data=None) -> int:
    """A valid safetensors file: header, then a sparse data region of zeros (truncate, nothing written), or, with
    ``data`` (name, number of values -> bytes), the bytes it returns for each tensor."""
    header, off = {}, 0
    for name, (dt, shape) in tensors.items():
        n = BYTES[dt]
        for d in shape:
            n *= d
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        if data is not None:
            for name, (dt, _shape) in tensors.items():
                f.write(data(name, (header[name]["data_offsets"][1] - header[name]["data_offsets"][0]) // BYTES[dt]))
        f.truncate(8 + len(raw) + off)
    return off


def model_tensors(arch, dtype: str = "BF16") -> dict[str, tuple[str, tuple[int, ...]]]:
    """Checkpoint name -> (dtype, shape) of every tensor a model of ``arch`` saves (disk namespace, experts
    expanded, tied modules left out): what RG113 compares the safetensors headers with."""
    out = {}
    for m in arch.modules("disk", expand_experts=True):
        if m.tied_to or not m.shape:
            continue
        for name in m.param_names():
            out[name] = (dtype, tuple(m.shape) if not name.endswith(".bias") else (m.shape[0],))
    return out


def synth_adapter(folder: Path, cfg: dict, base_spec, dtype: str = "BF16") -> Path:
    """Write adapter_config.json (PEFT form) + adapter_model.safetensors for ``cfg`` on ``base_spec``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if is_mlx(cfg):
        cfg = mlx_to_peft(cfg)
    tensors = peft_tensors(cfg, base_spec.arch, dtype)
    clean = {k: v for k, v in cfg.items() if not k.startswith("_")}
    (folder / "adapter_config.json").write_text(json.dumps(clean, indent=2))
    write_safetensors(folder / "adapter_model.safetensors", tensors)
    return folder
