"""bench.zoo: a reproducible world of tiny Qwen-family models and LoRA adapters, trained from scratch on CPU.

Python API (all offline, all seeded)::

    from bench.zoo import build_zoo, zoo_path, load_task, evaluate, reparam_maps

    build_zoo(tier="smoke", only=None, quiet=False) -> Path   # tier dir; builds missing members (locked)
    zoo_path(tier, name, build=True) -> Path                  # "S", "T1", "T3", "T3p", "SM", "master", "Pk",
                                                              # "lora/A/S" (== "S+A"): model or adapter dir
    load_task(name) -> Task                                   # name in "A","B","C"; .train/.dev/.test lists of
                                                              # Example(prompt, gold, eos)
    evaluate(model_dir, adapter_dir=None, task="A", n=None, split="test", generic=False)
        -> {"exact_match": float, "gold_nll": float, "n": int[, "generic_nll": float]}
    reparam_maps(tier="smoke") -> dict                        # Pk's ground-truth maps (see reparam.py)
    weights_hash(dir) -> str                                  # sha256 over the dir's *.safetensors

Model dirs are standard Hugging Face dirs (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json with a ChatML chat template, generation_config.json); adapters are standard PEFT
dirs whose ``base_model_name_or_path`` is the relative id ``zoo/<model>`` (relative to the tier dir).
CLI: ``python -m bench.zoo build|eval|list|report`` (also ``python bench/zoo ...``). See bench/README.md.
"""

from __future__ import annotations

import json

from .build import (CODE_VERSION, TIERS, build_zoo, manifest, member_key, member_state, tier_dir,
                    weights_hash, zoo_path)
from .world import Example, Task, load_task


def evaluate(model_dir, adapter_dir=None, task: str = "A", n: int | None = None, split: str = "test",
             generic: bool = False) -> dict:
    """{"exact_match", "gold_nll", "n"} (+ "generic_nll", Task C "format_rate") of a model dir (+ adapter).
    (Imports torch lazily, so build-only users such as the member child processes stay light.)"""
    from .scores import evaluate as _evaluate

    return _evaluate(model_dir, adapter_dir, task=task, n=n, split=split, generic=generic)


def reparam_maps(tier: str = "smoke") -> dict:
    """Pk's maps: ``hidden`` (new->old, -1 = padded), per layer ``kv_groups``, ``q_within_group``, ``ffn``."""
    return json.loads((zoo_path(tier, "Pk") / "reparam_maps.json").read_text())


__all__ = ["build_zoo", "zoo_path", "load_task", "evaluate", "reparam_maps", "weights_hash", "manifest",
           "tier_dir", "member_key", "member_state", "TIERS", "CODE_VERSION", "Example", "Task"]
