"""Synthetic prompts for distillation (docs/transfer.md, distill step 1) and TiTok-style excess selection
(step 3).

Sources, any of:
* ``seeds``: a few example prompts (seeds.jsonl: {"prompt": ...} or {"input": ...} or {"text": ...} per line).
  `from_seeds` infers the fixed frame (longest common prefix/suffix of the seeds) and varies the middle by
  character-class-preserving substitution (letters -> letters, digits -> digits, ...), with lengths drawn from the
  seeds' range widened by the expected sampling gap (`length_range`): the template is read off the seeds, never
  off test data.
* ``template``: a string with slots ``{letters:5-10}``, ``{digits:1-3}``, ``{word}``, ``{choice:a|b|c}``.
* ``from_samples``: the source+adapter (the teacher's model) samples the middle after the seeds' common prefix
  (temperature 1, top-p 0.95), cut where the common suffix begins: for seeds in words (chat turns, several
  commands), where character substitution makes gibberish.
Filters: exact de-duplication, a leakage guard (``exclude``: items equal to a known test prompt are dropped and
counted; max character-8-gram overlap is reported).
"""

from __future__ import annotations

import random
import re
import string
from pathlib import Path

_CLASSES = [string.ascii_lowercase, string.ascii_uppercase, string.digits]


def load_seeds(path) -> list[dict]:
    """seeds.jsonl -> [{"prompt": str, "output": str | None}]."""
    from regraft.inspection.files import read_jsonl

    out = []
    for d in read_jsonl(Path(path), "--prompts file", ("prompt", "input", "text")):
        p = next(d[k] for k in ("prompt", "input", "text") if isinstance(d.get(k), str))
        o = d.get("output", d.get("completion"))
        out.append({"prompt": p, "output": o if isinstance(o, str) else None})
    return out


def seed_prompts(seeds) -> list[str]:
    """The prompts of ``seeds``: a seeds.jsonl path (`load_seeds`) or a list of prompt strings."""
    if seeds is None:
        return []
    return [s["prompt"] for s in load_seeds(seeds)] if isinstance(seeds, (str, Path)) else list(seeds)


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


def from_samples(teacher, seeds: list[str], n: int, seed: int = 0, exclude=(), temperature: float = 1.0,
                 top_p: float = 0.95, rounds: int = 4, batch: int = 128, prog=None) -> list[str]:
    """``n`` prompts sampled from ``teacher`` (the source+adapter: a `LocalTeacher` / `StreamedTeacher`) after the
    seeds' common prefix, cut where the seeds' common suffix begins (at its first line: a chat suffix
    "<|im_end|>\n<|im_start|>assistant\n" begins at "<|im_end|>"), then the whole suffix appended as in the seeds.

    For seeds whose middles are words, not character strings (chat turns, mixed commands), where
    character-class substitution (`from_seeds`) makes gibberish: the adapter's own model writes the middles, so
    they follow what it was trained on. A sample is kept when it reaches the suffix's beginning (or, with no
    suffix, a line end) within 3x the longest seed middle, has no special token in it, is new and is not in ``exclude``.
    Up to ``rounds`` x ``n`` samples are drawn; fewer than ``n`` may come back (the caller tops up from seeds)."""
    import torch

    tok = teacher.tok
    pre, suf = common_frame(seeds)
    longest = max(len(s) - len(pre) - len(suf) for s in seeds)
    n_pre = len(tok(pre, add_special_tokens=False)["input_ids"])
    max_new = max(8, 3 * max(len(tok(s, add_special_tokens=False)["input_ids"]) - n_pre for s in seeds))
    specials = [t for t in (tok.all_special_tokens or []) if t]
    head = (suf.split("\n")[0] or suf) if suf else "\n"  # where the suffix begins (its first line)
    g = torch.Generator().manual_seed(seed)
    out, seen = [], set(exclude)
    task = prog.add_task("sampling prompts (source+adapter)", total=n) if prog is not None else None
    for _ in range(rounds):
        need = n - len(out)
        if need <= 0:
            break
        if task is not None:
            prog.update(task, completed=len(out))
        for ids in teacher.generate([pre] * min(max(need * 2, 16), 4 * n), max_new, batch, temperature, top_p, g):
            text = tok.decode(ids, skip_special_tokens=False)
            cut = text.find(head)
            mid = text[:cut] if cut > 0 else None
            if not mid or len(mid) > 3 * max(longest, 1) or any(t in mid for t in specials):
                continue
            p = pre + mid + suf
            if p not in seen:
                seen.add(p)
                out.append(p)
                if len(out) >= n:
                    break
    if task is not None:
        prog.update(task, completed=n, description=f"sampled prompts: {len(out)} of {n}")
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


def generic_seqs(calib_texts, tok, n: int = 64, L: int = 64):
    """Token sequences of generic text (str, tokenised by ``tok``; or token-id lists) for the side-effect checks."""
    if not calib_texts:
        return []
    if not isinstance(calib_texts[0], str):
        return [list(s)[:L] for s in calib_texts[:n]]
    seqs = [tok(t, add_special_tokens=False)["input_ids"][:L] for t in calib_texts[:n]]
    return [s for s in seqs if len(s) > 1]
