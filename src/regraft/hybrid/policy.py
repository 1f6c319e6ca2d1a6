"""Escalation policy as data, and the pure function that applies it.

A policy file (YAML or JSON) lists the conditions under which the small model's draft goes to the master:

    escalate_if:
      retrieval_score_below: 0.30     # best retrieved chunk's cosine similarity
      mean_logprob_below: -1.5        # small model's mean token log-probability (when the server returns them)
      min_logprob_below: null
      self_check_below: null          # small model's own 0..1 confidence (policy.self_check: true asks it)
      tool_failures_at_least: 1
      answer_chars_below: 1           # empty answer
      answer_chars_above: null
      finish_reason_length: true      # draft was cut off at max_tokens
      format: null                    # "json" or a regex the answer must match
      phrases: ["i don't know", "i am not sure", "cannot answer"]
      logprob_quantile_below: null    # the q-quantile (logprob_quantile) of per-token logprobs
      margin_quantile_below: null     # the same quantile of top-1 minus top-2 logprob per token
      context_coverage_below: null    # share of the question's terms found in the evidence
      answerability_below: null       # P(yes) of the small model's "answerable from the evidence?" (answerability_check)
      agreement_below: null           # share of sample_k sampled answers agreeing with the draft
      router_score_below: null        # P(draft good) from the trained classifier in `router`
    missing_signal: ignore            # or "escalate" when a signal the policy uses is unavailable
    ...

``regraft calibrate`` fits these thresholds (or the router) on a labelled dev set for a target master share.

``decide(signals, policy)`` is a pure function returning a ``Decision`` with the target and every reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from regraft.errors import FileFormatError, InputError


@dataclass(frozen=True)
class EscalateIf:
    retrieval_score_below: float | None = 0.30
    mean_logprob_below: float | None = -1.5
    min_logprob_below: float | None = None
    self_check_below: float | None = None
    tool_failures_at_least: int | None = 1
    answer_chars_below: int | None = 1
    answer_chars_above: int | None = None
    finish_reason_length: bool = True
    format: str | None = None
    phrases: tuple[str, ...] = ("i don't know", "i do not know", "i am not sure", "i'm not sure", "cannot answer")
    logprob_quantile: float = 0.1
    logprob_quantile_below: float | None = None
    margin_quantile_below: float | None = None
    context_coverage_below: float | None = None
    answerability_below: float | None = None
    agreement_below: float | None = None
    router_score_below: float | None = None
    response_format_violation: bool = True  # the draft is not the JSON that response_format asks for
    invalid_tool_calls: bool = True  # the draft calls a tool that does not exist or with arguments that are not JSON


@dataclass(frozen=True)
class Policy:
    escalate_if: EscalateIf = field(default_factory=EscalateIf)
    missing_signal: str = "ignore"  # "ignore" | "escalate"
    retrieval_k: int = 4
    evidence_min_score: float = 0.0
    evidence_token_budget: int = 1024
    small_max_tokens: int = 256
    master_max_tokens: int = 512
    send_draft: bool = True
    send_evidence: bool = True
    master_evidence: bool = True  # false: the master gets the request (and the draft) without the evidence
    self_check: bool = False
    max_tool_rounds: int = 3
    small_timeout_s: float = 60.0
    master_timeout_s: float = 120.0
    retries: int = 2
    degraded_ok: bool = True  # answer from the small model (flagged) when the master is down
    max_n: int = 8  # the largest `n` a client may ask for (each choice is generated)
    answerability_check: bool = False  # one extra small-model call: "answerable from the evidence?"
    sample_k: int = 0  # sampled answers from the small model for the agreement signal (0: off)
    sample_temperature: float = 0.8
    router: dict | None = None  # a trained confidence classifier (written by `regraft calibrate`)
    system_prompt: str = (
        "You are a helpful assistant. Answer using the evidence when it is relevant and cite sources as [n]."
    )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def needs_margins(self) -> bool:
        r = self.router or {}
        return self.escalate_if.margin_quantile_below is not None or "margin_q" in (r.get("features") or ())


@dataclass
class Signals:
    user_choice: str = "auto"  # auto | small | master
    retrieval_top_score: float | None = None
    retrieval_hits: int = 0
    mean_logprob: float | None = None
    min_logprob: float | None = None
    self_check: float | None = None
    tool_failures: int = 0
    answer: str = ""
    finish_reason: str | None = None
    small_error: str | None = None
    length_by_client: bool = False  # the draft stopped at the client's own max_tokens (not the policy's)
    token_logprobs: tuple[float, ...] | None = None
    token_margins: tuple[float, ...] | None = None
    context_coverage: float | None = None
    answerability: float | None = None
    agreement: float | None = None
    tool_calls: int = 0  # tool calls in the draft (the client's own tools)
    tool_call_errors: tuple[str, ...] = ()
    format_error: str | None = None  # why the draft is not what response_format asked for
    small_fits: bool = True
    master_fits: bool | None = None  # None: no master
    fit_detail: str = ""

    def to_dict(self, q: float = 0.1) -> dict:
        from .signals import quantile

        d = asdict(self)
        d["answer_chars"] = len(self.answer.strip())
        d.pop("answer")
        for k in ("token_logprobs", "token_margins"):
            d.pop(k)
        d["tokens"] = len(self.token_logprobs) if self.token_logprobs else None
        d["logprob_q"] = quantile(self.token_logprobs, q) if self.token_logprobs else None
        d["margin_q"] = quantile(self.token_margins, q) if self.token_margins else None
        d["tool_call_errors"] = list(self.tool_call_errors)
        return d


@dataclass
class Decision:
    target: str  # "small" | "master"
    reasons: list[str]
    escalate: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _format_ok(answer: str, fmt: str) -> bool:
    if fmt == "json":
        try:
            json.loads(answer)
            return True
        except (json.JSONDecodeError, ValueError):
            return False
    try:
        return re.fullmatch(fmt, answer.strip(), flags=re.S) is not None
    except re.error:
        return False


def decide(s: Signals, p: Policy) -> Decision:
    """Pure: which model answers, and every reason. No I/O."""
    from .signals import quantile, router_score

    if s.user_choice == "master":
        return Decision("master", ["user chose the master"], True)
    if s.user_choice == "small":
        return Decision("small", ["user chose the small model (no escalation)"], False)
    if not s.small_fits:
        return Decision("master", [f"request does not fit the small model; the master's window fits it: {s.fit_detail}"],
                        True)
    if s.small_error:
        return Decision("master", [f"small model failed: {s.small_error}"], True)
    e = p.escalate_if
    reasons: list[str] = []
    missing: list[str] = []

    def lt(name: str, value, threshold, fmt="{:.3f}"):
        if threshold is None:
            return
        if value is None:
            missing.append(name)
        elif value < threshold:
            reasons.append(f"{name} {fmt.format(value)} < {fmt.format(threshold)}")

    if e.retrieval_score_below is not None and s.retrieval_hits == 0 and s.retrieval_top_score is None:
        missing.append("retrieval score (no hits)")
    else:
        lt("retrieval score", s.retrieval_top_score, e.retrieval_score_below)
    lt("mean logprob", s.mean_logprob, e.mean_logprob_below)
    lt("min logprob", s.min_logprob, e.min_logprob_below)
    q = e.logprob_quantile
    lt(f"logprob q{q:g}", quantile(s.token_logprobs, q) if s.token_logprobs else None, e.logprob_quantile_below)
    lt(f"margin q{q:g}", quantile(s.token_margins, q) if s.token_margins else None, e.margin_quantile_below)
    lt("context coverage", s.context_coverage, e.context_coverage_below, "{:.2f}")
    lt("answerability", s.answerability, e.answerability_below, "{:.2f}")
    lt("agreement", s.agreement, e.agreement_below, "{:.2f}")
    if e.router_score_below is not None:
        lt("router score", router_score(s, p.router, q) if p.router else None, e.router_score_below)
    lt("self-check", s.self_check, e.self_check_below, "{:.2f}")
    if e.tool_failures_at_least is not None and s.tool_failures >= e.tool_failures_at_least:
        reasons.append(f"{s.tool_failures} tool failure(s) >= {e.tool_failures_at_least}")
    if e.invalid_tool_calls and s.tool_call_errors:
        reasons.append("draft tool call invalid: " + "; ".join(s.tool_call_errors))
    n = len(s.answer.strip())
    if e.answer_chars_below is not None and n < e.answer_chars_below and not s.tool_calls:
        reasons.append("empty answer" if n == 0 else f"answer {n} chars < {e.answer_chars_below}")
    if e.answer_chars_above is not None and n > e.answer_chars_above:
        reasons.append(f"answer {n} chars > {e.answer_chars_above}")
    if e.finish_reason_length and s.finish_reason == "length" and not s.length_by_client:
        reasons.append("draft cut off at max_tokens (finish_reason=length)")
    if e.format and n and not _format_ok(s.answer, e.format):
        reasons.append(f"answer does not match format {e.format!r}")
    if e.response_format_violation and s.format_error:
        reasons.append(s.format_error)
    low = s.answer.lower()
    hit = next((ph for ph in e.phrases if ph.lower() in low), None)
    if hit:
        reasons.append(f"draft says {hit!r}")
    if missing and p.missing_signal == "escalate":
        reasons.append("signal unavailable: " + ", ".join(missing))
    if reasons and s.master_fits is False:
        return Decision("small", reasons + [f"but the request does not fit the master, so the small model answers: "
                                            f"{s.fit_detail}"], False)
    if reasons:
        return Decision("master", reasons, True)
    ok = "all signals within policy"
    if missing:
        ok += " (not available: " + ", ".join(missing) + ")"
    return Decision("small", [ok], False)


# -- loading ------------------------------------------------------------------------------------------

def _build(cls, data: dict, where: str):
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise FileFormatError(
            f"policy {where}: unknown key(s) {', '.join(unknown)}; expected one of {', '.join(sorted(names))}"
        )
    kw = {}
    for k, v in data.items():
        f = names[k]
        default = f.default if f.default is not f.default_factory else None  # type: ignore[comparison-overlap]
        if k == "router":
            if v is not None:
                _check_router(v, where)
        elif k == "phrases":
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise FileFormatError(f"policy {where}.phrases: expected a list of strings, got {v!r}")
            v = tuple(v)
        elif v is not None and isinstance(default, bool) and not isinstance(v, bool):
            raise FileFormatError(f"policy {where}.{k}: expected true/false, got {v!r}")
        elif v is not None and isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise FileFormatError(f"policy {where}.{k}: expected a number, got {v!r}")
        elif v is not None and (k.endswith("_below") or k in ("tool_failures_at_least", "answer_chars_above")):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise FileFormatError(f"policy {where}.{k}: expected a number or null, got {v!r}")
        kw[k] = v
    return cls(**kw)


def policy_from_dict(data: dict, where: str = "<dict>") -> Policy:
    if not isinstance(data, dict):
        raise FileFormatError(f"policy {where}: expected a mapping at the top level, got {type(data).__name__}")
    data = dict(data)
    data.pop("version", None)
    esc = data.pop("escalate_if", None) or {}
    if not isinstance(esc, dict):
        raise FileFormatError(f"policy {where}.escalate_if: expected a mapping")
    p = _build(Policy, data, where)
    if p.missing_signal not in ("ignore", "escalate"):
        raise FileFormatError(f"policy {where}.missing_signal: expected 'ignore' or 'escalate', got {p.missing_signal!r}")
    e = _build(EscalateIf, esc, where + ".escalate_if")
    if not 0 <= e.logprob_quantile <= 1:
        raise FileFormatError(f"policy {where}.escalate_if.logprob_quantile: expected a number from 0 to 1, got "
                              f"{e.logprob_quantile!r}")
    for k, lo in (("max_n", 1), ("sample_k", 0), ("retrieval_k", 0), ("max_tool_rounds", 0)):
        if not isinstance(getattr(p, k), int) or getattr(p, k) < lo:
            raise FileFormatError(f"policy {where}.{k}: expected a whole number >= {lo}, got {getattr(p, k)!r}")
    if e.router_score_below is not None and not p.router:
        raise FileFormatError(f"policy {where}.escalate_if.router_score_below needs a `router` (written by "
                              "`regraft calibrate`)")
    if e.format is not None and not isinstance(e.format, str):
        raise FileFormatError(f"policy {where}.escalate_if.format: expected 'json' or a regex string, got "
                              f"{type(e.format).__name__}")
    if e.format and e.format != "json":
        try:
            re.compile(e.format)
        except (re.error, RecursionError, OverflowError) as err:
            raise FileFormatError(f"policy {where}.escalate_if.format: not 'json' nor a valid regex ({err})") from None
        from regraft.inspection.adapter import _pattern_risk

        risk = _pattern_risk(e.format)
        if risk:  # it runs on every answer: catastrophic backtracking would stall the server
            raise FileFormatError(f"policy {where}.escalate_if.format: the regex has {risk}, which can backtrack for "
                                  "minutes on an answer; simplify it")
    return Policy(**{**{f.name: getattr(p, f.name) for f in fields(Policy)}, "escalate_if": e})


def _check_router(r, where: str) -> None:
    from .signals import FEATURES

    if not isinstance(r, dict):
        raise FileFormatError(f"policy {where}.router: expected a mapping (features, mean, scale, coef, intercept)")
    for k in ("features", "mean", "scale", "coef"):
        if not isinstance(r.get(k), list):
            raise FileFormatError(f"policy {where}.router.{k}: expected a list")
    n = len(r["features"])
    if not n or any(len(r[k]) != n for k in ("mean", "scale", "coef")):
        raise FileFormatError(f"policy {where}.router: features, mean, scale and coef must have the same length")
    unknown = [f for f in r["features"] if f not in FEATURES]
    if unknown:
        raise FileFormatError(f"policy {where}.router.features: unknown {', '.join(map(str, unknown))}; expected "
                              f"some of {', '.join(FEATURES)}")
    nums = r["mean"] + r["scale"] + r["coef"] + [r.get("intercept")]
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in nums):
        raise FileFormatError(f"policy {where}.router: mean, scale, coef and intercept must be numbers")


def load_policy(path: str | Path | None) -> Policy:
    if path is None:
        return Policy()
    p = Path(path)
    if not p.is_file():
        raise InputError(f"policy {p} does not exist; expected a YAML/JSON policy file (see docs/hybrid.md)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FileFormatError(f"policy {p} is not UTF-8 text; expected a YAML/JSON policy file") from None
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            from regraft.inspection.files import load_yaml

            data = load_yaml(text)
    except Exception as err:  # yaml.YAMLError / JSONDecodeError
        raise FileFormatError(f"policy {p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {_one(err)}") from err
    return policy_from_dict(data or {}, str(p))


def _one(e: Exception) -> str:
    return " ".join(str(e).split())[:200]
