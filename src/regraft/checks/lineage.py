"""Lineage from names alone (pure): is the target the adapter's declared base, a sibling of it, or unrelated?

Siblings share one pretrained trunk and differ by post-training: Base / Instruct / Thinking / 2504 / 2507 /
quantised re-uploads. Their shapes are equal, so weights *load*, but the adapter was trained on other weights.
When both checkpoints are local, ``regraft drift`` measures how far apart they are.
"""

from __future__ import annotations

import re

_SUFFIXES = re.compile(
    r"(-(base|instruct|chat|thinking|it|hf|fp8|fp16|bf16|awq|gptq|int4|int8|gguf|mlx|\d{4}|v\d+(\.\d+)*))+$", re.I)
_CACHE_PATH = re.compile(r"models--([^/]+)--([^/]+)")

# Families whose tokenizers share one vocabulary (ids and merges): Qwen2 / 2.5 / 3 (incl. MoE, Next, Coder).
TOKENIZER_FAMILY = {
    "qwen2": "qwen2-vocab", "qwen2_moe": "qwen2-vocab", "qwen3": "qwen2-vocab", "qwen3_moe": "qwen2-vocab",
    "qwen3_next": "qwen2-vocab", "qwen3_5": "qwen3.5-vocab", "qwen3_5_moe": "qwen3.5-vocab",
    "llama": "llama3-vocab", "mistral": "mistral-v3-vocab",
}


def normalise_base(name: str | None) -> str | None:
    """'…/models--Qwen--Qwen3-8B/snapshots/…' -> 'Qwen/Qwen3-8B'; local paths keep their last component."""
    if not name:
        return None
    m = _CACHE_PATH.search(name)
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    return name.rstrip("/")


def stem(name: str) -> str:
    """Family-size stem: 'Qwen/Qwen3-30B-A3B-Instruct-2507' -> 'qwen3-30b-a3b'."""
    short = name.rstrip("/").split("/")[-1]
    return _SUFFIXES.sub("", short).lower()


def relation(declared: str | None, target_name: str, target_path: str | None = None) -> str:
    """same | sibling | unrelated | unknown (no declared base)."""
    base = normalise_base(declared)
    if not base:
        return "unknown"
    cands = {target_name.rstrip("/")}
    if target_path:
        cands.add(str(target_path).rstrip("/"))
    if base in cands or any(c.lower() == base.lower() for c in cands):
        return "same"
    base_short = base.split("/")[-1].lower()
    if any(c.split("/")[-1].lower() == base_short for c in cands):
        return "same" if "/" not in base or base.count("/") == 1 else "sibling"
    if stem(base) == stem(target_name):
        return "sibling"
    return "unrelated"
