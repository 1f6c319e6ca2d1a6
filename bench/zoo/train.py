"""One training loop for every zoo step: pretraining, continued training, growth and LoRA.

A *mixture* is a list of ``(weight, source)`` pairs, where ``source`` is ``"pretrain"``, ``"chat"``
or ``"task:A"`` (``"task:B"``, ``"task:C"``). Each step draws its batch from ``Random((seed, step))``,
so a run is a pure function of (model init, mixture, seed, steps, lr).
Task examples are trained on their outputs only (labels -100 on the prompt), like SFT.
"""

from __future__ import annotations

import math
import random

import torch

from . import world

IGNORE = -100


def _pairs(mixture, rng: random.Random, n: int) -> list[tuple[str, str]]:
    weights = [w for w, _ in mixture]
    out = []
    for src in rng.choices([s for _, s in mixture], weights=weights, k=n):
        if src == "pretrain":
            out.append(("", world.pretrain_doc(rng)))
        elif src == "chat":
            out.append(("", world.chat_doc(rng)))
        elif src.startswith("task:"):
            ex = rng.choice(world.load_task(src[5:]).train)
            out.append((ex.prompt, ex.gold + ex.eos))
        else:
            raise ValueError(f"unknown mixture source {src}")
    return out


def collate(pairs: list[tuple[str, str]], max_len: int = 64):
    """Right-padded input_ids / labels / attention_mask; labels cover the completion only."""
    prompts = world.encode_batch([p for p, _ in pairs])
    comps = world.encode_batch([c for _, c in pairs])
    seqs = [(p + c)[:max_len] for p, c in zip(prompts, comps)]
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), world.PAD_ID, dtype=torch.long)
    labels = torch.full((len(seqs), L), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, len(p) : len(s)] = torch.tensor(s[len(p) :])
    return ids, labels, mask


def batch_fn(mixture, seed: int, batch: int):
    def fn(step: int):
        rng = random.Random(seed * 1_000_003 + step)
        return collate(_pairs(mixture, rng, batch))

    return fn


def lr_at(step: int, steps: int, lr: float, warmup: float = 0.05, floor: float = 0.1) -> float:
    w = max(1, int(steps * warmup))
    if step < w:
        return lr * (step + 1) / w
    t = (step - w) / max(1, steps - w)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def train(model, mixture, *, steps: int, lr: float, seed: int, batch: int = 64, desc: str = "train",
          weight_decay: float = 0.0, progress=None) -> dict:
    """Train ``model`` in place (only parameters with requires_grad); returns loss statistics."""
    torch.manual_seed(seed)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    get = batch_fn(mixture, seed, batch)
    task = progress.add_task(desc, total=steps) if progress is not None else None
    losses, tokens = [], 0
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
        ids, labels, mask = get(step)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        tokens += int(mask.sum())
        if task is not None:
            progress.update(task, advance=1, description=f"{desc} loss {losses[-1]:.3f}")
    model.eval()
    k = max(1, steps // 20)
    return {"steps": steps, "loss_start": sum(losses[:k]) / k, "loss_end": sum(losses[-k:]) / k,
            "tokens": tokens}


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def add_lora(model, r: int = 8, alpha: int = 16, seed: int = 0):
    """Wrap ``model`` in a PEFT LoRA (r, alpha, all 7 projections; MoE experts are auto-converted)."""
    import warnings

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=LORA_TARGETS, lora_dropout=0.0,
                     task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's misleading rank_pattern warning on MoE
        return get_peft_model(model, cfg)
