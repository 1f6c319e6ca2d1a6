"""Bundled examples, materialised on first use into the user cache (deterministic, stdlib only).

``example:qwen3-30b-a3b-attn`` is a PEFT LoRA (r=16, alpha=32, q/k/v/o, 48 layers, bf16) for
Qwen/Qwen3-30B-A3B-Base, laid out exactly as PEFT 0.21 saves it. Its values are seeded pseudo-random
(small, finite bf16); it is for `check`/`inspect`, which read metadata only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib import resources
from pathlib import Path

from regraft.errors import InputError

EXAMPLES = ("qwen3-30b-a3b-attn",)


def cache_root() -> Path:
    return Path(os.environ.get("REGRAFT_CACHE", Path.home() / ".cache" / "regraft")) / "examples"


def resolve_adapter_arg(arg: str) -> Path:
    if not arg.startswith("example:"):
        return Path(arg)
    name = arg.split(":", 1)[1]
    if name not in EXAMPLES:
        raise InputError(f"Unknown example adapter '{name}'. Known: {', '.join(EXAMPLES)}.")
    return materialise(name)


def _bf16(n: int, seed: str) -> bytes:
    """n finite bf16 values in about +-[0.004, 0.016): random mantissa and sign, fixed small exponent."""
    raw = bytearray(hashlib.shake_256(seed.encode()).digest(2 * n))
    hi = bytes(0x3C if b & 1 == 0 else 0xBC for b in range(256))  # sign from the low bit, exponent 2^-7
    raw[1::2] = raw[1::2].translate(hi)
    return bytes(raw)


def materialise(name: str) -> Path:
    from regraft.inspection.safetensors_header import write_safetensors

    src = resources.files("regraft.examples").joinpath(name)
    config = json.loads(src.joinpath("adapter_config.json").read_text())
    spec = json.loads(src.joinpath("tensors.json").read_text())
    digest = hashlib.sha256(json.dumps([config, spec], sort_keys=True).encode()).hexdigest()[:12]
    out = cache_root() / f"{name}-{digest}"
    if (out / "adapter_model.safetensors").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {}
    for layer in range(spec["layers"]):
        for module, (out_f, in_f) in spec["modules"].items():
            key = f"base_model.model.model.layers.{layer}.{module}"
            r = config["r"]
            tensors[f"{key}.lora_A.weight"] = ("BF16", (r, in_f), _bf16(r * in_f, f"{name}/{key}/A"))
            tensors[f"{key}.lora_B.weight"] = ("BF16", (out_f, r), _bf16(out_f * r, f"{name}/{key}/B"))
    write_safetensors(tmp / "adapter_model.safetensors", tensors)
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
    try:
        os.replace(tmp, out)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return out
