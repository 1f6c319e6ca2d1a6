"""The hybrid orchestrator: retrieve -> render within budget -> small model (+tools) -> signals -> decide ->
maybe the master (with the draft and the evidence) -> answer + trace. Degraded mode when the master is down.

One ``Hybrid`` serves many concurrent requests (asyncio); retrieval (embedding + vector search) runs in a worker
thread. When the master fails, it is marked down for ``master_cooldown_s`` so later requests answer from the
small model at once (flagged ``degraded``) instead of each waiting for timeouts.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from regraft.errors import InputError

from .backends import Backend, BackendError, ChatResult
from .chat_request import ChatRequest, RequestError, apply_stop, json_violation
from .contract import Side, render_chat
from .policy import Decision, Policy, Signals, decide
from .signals import agreement, answerability_prompt, context_coverage, read_answerability
from .store import Hit
from .tools import ToolRegistry
from .trace import Trace


from regraft.errors import OversizeError  # noqa: E402,F401  (defined in errors.py)


_THINK = re.compile(r"<think>.*?</think>\s*", re.S)


def strip_thinking(text: str) -> str:
    """The answer without a reasoning block; text without one is returned exactly as the model wrote it."""
    if "</think>" not in text:
        return text
    text = _THINK.sub("", text)
    if "</think>" in text:  # Thinking-2507 style: no opening tag
        text = text.split("</think>", 1)[1]
    return text.strip()


@dataclass
class HybridResult:
    answer: str
    route: str  # small | master
    model: str
    escalated: bool
    degraded: bool
    decision: Decision
    signals: Signals
    evidence: list[Hit]
    trace: Trace
    draft: str = ""
    usage: dict = field(default_factory=dict)  # summed over every backend call of the request
    tool_results: list[dict] = field(default_factory=list)
    finish_reason: str | None = "stop"
    choices: list[dict] = field(default_factory=list)  # OpenAI choice objects, as returned to the client
    usage_by_model: dict = field(default_factory=dict)  # {"small": {...}, "master": {...}}
    bounded: list[dict] = field(default_factory=list)  # client parameters the policy bounded
    metadata: dict | None = None
    server_tools: bool = True  # False when the client sent its own tools

    def meta(self, with_trace: bool = True) -> dict:
        d = {
            "route": self.route,
            "model": self.model,
            "escalated": self.escalated,
            "degraded": self.degraded,
            "reasons": self.decision.reasons,
            "signals": self.signals.to_dict(),
            "evidence": [{"source": h.path, "score": round(h.score, 4)} for h in self.evidence],
            "tools": self.tool_results,
            "usage_by_model": self.usage_by_model,
            "bounded": self.bounded,
        }
        if not self.server_tools:
            d["server_tools"] = "off: the client sent its own tools"
        if self.metadata is not None:
            d["metadata"] = self.metadata
        if with_trace:
            d["trace"] = self.trace.to_list()
        return d


def _last_user_text(messages: list[dict]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):  # OpenAI content parts
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
    return ""


def validate_messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise InputError("request: 'messages' must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool", "developer"):
            raise InputError(f"request: messages[{i}] needs a role of system/user/assistant/tool")
        if m.get("content") is not None and not isinstance(m["content"], (str, list)):
            raise InputError(f"request: messages[{i}].content must be a string or a list of parts")
    if not _last_user_text(messages):
        raise InputError("request: no user message with text content")
    return messages


def _add_usage(acc: dict, u: dict | None) -> None:
    for k, v in (u or {}).items():
        if k in ("prompt_tokens", "completion_tokens", "total_tokens") and isinstance(v, int) and not isinstance(v, bool):
            acc[k] = acc.get(k, 0) + v


def _check_tool_calls(tool_calls: list[dict], tools: list[dict] | None) -> list[str]:
    names = {t["function"]["name"] for t in tools or []}
    errs = []
    for tc in tool_calls:
        f = tc.get("function") if isinstance(tc, dict) else None
        name = f.get("name") if isinstance(f, dict) else None
        if name not in names:
            errs.append(f"unknown tool {str(name)[:40]!r}")
            continue
        try:
            json.loads(f.get("arguments") or "{}")
        except (ValueError, TypeError):
            errs.append(f"{name}: arguments are not JSON")
    return errs


def _trim_top(lp: dict | None, k: int | None) -> dict | None:
    """The client's view of a logprobs object: top_logprobs cut to what it asked (we may ask more for signals)."""
    if lp is None:
        return None
    out = dict(lp)
    content = []
    for t in lp.get("content") or []:
        t = dict(t)
        t["top_logprobs"] = list(t.get("top_logprobs") or [])[: (k or 0)]
        content.append(t)
    out["content"] = content
    out.setdefault("refusal", None)
    return out


