"""How each zoo member is made: pretrain, continue, grow, reparam (Pk) and LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import models, reparam, train, world

ROLES = {
    "S": "source, Qwen2-like (the 'Qwen2.5-1.5B' of the pair)",
    "T1": "S + instruct (ChatML) training: the Base->Instruct sibling",
    "T2": "S grown in width and depth, then trained on: a lineage upgrade (Yi-6B->Yi-1.5-9B-like)",
    "T3": "Qwen3-like, new shapes, trained independently (Qwen2.5->Qwen3, 30B-A3B->32B-like)",
    "T3p": "T3-prime: S's exact shapes, another seed; same shapes, no lineage",
    "SM": "Qwen3-MoE source (30B-A3B-like)",
    "master": "same tokenizer, larger, trained with the task data mixed in; the hybrid runtime's strong model",
    "Pk": "exact function-preserving reparametrisation of S (permuted + zero-padded); maps in reparam_maps.json",
}


def _mixture(spec) -> list:
    mix = spec.get("mixture", "pretrain")
    if mix == "pretrain":
        return [(1.0, "pretrain")]
    if mix == "chat":
        return [(1.0, "chat")]
    if mix == "pretrain+tasks":
        tasks = spec["tasks"]
        return [(0.4, "pretrain")] + [(0.6 / len(tasks), f"task:{t}") for t in tasks]
    return [tuple(x) for x in mix]


def lora_mixture(spec) -> list:
    """A LoRA's batches: the task (loss on outputs) plus ``replay`` of generic pretraining documents
    (full-sequence loss), which keeps the adapter from overwriting the base's generic skills."""
    r = float(spec.get("replay", 0.0))
    return [(1.0 - r, f"task:{spec['task']}")] + ([(r, "pretrain")] if r > 0 else [])


def train_lora(model, spec: dict, batch: int, seed: int | None = None, desc: str = "LoRA", progress=None):
    """(peft model, loss statistics): a LoRA of recipe ``spec`` (r, alpha, task, replay, steps, lr, seed; ``seed``
    overrides it) trained on ``model`` the zoo's way: the task plus generic replay (`lora_mixture`)."""
    s = spec["seed"] if seed is None else seed
    pm = train.add_lora(model, r=spec["r"], alpha=spec["alpha"], seed=s)
    stats = train.train(pm, lora_mixture(spec), steps=spec["steps"], lr=spec["lr"], seed=s, batch=batch, desc=desc,
                        progress=progress)
    return pm, stats


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _fast(model):
    try:  # eager attention is ~10% faster than sdpa at these sizes on CPU; numerics are identical in fp32
        model.set_attn_implementation("eager")
    except Exception:
        model.config._attn_implementation = "eager"
    return model


def save_model(model, out: Path, name: str, extra: dict | None = None):
    from transformers import GenerationConfig

    model.config.architectures = [model.__class__.__name__]
    model.save_pretrained(out)
    world.hf_tokenizer().save_pretrained(out)
    GenerationConfig(eos_token_id=[world.IM_END_ID, world.PAD_ID], pad_token_id=world.PAD_ID,
                     do_sample=False, max_new_tokens=24).save_pretrained(out)
    info = {"name": name, "role": ROLES.get(name, ""), "params": models.n_params(model), "world": world.settings()}
    info.update(extra or {})
    (out / "zoo_member.json").write_text(json.dumps(info, indent=1))


def build_member(tier: str, cfg: dict, name: str, root: Path, out: Path, progress) -> dict:
    """Build zoo member ``name`` of the tier config ``cfg`` into ``out`` (its dependencies are read from
    ``root``); returns the member's info (kind, params, loss statistics)."""
    from .build import member_spec

    spec = member_spec(cfg, name)
    batch = spec["batch"]
    if spec["kind"] == "lora":
        task, base = spec["task"], spec["base"]
        model = _fast(_load(root / base))
        peft_model, stats = train_lora(model, spec, batch, desc=f"{name} (LoRA)", progress=progress)
        peft_model.save_pretrained(out)
        p = out / "adapter_config.json"
        ac = json.loads(p.read_text())
        ac["base_model_name_or_path"] = base
        p.write_text(json.dumps(ac, indent=2, sort_keys=True))
        return {"kind": "lora", "task": task, "base": base, "replay": spec.get("replay", 0.0), **stats}

    mname = spec["name"]
    kind = spec["kind"]
    extra = {"kind": kind}
    if kind == "pretrain":
        model = models.new_model(spec["shape"], spec["seed"])
    elif kind in ("continue", "grow", "reparam"):
        model = _load(root / "zoo" / spec["from"])
        if kind in ("grow", "reparam"):
            maps = reparam.random_maps(model.config, seed=spec["seed"], pad_hidden=spec.get("pad_hidden", 0),
                                       pad_ffn=spec.get("pad_ffn", 0),
                                       extra_heads_per_group=spec.get("extra_heads_per_group", 0),
                                       permute=spec.get("permute", kind == "reparam"),
                                       insert_identity_after=tuple(spec.get("insert_identity_after", ())))
            model = reparam.reparametrise(model, maps, noise=spec.get("noise", 0.0), seed=spec["seed"])
            if kind == "reparam":
                (out / "reparam_maps.json").write_text(json.dumps(maps))
    else:
        raise ValueError(f"unknown member kind {kind}")
    stats = {}
    if spec.get("steps", 0) > 0:
        _fast(model)
        stats = train.train(model, _mixture(spec), steps=spec["steps"], lr=spec["lr"], seed=spec["seed"],
                            batch=batch, desc=f"{name} ({kind})", progress=progress)
    model.config._attn_implementation = "sdpa"
    save_model(model, out, mname, {**extra, **stats})
    return {**extra, "params": models.n_params(model), **stats}
