"""Fit the escalation policy on a labelled dev set for a target master share (``regraft calibrate``).

A dev item is a question (or OpenAI messages) and its gold answer. ``collect`` runs each item through the hybrid
twice (route=small, which records every signal, and route=master) and scores both answers; ``calibrate`` then,
with the pure ``decide`` semantics (escalate when a signal is below its threshold):

- sweeps each signal's threshold and keeps, per signal, the one with the best dev quality at a master share no
  larger than the target (``routing_curve``, ``best_at_share``). The target is a cap on new traffic, and a share
  measured on n dev items is itself a sample: by default a point is eligible only when the Wilson upper bound of
  its share (confidence 0.9) is within the target, so the policy lands at or under the target on unseen requests
  (``share_confidence=0.5`` takes the dev share at face value);
- trains a logistic confidence classifier over all available signals (RouteLLM-style: the label is "escalating
  would not help", i.e. small quality >= master quality) and scores it with k-fold cross-validation on the dev set,
  so it competes with the single signals on held-out predictions;
- writes the winner into a policy file (all other learned thresholds off; the guards the policy already had -
  empty answer, tool failures, phrases, format - stay as they were).

Everything here is pure and deterministic except ``collect``, which calls the endpoints.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace

from .policy import Policy, Signals
from .signals import FEATURES, features, normalise_answer, quantile, router_score

# name -> (escalate_if key, value getter(signals, q, router))
SIGNALS = {
    "mean_logprob": ("mean_logprob_below", lambda s, q, r: s.mean_logprob),
    "min_logprob": ("min_logprob_below", lambda s, q, r: s.min_logprob),
    "logprob_quantile": ("logprob_quantile_below", lambda s, q, r: quantile(s.token_logprobs, q)
                         if s.token_logprobs else None),
    "margin_quantile": ("margin_quantile_below", lambda s, q, r: quantile(s.token_margins, q)
                        if s.token_margins else None),
    "retrieval_score": ("retrieval_score_below", lambda s, q, r: s.retrieval_top_score),
    "context_coverage": ("context_coverage_below", lambda s, q, r: s.context_coverage),
    "answerability": ("answerability_below", lambda s, q, r: s.answerability),
    "agreement": ("agreement_below", lambda s, q, r: s.agreement),
    "router": ("router_score_below", lambda s, q, r: router_score(s, r, q) if r else None),
}


@dataclass
class Record:
    """One labelled dev item: the small model's signals and the quality of each model's answer (0..1)."""

    signals: Signals
    small_ok: float
    master_ok: float
    question: str = ""


def score(answer: str, gold: str, match: str = "exact") -> float:
    a, g = normalise_answer(answer), normalise_answer(gold)
    if match == "contains":
        return float(bool(g) and g in a)
    return float(a == g)


# -- curves ---------------------------------------------------------------------------------------------------

def _thresholds(values: list[float | None]) -> list[float]:
    xs = sorted({v for v in values if v is not None})
    if not xs:
        return []
    return [xs[0] - 1.0] + [(a + b) / 2 for a, b in zip(xs, xs[1:])] + [xs[-1] + 1.0]


def routing_curve(values: list[float | None], small_ok: list[float], master_ok: list[float]) -> list[dict]:
    """Quality and master share for every distinct threshold (escalate when value < threshold; a missing value is
    not escalated, as with ``missing_signal: ignore``)."""
    n = len(values)
    out = []
    for t in _thresholds(values):
        esc = [v is not None and v < t for v in values]
        out.append({"threshold": t, "master_share": sum(esc) / n,
                    "quality": sum(m if e else s for e, s, m in zip(esc, small_ok, master_ok)) / n})
    return out


def share_upper(share: float, n: int, confidence: float) -> float:
    """One-sided Wilson upper bound of a share measured on ``n`` items (``confidence`` 0.5: the share itself)."""
    from statistics import NormalDist

    if n <= 0 or confidence <= 0.5:
        return share
    z = NormalDist().inv_cdf(confidence)
    centre = share + z * z / (2 * n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return min(1.0, (centre + half) / (1 + z * z / n))


def best_at_share(curve: list[dict], target: float, n: int = 0, confidence: float = 0.5) -> dict | None:
    """The best point with master share <= target (the cheaper one on ties); with ``n`` and ``confidence`` > 0.5,
    the point's share upper bound (``share_upper``) must be within the target instead (a point that escalates
    nothing is always eligible)."""
    ok = [c for c in curve if c["master_share"] == 0 or share_upper(c["master_share"], n, confidence) <= target + 1e-12]
    return max(ok, key=lambda c: (c["quality"], -c["master_share"])) if ok else None


def random_quality(small_ok: list[float], master_ok: list[float], share: float) -> float:
    n = len(small_ok)
    return (1 - share) * sum(small_ok) / n + share * sum(master_ok) / n


def oracle(small_ok: list[float], master_ok: list[float]) -> dict:
    n = len(small_ok)
    esc = [m > s for s, m in zip(small_ok, master_ok)]
    return {"master_share": sum(esc) / n, "quality": sum(max(s, m) for s, m in zip(small_ok, master_ok)) / n}


# -- the classifier -------------------------------------------------------------------------------------------

def fit_router(sigs: list[Signals], labels: list[int], q: float = 0.1, l2: float = 1.0,
               names: tuple[str, ...] | None = None) -> dict | None:
    """L2-regularised logistic regression (Newton steps) predicting ``labels`` (1 = the small answer is good
    enough) from the standardised signal features; features that are missing everywhere or constant are left out.
    Returns the ``policy.router`` mapping, or None when no feature varies."""
    import numpy as np

    rows = [features(s, q) for s in sigs]
    names = names or tuple(f for f in FEATURES if len({r[f] for r in rows if r[f] is not None}) > 1)
    if not names:
        return None
    mean, scale = [], []
    for f in names:
        xs = [r[f] for r in rows if r[f] is not None]
        mu = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - mu) ** 2 for x in xs) / len(xs)) or 1.0
        mean.append(mu)
        scale.append(sd)
    X = np.array([[0.0 if r[f] is None else (r[f] - mu) / sd for f, mu, sd in zip(names, mean, scale)] for r in rows])
    X = np.hstack([np.ones((len(rows), 1)), X])
    y = np.array(labels, dtype=float)
    w = np.zeros(X.shape[1])
    reg = np.eye(X.shape[1]) * l2
    reg[0, 0] = 0.0
    for _ in range(50):
        p = 1 / (1 + np.exp(-np.clip(X @ w, -60, 60)))
        g = X.T @ (p - y) + reg @ w
        H = X.T @ (X * (p * (1 - p))[:, None]) + reg + 1e-9 * np.eye(X.shape[1])
        step = np.linalg.solve(H, g)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return {"features": list(names), "mean": mean, "scale": scale, "coef": [float(x) for x in w[1:]],
            "intercept": float(w[0]), "label": "small answer at least as good as the master's", "q": q, "l2": l2}


def router_labels(records: list[Record]) -> list[int]:
    return [int(r.small_ok >= r.master_ok) for r in records]


def cv_router_scores(records: list[Record], q: float = 0.1, folds: int = 5, l2: float = 1.0) -> list[float | None]:
    """Held-out router scores for every record (k-fold, deterministic interleaved folds)."""
    out: list[float | None] = [None] * len(records)
    labels = router_labels(records)
    for k in range(folds):
        train = [i for i in range(len(records)) if i % folds != k]
        router = fit_router([records[i].signals for i in train], [labels[i] for i in train], q, l2)
        for i in range(k, len(records), folds):
            out[i] = router_score(records[i].signals, router, q) if router else None
    return out


# -- the whole fit --------------------------------------------------------------------------------------------

def signal_values(records: list[Record], name: str, q: float, router: dict | None = None) -> list[float | None]:
    get = SIGNALS[name][1]
    return [get(r.signals, q, router) for r in records]


def calibrate(records: list[Record], target_share: float, base: Policy | None = None, q: float = 0.1,
              signals: tuple[str, ...] | None = None, share_confidence: float = 0.9) -> tuple[Policy, dict]:
    """The policy that maximises dev quality at master share <= target_share (the share's upper bound at
    ``share_confidence``, see ``share_upper``), and a report of every candidate."""
    if not records:
        from regraft.errors import InputError

        raise InputError("calibrate: the dev set is empty")
    base = base or Policy()
    s_ok = [r.small_ok for r in records]
    m_ok = [r.master_ok for r in records]
    cands = {}
    for name in signals or tuple(SIGNALS):
        if name == "router":
            vals = cv_router_scores(records, q)
        else:
            vals = signal_values(records, name, q)
        if sum(v is not None for v in vals) == 0:
            cands[name] = {"available": False}
            continue
        curve = routing_curve(vals, s_ok, m_ok)
        best = best_at_share(curve, target_share, len(records), share_confidence)
        cands[name] = {"available": True, "best": best, "coverage": sum(v is not None for v in vals) / len(vals)}
    usable = {k: v for k, v in cands.items() if v.get("best")}
    if not usable:
        from regraft.errors import InputError

        raise InputError("calibrate: no signal was available on the dev set (no logprobs, no retrieval, no checks)")
    winner = max(usable, key=lambda k: (usable[k]["best"]["quality"], -usable[k]["best"]["master_share"]))
    key = SIGNALS[winner][0]
    learned = {SIGNALS[k][0]: None for k in SIGNALS}
    router = None
    if winner == "router":
        router = fit_router([r.signals for r in records], router_labels(records), q)
        # the threshold on the in-sample scores of the final router, at the same target share
        vals = signal_values(records, "router", q, router)
        best = best_at_share(routing_curve(vals, s_ok, m_ok), target_share, len(records), share_confidence)
        threshold = best["threshold"]
    else:
        threshold = usable[winner]["best"]["threshold"]
    esc = replace(base.escalate_if, **{**learned, key: float(threshold), "logprob_quantile": q})
    policy = replace(base, escalate_if=esc, router=router)
    chosen = usable[winner]["best"]
    report = {"target_share": target_share, "share_confidence": share_confidence,
              "dev_share": chosen["master_share"],
              "share_upper": share_upper(chosen["master_share"], len(records), share_confidence),
              "n": len(records), "winner": winner, "threshold": threshold,
              "candidates": cands, "always_small": sum(s_ok) / len(s_ok), "always_master": sum(m_ok) / len(m_ok),
              "oracle": oracle(s_ok, m_ok)}
    return policy, report


def policy_to_dict(p: Policy) -> dict:
    """The policy as a file mapping (only what differs from the defaults, plus every escalate_if key)."""
    d = {"version": 1}
    default = Policy()
    for k, v in p.to_dict().items():
        if k == "escalate_if":
            esc = {}
            for ek, ev in v.items():
                esc[ek] = list(ev) if isinstance(ev, tuple) else ev
            d["escalate_if"] = esc
        elif v != getattr(default, k):
            d[k] = v
    return d


def write_policy(p: Policy, path, report: dict | None = None, inputs=(), force: bool = True) -> None:
    import yaml

    from regraft import outputs

    head = "# written by regraft calibrate"
    if report:
        b = report["candidates"][report["winner"]]["best"]
        head += (f": signal {report['winner']}, dev n={report['n']}, target master share {report['target_share']:.0%}"
                 f" -> dev quality {b['quality']:.3f} at {b['master_share']:.1%}"
                 + (f" (upper bound {report['share_upper']:.1%} at {report['share_confidence']:.0%} confidence)"
                    if report.get("share_confidence", 0.5) > 0.5 else ""))
    text = head + "\n" + yaml.safe_dump(policy_to_dict(p), sort_keys=False, width=110)
    outputs.write_text(path, text, inputs, force)


# -- collecting on live endpoints -----------------------------------------------------------------------------

async def collect(hybrid, items: list[tuple[list[dict], str]], match: str = "exact", concurrency: int = 4,
                  progress=None) -> list[Record]:
    """Run every (messages, gold) item with route=small (signals) and route=master, and score both answers."""
    from .orchestrator import _last_user_text

    sem = asyncio.Semaphore(concurrency)
    done = 0

    async def one(msgs, gold):
        nonlocal done
        async with sem:
            rs = await hybrid.answer(msgs, "small")
            rm = await hybrid.answer(msgs, "master")
        done += 1
        if progress:
            progress(done, len(items))
        sig = replace(rs.signals, user_choice="auto")
        return Record(sig, score(rs.answer, gold, match), score(rm.answer, gold, match), _last_user_text(msgs))

    return list(await asyncio.gather(*(one(m, g) for m, g in items)))