def _cut_logprobs(lp: dict | None, text: str) -> dict | None:
    """Keep the tokens of a logprobs object that lie within ``text`` (after a stop sequence cut)."""
    if lp is None:
        return None
    kept, n = [], 0
    for t in lp.get("content") or []:
        tok = str(t.get("token", ""))
        if n + len(tok) > len(text):
            break
        kept.append(t)
        n += len(tok)
    return {**lp, "content": kept}


@dataclass
class _Req:
    """The per-request state: the client's parameters and what the request accumulated."""

    opts: ChatRequest
    trace: Trace
    usage: dict = field(default_factory=dict)
    usage_by_model: dict = field(default_factory=dict)
    calls: int = 0

    def add_usage(self, role: str, u: dict | None) -> None:
        _add_usage(self.usage, u)
        _add_usage(self.usage_by_model.setdefault(role, {}), u)


@dataclass
class _Plan:
    """One model's rendered prompt for this request, or why it does not fit."""

    role: str
    max_tokens: int
    messages: list[dict] | None = None
    evidence: list[Hit] = field(default_factory=list)
    prompt_tokens: int = 0
    error: OversizeError | None = None

    @property
    def fits(self) -> bool:
        return self.error is None


class Hybrid:
    def __init__(self, small: Backend, master: Backend | None = None, *, store=None, embedder=None,
                 policy: Policy | None = None, tools: ToolRegistry | None = None,
                 small_side: Side | None = None, master_side: Side | None = None,
                 master_cooldown_s: float = 30.0):
        self.small = small
        self.master = master
        self.store = store
        self.embedder = embedder
        self.policy = policy or Policy()
        self.tools = tools if tools is not None and len(tools) else None
        self.small_side = small_side or Side("small", small.base_url, small.model)
        self.master_side = master_side or (Side("master", master.base_url, master.model) if master else None)
        self.master_cooldown_s = master_cooldown_s
        self.master_down_until = 0.0
        self.master_down_reason = ""

    # -- retrieval ------------------------------------------------------------------------------------
    def _retrieve_sync(self, query: str, k: int) -> list[Hit]:
        if self.store is None or self.embedder is None:
            return []
        vec = self.embedder.embed([query])[0]
        return self.store.search(vec, k)

    def retriever(self, query: str, k: int) -> list[Hit]:
        """Synchronous retriever for the `retrieve` tool."""
        return self._retrieve_sync(query, k)

    async def retrieve(self, query: str, k: int | None = None) -> list[Hit]:
        return await asyncio.to_thread(self._retrieve_sync, query, k or self.policy.retrieval_k)

    # -- prompt -----------------------------------------------------------------------------------------
    def _budget(self, side: Side | None, max_tokens: int) -> int | None:
        if side is None or not side.context_window:
            return None
        return side.context_window - max_tokens

    def _count(self, side: Side, messages: list[dict], tools: list[dict] | None = None) -> int:
        if side.chat_template:
            try:
                return side.count(render_chat(side.chat_template, messages, tools))
            except Exception:
                pass
        return side.count("\n".join(str(m.get("content") or "") for m in messages)) + 8 * len(messages)

    def _tool_schemas(self, opts: ChatRequest | None) -> list[dict] | None:
        if opts is not None and opts.tools is not None:
            return opts.tools
        return self.tools.schemas() if self.tools else None

    def build_messages(self, messages: list[dict], hits: list[Hit], side: Side, max_tokens: int,
                       extra_system: str = "", tools: list[dict] | None = None) -> tuple[list[dict], list[Hit], int]:
        """Messages for one model: the policy's system prompt + evidence (+ extra) merged with the user's own
        system message, evidence dropped from the lowest-ranked until the rendered prompt fits the model."""
        p = self.policy
        if tools is None and self.tools:
            tools = self.tools.schemas()
        ev = [h for h in hits if h.score >= p.evidence_min_score] if p.send_evidence else []
        # cap the evidence by its own token budget first
        kept, used = [], 0
        for h in ev:
            n = side.count(h.text)
            if used + n > p.evidence_token_budget:
                break
            kept.append(h)
            used += n
        user_sys = [m for m in messages if m.get("role") in ("system", "developer")]
        rest = [m for m in messages if m.get("role") not in ("system", "developer")]

        def compose(evidence: list[Hit]) -> list[dict]:
            parts = [p.system_prompt] + [_text(m.get("content")) for m in user_sys]
            if evidence:
                parts.append("Evidence:\n" + "\n".join(f"[{i + 1}] (source: {h.path}) {h.text}"
                                                       for i, h in enumerate(evidence)))
            if extra_system:
                parts.append(extra_system)
            text = "\n\n".join(x for x in parts if x)
            return ([{"role": "system", "content": text}] if text else []) + rest

        budget = self._budget(side, max_tokens)
        out = compose(kept)
        n = self._count(side, out, tools)
        while budget is not None and n > budget and kept:
            kept = kept[:-1]
            out = compose(kept)
            n = self._count(side, out, tools)
        if budget is not None and n > budget:
            raise OversizeError(
                f"request too large for the {side.role} model {side.model_id}: {n} prompt tokens, but its context "
                f"window {side.context_window} minus max_tokens {max_tokens} leaves {budget}; shorten the messages"
            )
        return out, kept, n

    def _max_tokens(self, role: str, opts: ChatRequest) -> int:
        cap = self.policy.small_max_tokens if role == "small" else self.policy.master_max_tokens
        return min(cap, opts.max_tokens) if opts.max_tokens is not None else cap

    def _bounded(self, role: str, opts: ChatRequest) -> list[dict]:
        cap = self.policy.small_max_tokens if role == "small" else self.policy.master_max_tokens
        if opts.max_tokens is not None and opts.max_tokens > cap:
            return [{"param": opts.max_tokens_param, "asked": opts.max_tokens, "used": cap,
                     "by": f"policy.{role}_max_tokens", "model": role}]
        return []

    def _plan(self, role: str, messages, hits, opts: ChatRequest, extra_system: str = "") -> _Plan:
        side = self.small_side if role == "small" else self.master_side
        mt = self._max_tokens(role, opts)
        plan = _Plan(role, mt)
        try:
            plan.messages, plan.evidence, plan.prompt_tokens = self.build_messages(
                messages, hits, side, mt, extra_system, self._tool_schemas(opts))
        except OversizeError as e:
            plan.error = e
        return plan

    # -- model calls --------------------------------------------------------------------------------------
    async def _call(self, backend: Backend, role: str, messages: list[dict], max_tokens: int, timeout: float,
                    r: _Req, label: str, *, signals: bool = False) -> tuple[ChatResult, int, list[dict]]:
        """The client's request to one model: its parameters passed through, the server's tool loop when the
        client sent no tools. Returns the final result, the tool failures and the tool results."""
        opts = r.opts
        client_tools = opts.tools is not None
        tools = opts.tools if client_tools else (self.tools.schemas() if self.tools else None)
        extra = opts.backend_params()
        want_lp = opts.logprobs or signals
        top = max(opts.top_logprobs or 0, 2 if signals and self.policy.needs_margins else 0) or None
        msgs = list(messages)
        failures, results = 0, []
        rounds = 0 if client_tools else self.policy.max_tool_rounds
        for round_ in range(rounds + 1):
            with r.trace.step(label, round=round_) as d:
                res = await backend.chat(msgs, tools=tools, max_tokens=max_tokens, logprobs=want_lp, top_logprobs=top,
                                         extra=extra, deadline=timeout)
                r.add_usage(role, res.usage)
                d.update(model=res.model or backend.model, ms_backend=round(res.latency_s * 1000, 1),
                         attempts=res.attempts, finish=res.finish_reason, chars=len(res.content),
                         mean_logprob=res.mean_logprob, tool_calls=len(res.tool_calls), choices=len(res.choices))
            if client_tools or not res.tool_calls or self.tools is None or round_ == rounds:
                if not client_tools and res.tool_calls and round_ == rounds:
                    failures += 1
                    results.append({"tool": "*", "ok": False, "error": "tool round limit reached"})
                await self._fill_choices(backend, role, msgs, tools, max_tokens, want_lp, top, extra, timeout, r, res)
                return res, failures, results
            msgs.append({"role": "assistant", "content": res.content or "", "tool_calls": res.tool_calls})
            for tc in res.tool_calls:
                with r.trace.step("tool") as d:
                    tr = await asyncio.to_thread(self.tools.call, tc)
                    d.update(name=tr.name, ok=tr.ok, error=tr.error)
                if not tr.ok:
                    failures += 1
                results.append({"tool": tr.name, "ok": tr.ok, "error": tr.error})
                msgs.append({"role": "tool", "tool_call_id": tc.get("id", ""), "name": tr.name,
                             "content": tr.content if tr.ok else f"ERROR: {tr.error}"})
        raise AssertionError("unreachable")

    async def _fill_choices(self, backend, role, msgs, tools, max_tokens, want_lp, top, extra, timeout, r, res):
        """A backend that ignores ``n`` (llama.cpp server) returns one choice: ask again for the rest."""
        n = r.opts.n
        if n <= 1 or len(res.choices) >= n:
            return
        one = {k: v for k, v in extra.items() if k != "n"}
        with r.trace.step(f"{role}-more-choices", asked=n, got=len(res.choices)):
            more = await asyncio.gather(*(backend.chat(msgs, tools=tools, max_tokens=max_tokens, logprobs=want_lp,
                                                       top_logprobs=top, extra=one, deadline=timeout)
                                          for _ in range(n - len(res.choices))))
        for m in more:
            r.add_usage(role, m.usage)
            for c in m.choices[:1]:
                c.index = len(res.choices)
                res.choices.append(c)

    def _choices(self, res: ChatResult, opts: ChatRequest) -> list[dict]:
        """The OpenAI choice objects for the client: thinking removed, stop sequences applied, logprobs as asked."""
        out = []
        for i, c in enumerate(res.choices[: opts.n] or []):
            content, finish, lp = strip_thinking(c.content), c.finish_reason or "stop", c.logprobs
            if opts.stop:
                content, cut = apply_stop(content, opts.stop)
                if cut:
                    finish, lp = "stop", _cut_logprobs(lp, content)
            msg: dict = {"role": "assistant", "content": content, "refusal": None}
            if c.tool_calls:
                msg["tool_calls"] = c.tool_calls
                if not content:
                    msg["content"] = None
                finish = c.finish_reason or "tool_calls"
            out.append({"index": i, "message": msg, "logprobs": _trim_top(lp, opts.top_logprobs) if opts.logprobs
                        else None, "finish_reason": finish})
        return out

    async def _self_check(self, question: str, draft: str, r: _Req) -> float | None:
        msgs = [{"role": "user", "content": f"Question: {question}\nProposed answer: {draft}\n"
                 "How likely is the proposed answer correct? Reply with only a number between 0 and 1."}]
        with r.trace.step("self-check") as d:
            try:
                res = await self.small.chat(msgs, max_tokens=8, logprobs=False, deadline=self.policy.small_timeout_s)
            except BackendError as e:
                d["error"] = str(e)
                return None
            r.add_usage("small", res.usage)
            m = re.search(r"(?<![\d.])(0(?:\.\d+)?|1(?:\.0+)?)(?![\d.])", res.content)
            d["value"] = float(m.group(1)) if m else None
            return d["value"]

    async def _answerability(self, question: str, small_msgs: list[dict], r: _Req) -> float | None:
        """Self-Route's check, asked of the small model with the same evidence: P(yes) for "answerable?"."""
        msgs = [m for m in small_msgs if m.get("role") == "system"] + [
            {"role": "user", "content": answerability_prompt(question)}]
        with r.trace.step("answerability") as d:
            try:
                res = await self.small.chat(msgs, max_tokens=1, logprobs=True, top_logprobs=5, extra={"temperature": 0},
                                            deadline=self.policy.small_timeout_s)
            except BackendError as e:
                d["error"] = str(e)
                return None
            r.add_usage("small", res.usage)
            c0 = res.choices[0]
            first = ((c0.logprobs or {}).get("content") or [{}])[0].get("top_logprobs") if c0.logprobs else None
            d["value"] = read_answerability(c0.content, first)
            return d["value"]

    async def _samples(self, small_msgs: list[dict], r: _Req) -> list[str] | None:
        """k sampled answers (one request with n=k) for the agreement signal (BEST-Route)."""
        p = self.policy
        with r.trace.step("samples", k=p.sample_k) as d:
            try:
                res = await self.small.chat(small_msgs, max_tokens=self._max_tokens("small", r.opts), logprobs=False,
                                            extra={"n": p.sample_k, "temperature": p.sample_temperature},
                                            deadline=p.small_timeout_s)
            except BackendError as e:
                d["error"] = str(e)
                return None
            r.add_usage("small", res.usage)
            texts = [strip_thinking(c.content) for c in res.choices]
            if len(texts) < p.sample_k:  # the server ignored n
                more = await asyncio.gather(*(self.small.chat(small_msgs, max_tokens=self._max_tokens("small", r.opts),
                                                              logprobs=False,
                                                              extra={"temperature": p.sample_temperature},
                                                              deadline=p.small_timeout_s)
                                              for _ in range(p.sample_k - len(texts))), return_exceptions=True)
                for m in more:
                    if isinstance(m, ChatResult):
                        r.add_usage("small", m.usage)
                        texts.append(strip_thinking(m.content))
            d["got"] = len(texts)
            return texts

    def _master_available(self) -> bool:
        return self.master is not None and time.monotonic() >= self.master_down_until

    def _mark_master_down(self, err: Exception):
        self.master_down_until = time.monotonic() + self.master_cooldown_s
        self.master_down_reason = " ".join(str(err).split())[:200]

    def _master_plan(self, messages, hits, draft: str, decision: Decision, opts: ChatRequest, r: _Req) -> _Plan:
        extra = ""
        if self.policy.send_draft and draft:
            extra = (
                "A smaller model wrote the DRAFT answer below; it was escalated to you because: "
                + "; ".join(decision.reasons)
                + ". Check the draft against the evidence, fix what is wrong and give the final answer.\n"
                f"DRAFT:\n{strip_thinking(draft)}"
            )
        hits = hits if self.policy.master_evidence else []
        plan = self._plan("master", messages, hits, opts, extra)
        if not plan.fits and extra:  # the draft made it too long: the master answers without it
            r.trace.add("draft-dropped", why="the draft does not fit the master's window")
            plan = self._plan("master", messages, hits, opts)
        if not plan.fits:
            raise plan.error
        return plan

    # -- the request --------------------------------------------------------------------------------------
    def _opts(self, messages, user_choice: str, opts: ChatRequest | None) -> ChatRequest:
        if opts is None:
            validate_messages(messages)
            return ChatRequest(model="regraft", route=user_choice, messages=messages)
        return opts

    async def _prepare(self, messages, user_choice, r: _Req):
        """Retrieve, then plan both prompts (evidence trimmed to each model's budget) and route by fit."""
        opts = r.opts
        if opts.n > self.policy.max_n:
            raise RequestError(f"Invalid 'n': this server's policy allows at most {self.policy.max_n} choices "
                               f"(policy.max_n), but got {opts.n}.", "n", "integer_above_max_value")
        question = _last_user_text(messages)
        if not question:
            raise InputError("request: no user message with text content")
        with r.trace.step("retrieve") as d:
            hits = await self.retrieve(question) if self.store is not None else []
            d.update(hits=len(hits), top_score=round(hits[0].score, 4) if hits else None,
                     sources=[h.path for h in hits])
        small_plan = self._plan("small", messages, hits, opts)
        master_plan = self._plan("master", messages, hits, opts) if self.master is not None else None
        with r.trace.step("fit") as d:
            d.update(small=small_plan.prompt_tokens if small_plan.fits else str(small_plan.error),
                     master=None if master_plan is None else (master_plan.prompt_tokens if master_plan.fits
                                                               else str(master_plan.error)))
        if user_choice == "small" and not small_plan.fits:
            hint = "; the master's window fits it: send it with model 'regraft' or 'master'" if (
                master_plan is not None and master_plan.fits) else ""
            raise OversizeError(str(small_plan.error) + hint)
        if user_choice == "master" and master_plan is not None and not master_plan.fits:
            raise OversizeError(str(master_plan.error))
        if not small_plan.fits and (master_plan is None or not master_plan.fits):
            raise OversizeError("request too large for every model: " + str(small_plan.error)
                                + ("" if master_plan is None else " | " + str(master_plan.error)))
        return question, hits, small_plan, master_plan

    async def _small_phase(self, messages, hits, question, user_choice, r: _Req, small_plan, master_plan):
        p, opts = self.policy, r.opts
        sig = Signals(user_choice=user_choice, retrieval_hits=len(hits),
                      retrieval_top_score=hits[0].score if hits else None,
                      small_fits=small_plan.fits, master_fits=None if master_plan is None else master_plan.fits)
        if not small_plan.fits:
            sig.fit_detail = str(small_plan.error)
        elif master_plan is not None and not master_plan.fits:
            sig.fit_detail = str(master_plan.error)
        draft_res, tool_results = None, []
        if user_choice != "master" and small_plan.fits:
            r.trace.add("render", model=self.small_side.model_id or self.small.model,
                        prompt_tokens=small_plan.prompt_tokens, evidence=len(small_plan.evidence))
            sig.context_coverage = context_coverage(question, [h.text for h in small_plan.evidence])
            try:
                draft_res, fails, tool_results = await self._call(
                    self.small, "small", small_plan.messages, small_plan.max_tokens, p.small_timeout_s, r, "small",
                    signals=True)
                sig.tool_failures = fails
                c0 = draft_res.choices[0]
                text = strip_thinking(c0.content)
                if opts.stop:
                    text, cut = apply_stop(text, opts.stop)
                    if cut:
                        draft_res.finish_reason = c0.finish_reason = "stop"
                sig.answer = text
                sig.finish_reason = c0.finish_reason
                sig.length_by_client = opts.max_tokens is not None and opts.max_tokens <= p.small_max_tokens
                sig.mean_logprob, sig.min_logprob = draft_res.mean_logprob, draft_res.min_logprob
                sig.token_logprobs = tuple(c0.token_logprobs) if c0.token_logprobs else None
                sig.token_margins = tuple(c0.token_margins) if c0.token_margins else None
                sig.tool_calls = len(c0.tool_calls) if opts.tools is not None else 0
                if opts.tools is not None and c0.tool_calls:
                    sig.tool_call_errors = tuple(_check_tool_calls(c0.tool_calls, opts.tools))
                elif not c0.tool_calls:
                    sig.format_error = json_violation(text, opts.json_mode, opts.json_schema)
                extra = []
                if p.self_check and sig.answer:
                    extra.append(("self_check", self._self_check(question, sig.answer, r)))
                if p.answerability_check:
                    extra.append(("answerability", self._answerability(question, small_plan.messages, r)))
                if p.sample_k and sig.answer:
                    extra.append(("samples", self._samples(small_plan.messages, r)))
                for (name, _), val in zip(extra, await asyncio.gather(*(c for _, c in extra))):
                    if name == "samples":
                        sig.agreement = agreement(sig.answer, val) if val else None
                    else:
                        setattr(sig, name, val)
            except BackendError as e:
                if e.kind == "rejected" and e.status in (400, 422):
                    raise  # the client's request itself was refused: say so, do not retry it on the master
                sig.small_error = " ".join(str(e).split())[:200]
                r.trace.add("small-failed", error=sig.small_error)
        decision = decide(sig, p)
        r.trace.add("decide", target=decision.target, reasons=decision.reasons)
        return sig, decision, draft_res, tool_results

    def _result(self, route, res: ChatResult | None, backend, escalated, degraded, decision, sig, hits, r: _Req,
                tool_results, answer=None) -> HybridResult:
        opts = r.opts
        choices = self._choices(res, opts) if res is not None else []
        ans = answer if answer is not None else (choices[0]["message"]["content"] or "" if choices else "")
        return HybridResult(ans, route, (res.model if res else "") or backend.model or "", escalated, degraded,
                            decision, sig, hits, r.trace, sig.answer, dict(r.usage), tool_results,
                            choices[0]["finish_reason"] if choices else None, choices, r.usage_by_model,
                            self._bounded(route, opts), opts.metadata, opts.tools is None)

    async def _degraded(self, sig, decision, draft_res, hits, r: _Req, why: str, tool_results, messages,
                        small_plan) -> HybridResult:
        if draft_res is None and sig.small_error is None and small_plan.fits:
            # the user chose the master (or the small model was skipped): ask the small model now
            try:
                draft_res, _, tool_results = await self._call(
                    self.small, "small", small_plan.messages, small_plan.max_tokens, self.policy.small_timeout_s, r,
                    "small")
                sig.answer, sig.finish_reason = strip_thinking(draft_res.content), draft_res.finish_reason
            except BackendError as e:
                sig.small_error = " ".join(str(e).split())[:200]
        if draft_res is None:
            raise BackendError(self.small.base_url, "unavailable",
                               f"small model failed ({sig.small_error or 'request does not fit it'}) and master "
                               f"unavailable ({why})")
        decision.reasons.append(f"master unavailable, degraded: {why}")
        r.trace.add("degraded", reason=why)
        return self._result("small", draft_res, self.small, True, True, decision, sig, hits, r, tool_results)

    async def answer(self, messages: list[dict], user_choice: str = "auto",
                     opts: ChatRequest | None = None) -> HybridResult:
        opts = self._opts(messages, user_choice, opts)
        r = _Req(opts, Trace())
        question, hits, splan, mplan = await self._prepare(messages, user_choice, r)
        sig, decision, draft_res, tool_results = await self._small_phase(messages, hits, question, user_choice, r,
                                                                         splan, mplan)
        if not decision.escalate:
            return self._result("small", draft_res, self.small, False, False, decision, sig, hits, r, tool_results)
        if not self._master_available():
            why = "no master configured" if self.master is None else f"marked down: {self.master_down_reason}"
            return await self._degraded(sig, decision, draft_res, hits, r, why, tool_results, messages, splan)
        plan = self._master_plan(messages, hits, sig.answer, decision, opts, r)
        r.trace.add("render", model=self.master_side.model_id or self.master.model, prompt_tokens=plan.prompt_tokens,
                    evidence=len(plan.evidence), draft_chars=len(sig.answer))
        try:
            res, fails, more = await self._call(self.master, "master", plan.messages, plan.max_tokens,
                                                self.policy.master_timeout_s, r, "master")
        except BackendError as e:
            if e.kind == "rejected" and e.status in (400, 422):
                raise
            self._mark_master_down(e)
            if not self.policy.degraded_ok:
                raise
            return await self._degraded(sig, decision, draft_res, hits, r, self.master_down_reason, tool_results,
                                        messages, splan)
        return self._result("master", res, self.master, True, False, decision, sig, hits, r, tool_results + more)

    async def answer_stream(self, messages: list[dict], user_choice: str = "auto",
                            opts: ChatRequest | None = None) -> AsyncIterator[tuple[str, object]]:
        """Yields ("choice", {index, content, logprobs, tool_calls}) pieces, ("finish", {index, finish_reason}),
        then ("result", HybridResult). The small model's draft is needed whole to decide, so each of its choices is
        sent as one piece; the master's answer is streamed as it comes."""
        opts = self._opts(messages, user_choice, opts)
        r = _Req(opts, Trace())
        question, hits, splan, mplan = await self._prepare(messages, user_choice, r)
        sig, decision, draft_res, tool_results = await self._small_phase(messages, hits, question, user_choice, r,
                                                                         splan, mplan)

        def whole(res: HybridResult):
            for c in res.choices:
                yield "choice", {"index": c["index"], "content": c["message"]["content"],
                                 "tool_calls": c["message"].get("tool_calls"),
                                 "logprobs": c["logprobs"], "model": res.model}
                yield "finish", {"index": c["index"], "finish_reason": c["finish_reason"]}

        if not decision.escalate:
            res = self._result("small", draft_res, self.small, False, False, decision, sig, hits, r, tool_results)
            for ev in whole(res):
                yield ev
            yield "result", res
            return
        if not self._master_available():
            why = "no master configured" if self.master is None else f"marked down: {self.master_down_reason}"
            res = await self._degraded(sig, decision, draft_res, hits, r, why, tool_results, messages, splan)
            for ev in whole(res):
                yield ev
            yield "result", res
            return
        plan = self._master_plan(messages, hits, sig.answer, decision, opts, r)
        texts: dict[int, list[str]] = {}
        finishes: dict[int, str] = {}
        model = self.master.model or ""
        t0 = time.perf_counter()
        extra = opts.backend_params()
        if opts.include_usage:
            extra["stream_options"] = {"include_usage": True}
        started = False
        try:
            async for chunk in self.master.stream(plan.messages, tools=self._tool_schemas(opts) if opts.tools else None,
                                                  max_tokens=plan.max_tokens, logprobs=opts.logprobs,
                                                  top_logprobs=opts.top_logprobs, extra=extra,
                                                  deadline=self.policy.master_timeout_s):
                model = chunk.get("model") or model
                if isinstance(chunk.get("usage"), dict):
                    r.add_usage("master", chunk["usage"])
                for ch in chunk["choices"]:
                    if not isinstance(ch, dict):
                        continue
                    i = ch.get("index", 0) if isinstance(ch.get("index", 0), int) else 0
                    delta = ch.get("delta") or {}
                    piece = delta.get("content")
                    lp = _trim_top(ch.get("logprobs"), opts.top_logprobs) if opts.logprobs else None
                    if piece or delta.get("tool_calls") or lp:
                        started = True
                        texts.setdefault(i, []).append(piece or "")
                        yield "choice", {"index": i, "content": piece, "tool_calls": delta.get("tool_calls"),
                                         "logprobs": lp, "model": model}
                    if ch.get("finish_reason"):
                        finishes[i] = ch["finish_reason"]
                        yield "finish", {"index": i, "finish_reason": ch["finish_reason"]}
        except BackendError as e:
            self._mark_master_down(e)
            r.trace.add("master-stream", ms=(time.perf_counter() - t0) * 1000, error=str(e)[:200])
            if started or not self.policy.degraded_ok:
                raise
            res = await self._degraded(sig, decision, draft_res, hits, r, self.master_down_reason, tool_results,
                                       messages, splan)
            for ev in whole(res):
                yield ev
            yield "result", res
            return
        r.trace.add("master-stream", ms=(time.perf_counter() - t0) * 1000, prompt_tokens=plan.prompt_tokens,
                    pieces=sum(len(v) for v in texts.values()))
        answer = "".join(texts.get(0, []))
        choices = [{"index": i, "message": {"role": "assistant", "content": "".join(texts.get(i, []))},
                    "finish_reason": finishes.get(i)} for i in sorted(set(texts) | set(finishes))]
        yield "result", HybridResult(answer, "master", model, True, False, decision, sig, hits, r.trace, sig.answer,
                                     dict(r.usage), tool_results, finishes.get(0), choices, r.usage_by_model,
                                     self._bounded("master", opts), opts.metadata, opts.tools is None)

    async def aclose(self):
        await self.small.aclose()
        if self.master:
            await self.master.aclose()


def _text(c) -> str:
    if isinstance(c, list):
        return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
    return str(c or "")


def draft_prompt_json(result: HybridResult) -> str:
    return json.dumps(result.meta(), indent=1)
