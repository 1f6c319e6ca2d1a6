"""Pure comparisons of served token log-probabilities (no torch, no I/O): the numbers behind `verify --endpoint`.

A served generation is a list of `Pos`: the chosen token (its text, as the server names it: vLLM's decoded text,
``token_id:N`` with ``--return-tokens-as-token-ids``, llama.cpp's piece) with its log-probability and the top-k
alternatives. Two generations of the same prompt share their context up to the first position where the chosen
tokens differ; positions are compared up to and including that one (the next token's distribution is still
conditioned on the same text), never beyond.

`pos_diff` is a lower bound of max_t |log p(t) - log q(t)| over the union of both top-k sets: tokens in both are
compared exactly; a token in one top-k and absent from the other's is at most the other's k-th log-prob there.
`coarse_kl` is the KL divergence of the distributions coarsened to {top-k tokens of p, everything else}: a proper
KL (>= 0, <= the full KL), computable when q is known on p's top-k tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Pos:
    token: str
    logprob: float | None
    top: dict[str, float] = field(default_factory=dict)

    @property
    def argmax(self) -> str | None:
        if self.top:
            return max(self.top.items(), key=lambda kv: kv[1])[0]
        return self.token


def shared_prefix(a: list[Pos], b: list[Pos]) -> int:
    """Positions of ``a`` and ``b`` generated from the same context (up to and including the first divergence)."""
    n = 0
    for x, y in zip(a, b):
        n += 1
        if x.token != y.token:
            break
    return n


def pos_diff(x: Pos, y: Pos) -> float:
    """Lower bound of the largest |log-prob difference| between two next-token distributions (see module doc)."""
    tx = dict(x.top)
    ty = dict(y.top)
    if x.logprob is not None:
        tx.setdefault(x.token, x.logprob)
    if y.logprob is not None:
        ty.setdefault(y.token, y.logprob)
    if not tx or not ty:
        return 0.0 if x.token == y.token else math.inf
    d = 0.0
    for t in tx.keys() & ty.keys():
        d = max(d, abs(tx[t] - ty[t]))
    mx, my = min(tx.values()), min(ty.values())
    for t in tx.keys() - ty.keys():
        d = max(d, tx[t] - my)
    for t in ty.keys() - tx.keys():
        d = max(d, ty[t] - mx)
    return d


@dataclass
class PairStats:
    """Served generation A vs served generation B on the same prompts."""

    positions: int = 0  # compared positions (shared context)
    top1_agree: float | None = None  # fraction of compared positions with the same most likely token
    max_diff: float = 0.0  # largest pos_diff (nats)
    mean_diff: float = 0.0
    chosen_diff: float = 0.0  # largest |log p_A(y) - log p_B(y)| at A's chosen token where B also has it
    texts_identical: int = 0  # prompts whose generated token sequences are identical
    prompts: int = 0

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in self.__dict__.items()}


def compare_generations(a: list[list[Pos]], b: list[list[Pos]]) -> PairStats:
    s = PairStats(prompts=min(len(a), len(b)))
    diffs, agree, chosen = [], 0, 0.0
    for ga, gb in zip(a, b):
        n = shared_prefix(ga, gb)
        if n == len(ga) == len(gb) and all(x.token == y.token for x, y in zip(ga, gb)):
            s.texts_identical += 1
        for x, y in zip(ga[:n], gb[:n]):
            diffs.append(pos_diff(x, y))
            agree += x.argmax == y.argmax
            ly = y.top.get(x.token, y.logprob if y.token == x.token else None)
            if x.logprob is not None and ly is not None:
                chosen = max(chosen, abs(x.logprob - ly))
    s.positions = len(diffs)
    if diffs:
        s.top1_agree = agree / len(diffs)
        s.max_diff = max(diffs)
        finite = [d for d in diffs if math.isfinite(d)]
        s.mean_diff = sum(finite) / len(finite) if finite else math.inf
    s.chosen_diff = chosen
    return s


def coarse_kl(p_top: dict, q_logprob: dict) -> float:
    """KL(p || q) over {p's top-k tokens, the rest}; ``q_logprob`` gives q's log-prob of each of p's tokens."""
    kl, pm, qm = 0.0, 0.0, 0.0
    for t, lp in p_top.items():
        lq = q_logprob[t]
        p = math.exp(lp)
        kl += p * (lp - lq)
        pm += p
        qm += math.exp(lq)
    rest_p, rest_q = max(0.0, 1.0 - pm), max(1e-12, 1.0 - qm)
    if rest_p > 1e-9:
        kl += rest_p * math.log(rest_p / rest_q)
    return max(0.0, kl)


@dataclass
class RefStats:
    """Served generations vs a local model's full distributions at the same positions (teacher-forced)."""

    positions: int = 0
    top1_agree: float | None = None
    kl: float | None = None  # mean coarse KL(served || local) per token
    max_diff: float | None = None  # largest |log p_served(t) - log p_local(t)| over the served top-k tokens
    mean_diff: float | None = None  # mean over positions of that position's largest difference
    unmapped: int = 0  # served tokens that did not map to one local token id (comparison stopped there)

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in self.__dict__.items()}


def ref_stats(rows: list[tuple[dict, dict, str]], unmapped: int = 0) -> RefStats:
    """``rows``: per position (served top-k {token: logprob}, local log-probs of those tokens, local argmax token or
    None when the served top-1 cannot be told apart)."""
    s = RefStats(positions=len(rows), unmapped=unmapped)
    if not rows:
        return s
    kls, agree, judged, diffs = [], 0, 0, []
    for top, local, local_arg in rows:
        if not top:
            continue
        kls.append(coarse_kl(top, local))
        if local_arg is not None:  # None: the served top-1 text is ambiguous (two ids decode to it)
            judged += 1
            agree += max(top.items(), key=lambda kv: kv[1])[0] == local_arg
        diffs.append(max(abs(top[t] - local[t]) for t in top))
    s.positions = len(kls)
    if kls:
        s.kl, s.top1_agree = sum(kls) / len(kls), (agree / judged if judged else None)
        s.max_diff, s.mean_diff = max(diffs), sum(diffs) / len(diffs)
    return s
