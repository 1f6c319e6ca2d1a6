"""Synthetic prompts for distillation (research 6.4 step 1) and TiTok-style excess selection (step 3).

Sources, any of:
* ``seeds``: a few example prompts (seeds.jsonl: {"prompt": ...} or {"input": ...} or {"text": ...} per line).
  `from_seeds` infers the fixed frame (longest common prefix/suffix of the seeds) and varies the middle by
  character-class-preserving substitution (letters -> letters, digits -> digits, ...), with lengths drawn from the
  seeds' range widened by the expected sampling gap (`length_range`): the template is read off the seeds, never
  off test data.
* ``template``: a string with slots ``{letters:5-10}``, ``{digits:1-3}``, ``{word}``, ``{choice:a|b|c}``.
* ``sample_prompts``: free sampling from a model (the source+adapter, temperature 1, top-p 0.9) after the seeds'
  common prefix, kept when it ends with the seeds' common suffix.
Filters: exact de-duplication, a leakage guard (``exclude``: items equal to a known test prompt are dropped and
counted; max character-8-gram overlap is reported).
"""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path

_CLASSES = [string.ascii_lowercase, string.ascii_uppercase, string.digits]


def load_seeds(path) -> list[dict]:
    """seeds.jsonl -> [{"prompt": str, "output": str | None}]."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        d = json.loads(line)
        p = d.get("prompt", d.get("input", d.get("text")))
        if p is None:
            from regraft.errors import InputError

            raise InputError(f"{path}: each line needs a 'prompt' (or 'input'/'text') field")
        out.append({"prompt": p, "output": d.get("output", d.get("completion"))})
    return out


def common_frame(seeds: list[str]) -> tuple[str, str]:
    import os

    pre = os.path.commonprefix(seeds)
    suf = os.path.commonprefix([s[len(pre):][::-1] for s in seeds])[::-1]
    return pre, suf


def _class_of(ch: str) -> str | None:
    for c in _CLASSES:
        if ch in c:
            return c
    return None


def mutate(middle: str, rng: random.Random, lo: int, hi: int) -> str:
    """Same character classes as ``middle`` (letters stay letters...), new random content, length in [lo, hi]."""
    n = rng.randint(lo, hi)
    if not middle:
        return ""
    out = []
    for k in range(n):
        ch = middle[min(int(k * len(middle) / max(n, 1)), len(middle) - 1)]
        c = _class_of(ch)
        out.append(rng.choice(c) if c else ch)
    return "".join(out)


def length_range(lengths: list[int]) -> tuple[int, int]:
    """The range of lengths to generate from a few seeds' lengths: the seeds' own range widened on each side by
    ceil((max - min) / (n - 1)), the expected gap between a uniform sample's extremes and the true bounds. Five
    seeds drawn from lengths 5-10 rarely include both 5 and 10; a student never shown a length fails on it
    (measured: EM 0.00 on the 5-letter items when the 5 seeds spanned 6-10). Seeds of one length stay fixed."""
    lo, hi, n = min(lengths), max(lengths), len(lengths)
    if n < 2 or hi == lo:
        return lo, hi
    g = -(-(hi - lo) // (n - 1))
    return max(1, lo - g), hi + g


def from_seeds(seeds: list[str], n: int, seed: int = 0, exclude=()) -> list[str]:
    """``n`` new prompts in the seeds' fixed frame, middles of the seeds' character classes and of lengths in
    `length_range` of theirs."""
    pre, suf = common_frame(seeds)
    mids = [s[len(pre):len(s) - len(suf)] for s in seeds]
    lo, hi = length_range([len(m) for m in mids])
    rng = random.Random(seed)
    out, seen, tries = [], set(exclude) | set(), 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        p = pre + mutate(rng.choice(mids), rng, lo, hi) + suf
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


_SLOT = re.compile(r"\{(letters|digits|word|choice)(?::([^}]*))?\}")


def from_template(template: str, n: int, seed: int = 0, exclude=()) -> list[str]:
    rng = random.Random(seed)

    def fill(m):
        kind, arg = m.group(1), m.group(2)
        if kind == "choice":
            return rng.choice(arg.split("|"))
        lo, hi = (int(x) for x in (arg or "3-8").split("-"))
        k = rng.randint(lo, hi)
        if kind == "digits":
            return "".join(rng.choice(string.digits) for _ in range(k))
        if kind == "word":
            cons, vows = "bcdfghjklmnprstvz", "aeiou"
            return "".join(rng.choice(cons) if i % 2 == 0 else rng.choice(vows) for i in range(k))
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(k))

    out, seen, tries = [], set(exclude), 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        p = _SLOT.sub(fill, template)
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def sample_prompts(model, tokenizer, seeds: list[str], n: int, seed: int = 0, max_len: int = 48,
                   temperature: float = 1.0, top_p: float = 0.9, exclude=()) -> list[str]:
    """Free sampling after the seeds' common prefix; kept when the text ends with the seeds' common suffix."""
    import torch

    pre, suf = common_frame(seeds)
    g = torch.Generator(device="cpu").manual_seed(seed)
    out, seen = [], set(exclude)
    ids0 = tokenizer(pre, add_special_tokens=False)["input_ids"]
    stop = max(len(s) for s in seeds) + 8
    with torch.no_grad():
        for _ in range(4 * n):
            x = torch.tensor([ids0], device=model.device)
            text = pre
            for _ in range(max_len):
                logits = model(input_ids=x).logits[0, -1].float() / max(temperature, 1e-5)
                p = torch.softmax(logits, -1).cpu()
                sp, si = p.sort(descending=True)
                keep = (sp.cumsum(0) - sp) < top_p
                sp = sp * keep
                t = si[torch.multinomial(sp / sp.sum(), 1, generator=g)].item()
                x = torch.cat([x, torch.tensor([[t]], device=model.device)], 1)
                text = tokenizer.decode(x[0].tolist(), skip_special_tokens=False)
                if (suf and text.endswith(suf)) or len(text) > stop:
                    break
            if (not suf or text.endswith(suf)) and text not in seen and len(text) > len(pre) + len(suf):
                seen.add(text)
                out.append(text)
            if len(out) >= n:
                break
    return out


def leakage(prompts: list[str], test_prompts: list[str], n: int = 8) -> dict:
    """Exact-match rate and max character n-gram overlap (fraction of a prompt's n-grams found in the test set)."""
    tset = set(test_prompts)
    grams = set()
    for t in test_prompts:
        grams.update(t[i:i + n] for i in range(len(t) - n + 1))
    exact = sum(p in tset for p in prompts)
    mx = 0.0
    for p in prompts:
        g = [p[i:i + n] for i in range(len(p) - n + 1)]
        if g:
            mx = max(mx, sum(x in grams for x in g) / len(g))
    return {"exact": exact, "exact_rate": exact / max(len(prompts), 1), f"max_char{n}gram_overlap": round(mx, 4)}


def select_by_excess(excess: list[float], keep: float) -> list[int]:
    """Indices of the top ``keep`` fraction of prompts by mean excess (TiTok), in the original order."""
    k = max(1, int(round(len(excess) * keep)))
    order = sorted(range(len(excess)), key=lambda i: -excess[i])[:k]
    return sorted(order)


def token_mask(excess_tokens, frac: float):
    """Boolean mask of the top ``frac`` tokens by excess within a batch (1-D torch tensor of excess values)."""
    import torch

    n = excess_tokens.numel()
    k = max(1, int(round(n * frac)))
    if k >= n:
        return torch.ones(n, dtype=torch.bool)
    thr = excess_tokens.kthvalue(n - k + 1).values
    return excess_tokens >= thr
