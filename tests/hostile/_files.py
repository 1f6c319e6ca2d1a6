"""Small builders for real-looking inputs (model folders, adapters, safetensors files) used by the hostile tests."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

TINY_CONFIG = {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": 32,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
               "intermediate_size": 48, "vocab_size": 128, "max_position_embeddings": 256, "rope_theta": 10000.0,
               "tie_word_embeddings": True, "eos_token_id": 1, "bos_token_id": 0}


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]]) -> bytes:
    """A valid safetensors file with zero-filled tensors: {name: (dtype, shape)}."""
    sizes = {"F32": 4, "BF16": 2, "F16": 2}
    doc, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for d in shape:
            n *= d
        doc[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    header = json.dumps(doc).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * offset


def model_folder(d: Path, config: dict | None = None, weights: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config or TINY_CONFIG))
    (d / "generation_config.json").write_text(json.dumps({"temperature": 0.7, "eos_token_id": 1}))
    (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "chat_template":
                                                         "{% for m in messages %}{{ m['content'] }}{% endfor %}"}))
    if weights:
        (d / "model.safetensors").write_bytes(safetensors_bytes({"model.embed_tokens.weight": ("F32", [128, 32])}))
    return d


def adapter_folder(d: Path, base: str = "Qwen/Qwen3-8B", r: int = 4, hidden: int = 32, layers: int = 2) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": base, "task_type": "CAUSAL_LM"}))
    t = {}
    for i in range(layers):
        for m, out in (("q_proj", hidden), ("v_proj", hidden // 2)):
            k = f"base_model.model.model.layers.{i}.self_attn.{m}"
            t[f"{k}.lora_A.weight"] = ("F32", [r, hidden])
            t[f"{k}.lora_B.weight"] = ("F32", [out, r])
    (d / "adapter_model.safetensors").write_bytes(safetensors_bytes(t))
    return d


def tree_hashes(*roots: Path) -> dict[str, str]:
    """sha256 + mode + mtime of every file and link under ``roots`` (a changed input shows up here)."""
    out = {}
    for root in roots:
        root = Path(root)
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for p in paths:
            st = p.lstat()
            if p.is_symlink():
                out[str(p)] = f"link:{p.readlink()}"
            elif p.is_file():
                out[str(p)] = f"{hashlib.sha256(p.read_bytes()).hexdigest()}:{oct(st.st_mode)}:{st.st_mtime_ns}"
            elif p.is_dir():
                out[str(p)] = f"dir:{oct(st.st_mode)}"
    return out
