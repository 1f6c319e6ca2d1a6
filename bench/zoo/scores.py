"""Scores: exact match with greedy decoding, gold NLL (teacher-forced), generic-text NLL.

Greedy decoding groups prompts by token length so no padding is ever needed (exact, no position
tricks); it stops at ``<|endoftext|>`` or ``<|im_end|>`` or after ``max_new`` tokens.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import torch

from . import world

STOP_IDS = (world.PAD_ID, world.IM_END_ID)


@torch.no_grad()
def greedy(model, prompts: list[str], max_new: int = 24, batch: int = 256, with_stop: bool = False) -> list:
    """Greedy continuations (text before the first end token); with ``with_stop``, ``(text, stop_id)``
    pairs where ``stop_id`` is the end token that stopped it (None: ran out of ``max_new``)."""
    enc = world.encode_batch(prompts)
    groups = defaultdict(list)
    for i, ids in enumerate(enc):
        groups[len(ids)].append(i)
    out: list = [""] * len(prompts)
    for _, idx in sorted(groups.items()):
        for s in range(0, len(idx), batch):
            chunk = idx[s : s + batch]
            x = torch.tensor([enc[i] for i in chunk])
            done = torch.zeros(len(chunk), dtype=torch.bool)
            gen = []
            for _ in range(max_new):
                nxt = model(input_ids=x).logits[:, -1].argmax(-1)
                gen.append(nxt)
                done |= (nxt == STOP_IDS[0]) | (nxt == STOP_IDS[1])
                x = torch.cat([x, nxt[:, None]], 1)
                if bool(done.all()):
                    break
            g = torch.stack(gen, 1).tolist()
            for row, i in zip(g, chunk):
                cut = [j for j, t in enumerate(row) if t in STOP_IDS]
                text = world.decode(row[: cut[0]] if cut else row)
                out[i] = (text, row[cut[0]] if cut else None) if with_stop else text
    return out


FORMAT_C = re.compile(r"<< [^<>]+ >>")


def format_compliant(text: str, stop_id) -> bool:
    """Task C's style: the whole answer is ``<< ... >>`` and the turn ends with ``<|im_end|>``."""
    return bool(FORMAT_C.fullmatch(text)) and stop_id == world.IM_END_ID


@torch.no_grad()
def completion_nll(model, pairs: list[tuple[str, str]], batch: int = 256) -> float:
    """Mean NLL (nats/token) of each completion given its prompt, over all completion tokens."""
    from .train import IGNORE, collate

    tot, n = 0.0, 0
    for s in range(0, len(pairs), batch):
        ids, labels, mask = collate(pairs[s : s + batch], max_len=128)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        tgt = labels[:, 1:]
        lp = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE, reduction="sum"
        )
        tot += float(lp)
        n += int((tgt != IGNORE).sum())
    return tot / max(n, 1)


def task_scores(model, task: str = "A", split: str = "test", n: int | None = None,
                max_new: int = 24, with_items: bool = False) -> dict:
    """{"exact_match", "gold_nll", "n"} on a task split; Task C adds "format_rate" (see `format_compliant`);
    ``with_items`` adds "_correct": the per-item 0/1 exact matches (for bootstrap CIs)."""
    exs = getattr(world.load_task(task), split)[:n]
    preds = greedy(model, [e.prompt for e in exs], max_new=max_new, with_stop=True)
    em = sum(p == e.gold for (p, _), e in zip(preds, exs)) / len(exs)
    nll = completion_nll(model, [(e.prompt, e.gold + e.eos) for e in exs])
    res = {"exact_match": em, "gold_nll": nll, "n": len(exs)}
    if with_items:
        res["_correct"] = [int(p == e.gold) for (p, _), e in zip(preds, exs)]
    if task == "C":
        res["format_rate"] = sum(format_compliant(p, s) for p, s in preds) / len(exs)
    return res


def generic_nll(model, n: int = 400) -> float:
    return completion_nll(model, [("", t) for t in world.generic_texts(n)])


def load(model_dir, adapter_dir=None):
    """Load a zoo model (and optionally a PEFT adapter) for evaluation, offline."""
    from transformers import AutoModelForCausalLM

    from regraft.errors import InputError

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise InputError(f"cannot load model {model_dir}: no config.json there; build the zoo first "
                         "(python -m bench.zoo build --tier smoke)")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        if not (Path(adapter_dir) / "adapter_config.json").is_file():
            raise InputError(f"cannot load adapter {adapter_dir}: no adapter_config.json there")
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.eval()


def evaluate(model_dir, adapter_dir=None, task: str = "A", n: int | None = None, split: str = "test",
             generic: bool = False) -> dict:
    """{"exact_match", "gold_nll", "n"} (+ "generic_nll" if ``generic``) of a model dir (+ adapter)."""
    info = Path(model_dir) / "zoo_member.json"
    if info.is_file():  # score in the world the model was trained in (a tier's Task A variant)
        import json

        world.configure(**json.loads(info.read_text()).get("world", {}))
    model = load(model_dir, adapter_dir)
    torch.manual_seed(0)
    res = task_scores(model, task, split, n)
    if generic:
        res["generic_nll"] = generic_nll(model)
    return res
