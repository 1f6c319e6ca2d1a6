"""Routing signals that work with small local models: pure functions over what the small model and the retriever
returned. The orchestrator collects the raw material; ``decide`` (policy.py) and ``regraft calibrate`` use these.

- ``quantile``: per-token log-probability (or top-1/top-2 margin) quantiles. Token-level cascades (Gupta et al.,
  "Language Model Cascades: Token-level uncertainty and beyond", ICLR 2024) show that the sequence mean is biased by
  length (one wrong token among many confident ones barely moves it) and that low quantiles of per-token
  uncertainty defer better.
- ``context_coverage``: a model-free sufficient-context check: the share of the question's content terms that occur
  in the retrieved evidence (Self-Route, Li et al. 2024; "Sufficient Context", Joren et al., ICLR 2025: when the
  context is insufficient, small models answer anyway instead of abstaining).
- ``answerability_prompt`` / ``read_answerability``: the Self-Route check asked of the small model itself
  ("can the question be answered from the evidence?"), read from the logprob of yes/no when the server returns it.
- ``agreement``: the share of k sampled answers that agree with the draft (BEST-Route, Ding et al., ICML 2025, uses
  best-of-n sampling; self-consistency as the confidence).
- ``features``: the vector a trained confidence classifier (RouteLLM / Arch-Router style) reads.
"""

from __future__ import annotations

import math
import re

STOPWORDS = frozenset(
    "a an and are as at be by can could did do does for from had has have how i in is it its of on or our please "
    "should tell that the their there these this those to was we were what when where which who whom whose why will "
    "with would you your me my about than then so if not no yes".split()
)


def quantile(values, q: float) -> float | None:
    """Linear-interpolated ``q`` quantile (0 = min, 0.5 = median); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = min(max(q, 0.0), 1.0) * (len(xs) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def terms(text: str) -> list[str]:
    """Content terms: lower-case words of 2+ characters that are not stop words (digits count)."""
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 2 and w not in STOPWORDS]


def context_coverage(question: str, evidence: list[str]) -> float | None:
    """Share of the question's distinct content terms found as whole words in the evidence; None without evidence
    or without content terms."""
    q = set(terms(question))
    if not q or not evidence:
        return None
    ev = set(terms(" ".join(evidence)))
    return len(q & ev) / len(q)


def normalise_answer(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def agreement(draft: str, samples: list[str]) -> float | None:
    """Share of sampled answers equal to the draft after normalisation (case, punctuation, spacing)."""
    if not samples:
        return None
    d = normalise_answer(draft)
    return sum(normalise_answer(s) == d for s in samples) / len(samples)


ANSWERABILITY_PROMPT = ("Can the question be answered from the evidence above? Reply yes or no.\nQuestion: {question}")


def answerability_prompt(question: str) -> str:
    return ANSWERABILITY_PROMPT.format(question=question)


def read_answerability(content: str, first_token_top: list[dict] | None) -> float | None:
    """P(yes) for an answerability reply: from the first token's top logprobs when given (yes vs no mass), else
    1.0 / 0.0 from the text, else None."""
    if first_token_top:
        py = pn = 0.0
        for t in first_token_top:
            tok = str(t.get("token", "")).strip().lower()
            lp = t.get("logprob")
            if not isinstance(lp, (int, float)):
                continue
            if tok in ("yes", "y"):
                py += math.exp(lp)
            elif tok in ("no", "n"):
                pn += math.exp(lp)
        if py + pn > 0:
            return py / (py + pn)
    w = re.findall(r"[a-z]+", content.lower())
    if w and w[0] in ("yes", "no"):
        return 1.0 if w[0] == "yes" else 0.0
    return None


# -- the classifier's inputs ------------------------------------------------------------------------------------

FEATURES = ("mean_logprob", "min_logprob", "logprob_q", "margin_q", "retrieval_top_score", "context_coverage",
            "answerability", "agreement", "answer_chars_log", "finish_length")


def features(s, q: float = 0.1) -> dict[str, float | None]:
    """The numeric signals of one draft (``Signals``), None where unavailable."""
    lps = s.token_logprobs or None
    margins = s.token_margins or None
    return {
        "mean_logprob": (sum(lps) / len(lps)) if lps else s.mean_logprob,
        "min_logprob": min(lps) if lps else s.min_logprob,
        "logprob_q": quantile(lps, q) if lps else None,
        "margin_q": quantile(margins, q) if margins else None,
        "retrieval_top_score": s.retrieval_top_score,
        "context_coverage": s.context_coverage,
        "answerability": s.answerability,
        "agreement": s.agreement,
        "answer_chars_log": math.log1p(len(s.answer.strip())),
        "finish_length": 1.0 if s.finish_reason == "length" else 0.0,
    }


def router_score(s, router: dict, q: float = 0.1) -> float | None:
    """P(the small model's draft is good) from a logistic model stored in the policy (``policy.router``):
    standardised features (missing -> the training mean), coefficients and an intercept. Pure."""
    if not router:
        return None
    f = features(s, q)
    z = float(router["intercept"])
    for name, mu, sd, w in zip(router["features"], router["mean"], router["scale"], router["coef"]):
        v = f.get(name)
        x = 0.0 if v is None else (v - mu) / (sd or 1.0)
        z += w * x
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
