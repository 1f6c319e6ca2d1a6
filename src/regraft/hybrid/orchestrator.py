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
from .contract import Side, render_chat
from .policy import Decision, Policy, Signals, decide
from .store import Hit
from .tools import ToolRegistry
from .trace import Trace


class OversizeError(InputError):
    """The request does not fit the models' context budget."""


_THINK = re.compile(r"<think>.*?</think>\s*", re.S)


def strip_thinking(text: str) -> str:
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
    usage: dict = field(default_factory=dict)
    tool_results: list[dict] = field(default_factory=list)
    finish_reason: str | None = "stop"

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
        }
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

    def _count(self, side: Side, messages: list[dict]) -> int:
        tools = self.tools.schemas() if self.tools else None
        if side.chat_template:
            try:
                return side.count(render_chat(side.chat_template, messages, tools))
            except Exception:
                pass
        return side.count("\n".join(str(m.get("content") or "") for m in messages)) + 8 * len(messages)

    def build_messages(self, messages: list[dict], hits: list[Hit], side: Side, max_tokens: int,
                       extra_system: str = "") -> tuple[list[dict], list[Hit], int]:
        """Messages for one model: the policy's system prompt + evidence (+ extra) merged with the user's own
        system message, evidence dropped from the lowest-ranked until the rendered prompt fits the model."""
        p = self.policy
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
            parts = [p.system_prompt] + [str(m.get("content") or "") for m in user_sys]
            if evidence:
                parts.append("Evidence:\n" + "\n".join(f"[{i + 1}] (source: {h.path}) {h.text}"
                                                       for i, h in enumerate(evidence)))
            if extra_system:
                parts.append(extra_system)
            text = "\n\n".join(x for x in parts if x)
            return ([{"role": "system", "content": text}] if text else []) + rest

        budget = self._budget(side, max_tokens)
        out = compose(kept)
        n = self._count(side, out)
        while budget is not None and n > budget and kept:
            kept = kept[:-1]
            out = compose(kept)
            n = self._count(side, out)
        if budget is not None and n > budget:
            raise OversizeError(
                f"request too large for the {side.role} model {side.model_id}: {n} prompt tokens, but its context "
                f"window {side.context_window} minus max_tokens {max_tokens} leaves {budget}; shorten the messages"
            )
        return out, kept, n

    # -- model calls --------------------------------------------------------------------------------------
    async def _call_with_tools(self, backend: Backend, messages: list[dict], max_tokens: int, timeout: float,
                               trace: Trace, label: str) -> tuple[ChatResult, int, list[dict]]:
        tools = self.tools.schemas() if self.tools else None
        msgs = list(messages)
        failures, results = 0, []
        for round_ in range(self.policy.max_tool_rounds + 1):
            with trace.step(f"{label}", round=round_) as d:
                res = await backend.chat(msgs, tools=tools, max_tokens=max_tokens, deadline=timeout)
                d.update(model=res.model or backend.model, ms_backend=round(res.latency_s * 1000, 1),
                         attempts=res.attempts, finish=res.finish_reason, chars=len(res.content),
                         mean_logprob=res.mean_logprob, tool_calls=len(res.tool_calls))
            if not res.tool_calls or self.tools is None or round_ == self.policy.max_tool_rounds:
                if res.tool_calls and round_ == self.policy.max_tool_rounds:
                    failures += 1
                    results.append({"tool": "*", "ok": False, "error": "tool round limit reached"})
                return res, failures, results
            msgs.append({"role": "assistant", "content": res.content or "", "tool_calls": res.tool_calls})
            for tc in res.tool_calls:
                with trace.step("tool") as d:
                    tr = await asyncio.to_thread(self.tools.call, tc)
                    d.update(name=tr.name, ok=tr.ok, error=tr.error)
                if not tr.ok:
                    failures += 1
                results.append({"tool": tr.name, "ok": tr.ok, "error": tr.error})
                msgs.append({"role": "tool", "tool_call_id": tc.get("id", ""), "name": tr.name,
                             "content": tr.content if tr.ok else f"ERROR: {tr.error}"})
        raise AssertionError("unreachable")

    async def _self_check(self, question: str, draft: str, trace: Trace) -> float | None:
        msgs = [{"role": "user", "content": f"Question: {question}\nProposed answer: {draft}\n"
                 "How likely is the proposed answer correct? Reply with only a number between 0 and 1."}]
        with trace.step("self-check") as d:
            try:
                r = await self.small.chat(msgs, max_tokens=8, logprobs=False, deadline=self.policy.small_timeout_s)
            except BackendError as e:
                d["error"] = str(e)
                return None
            m = re.search(r"(?<![\d.])(0(?:\.\d+)?|1(?:\.0+)?)(?![\d.])", r.content)
            d["value"] = float(m.group(1)) if m else None
            return d["value"]

    def _master_available(self) -> bool:
        return self.master is not None and time.monotonic() >= self.master_down_until

    def _mark_master_down(self, err: Exception):
        self.master_down_until = time.monotonic() + self.master_cooldown_s
        self.master_down_reason = " ".join(str(err).split())[:200]

    def _master_messages(self, messages, hits, draft: str, decision: Decision) -> tuple[list[dict], list[Hit], int]:
        extra = ""
        if self.policy.send_draft and draft:
            extra = (
                "A smaller model wrote the DRAFT answer below; it was escalated to you because: "
                + "; ".join(decision.reasons)
                + ". Check the draft against the evidence, fix what is wrong and give the final answer.\n"
                f"DRAFT:\n{strip_thinking(draft)}"
            )
        return self.build_messages(messages, hits, self.master_side, self.policy.master_max_tokens, extra)

    # -- the request --------------------------------------------------------------------------------------
    async def _prepare(self, messages, user_choice, trace: Trace):
        validate_messages(messages)
        question = _last_user_text(messages)
        with trace.step("retrieve") as d:
            hits = await self.retrieve(question) if self.store is not None else []
            d.update(hits=len(hits), top_score=round(hits[0].score, 4) if hits else None,
                     sources=[h.path for h in hits])
        # the request must be valid for both models: check the master's budget up front too
        if self.master is not None and user_choice != "small":
            self.build_messages(messages, hits, self.master_side, self.policy.master_max_tokens)
        return question, hits

    async def _small_phase(self, messages, hits, question, user_choice, trace):
        p = self.policy
        sig = Signals(user_choice=user_choice, retrieval_hits=len(hits),
                      retrieval_top_score=hits[0].score if hits else None)
        draft_res, tool_results = None, []
        if user_choice != "master":
            with trace.step("render", model=self.small_side.model_id or self.small.model) as d:
                small_msgs, used, n = self.build_messages(messages, hits, self.small_side, p.small_max_tokens)
                d.update(prompt_tokens=n, evidence=len(used))
            try:
                draft_res, fails, tool_results = await self._call_with_tools(
                    self.small, small_msgs, p.small_max_tokens, p.small_timeout_s, trace, "small")
                sig.tool_failures = fails
                sig.answer = strip_thinking(draft_res.content)
                sig.finish_reason = draft_res.finish_reason
                sig.mean_logprob, sig.min_logprob = draft_res.mean_logprob, draft_res.min_logprob
                if p.self_check and sig.answer:
                    sig.self_check = await self._self_check(question, sig.answer, trace)
            except BackendError as e:
                sig.small_error = " ".join(str(e).split())[:200]
                trace.add("small-failed", error=sig.small_error)
        decision = decide(sig, p)
        trace.add("decide", target=decision.target, reasons=decision.reasons)
        return sig, decision, draft_res, tool_results

    async def _degraded(self, sig, decision, draft_res, hits, trace, why: str, tool_results, messages) -> HybridResult:
        if draft_res is None and sig.small_error is None:  # the user chose the master: ask the small model now
            small_msgs, _, _ = self.build_messages(messages, hits, self.small_side, self.policy.small_max_tokens)
            try:
                draft_res, _, tool_results = await self._call_with_tools(
                    self.small, small_msgs, self.policy.small_max_tokens, self.policy.small_timeout_s, trace, "small")
                sig.answer, sig.finish_reason = strip_thinking(draft_res.content), draft_res.finish_reason
            except BackendError as e:
                sig.small_error = " ".join(str(e).split())[:200]
        if draft_res is None:
            raise BackendError(self.small.base_url, "unavailable",
                               f"small model failed ({sig.small_error}) and master unavailable ({why})")
        decision.reasons.append(f"master unavailable, degraded: {why}")
        trace.add("degraded", reason=why)
        return HybridResult(sig.answer, "small", draft_res.model or self.small.model or "", True, True, decision,
                            sig, hits, trace, sig.answer, draft_res.usage, tool_results, draft_res.finish_reason)

    async def answer(self, messages: list[dict], user_choice: str = "auto") -> HybridResult:
        trace = Trace()
        question, hits = await self._prepare(messages, user_choice, trace)
        sig, decision, draft_res, tool_results = await self._small_phase(messages, hits, question, user_choice, trace)
        if not decision.escalate:
            return HybridResult(sig.answer, "small", draft_res.model or self.small.model or "", False, False,
                                decision, sig, hits, trace, sig.answer, draft_res.usage, tool_results,
                                draft_res.finish_reason)
        if not self._master_available():
            why = "no master configured" if self.master is None else f"marked down: {self.master_down_reason}"
            return await self._degraded(sig, decision, draft_res, hits, trace, why, tool_results, messages)
        with trace.step("render", model=self.master_side.model_id or self.master.model) as d:
            mmsgs, used, n = self._master_messages(messages, hits, sig.answer, decision)
            d.update(prompt_tokens=n, evidence=len(used), draft_chars=len(sig.answer))
        try:
            res, fails, more = await self._call_with_tools(self.master, mmsgs, self.policy.master_max_tokens,
                                                           self.policy.master_timeout_s, trace, "master")
        except BackendError as e:
            self._mark_master_down(e)
            if not self.policy.degraded_ok:
                raise
            return await self._degraded(sig, decision, draft_res, hits, trace, self.master_down_reason, tool_results,
                                         messages)
        return HybridResult(strip_thinking(res.content), "master", res.model or self.master.model or "", True, False,
                            decision, sig, hits, trace, sig.answer, res.usage, tool_results + more, res.finish_reason)

    async def answer_stream(self, messages: list[dict], user_choice: str = "auto") -> AsyncIterator[tuple[str, object]]:
        """Yields ("delta", str) pieces, then ("result", HybridResult). The small model's draft is needed whole to
        decide, so it is sent as one piece; the master's answer is streamed token by token."""
        trace = Trace()
        question, hits = await self._prepare(messages, user_choice, trace)
        sig, decision, draft_res, tool_results = await self._small_phase(messages, hits, question, user_choice, trace)
        if not decision.escalate:
            yield "delta", sig.answer
            yield "result", HybridResult(sig.answer, "small", draft_res.model or self.small.model or "", False,
                                         False, decision, sig, hits, trace, sig.answer, draft_res.usage, tool_results,
                                         draft_res.finish_reason)
            return
        if not self._master_available():
            why = "no master configured" if self.master is None else f"marked down: {self.master_down_reason}"
            r = await self._degraded(sig, decision, draft_res, hits, trace, why, tool_results, messages)
            yield "delta", r.answer
            yield "result", r
            return
        mmsgs, used, n = self._master_messages(messages, hits, sig.answer, decision)
        pieces: list[str] = []
        model = self.master.model or ""
        finish = None
        t0 = time.perf_counter()
        try:
            async for chunk in self.master.stream(mmsgs, max_tokens=self.policy.master_max_tokens,
                                                  deadline=self.policy.master_timeout_s):
                model = chunk.get("model") or model
                ch = chunk["choices"][0] if chunk["choices"] else {}
                finish = ch.get("finish_reason") or finish
                piece = (ch.get("delta") or {}).get("content")
                if piece:
                    pieces.append(piece)
                    yield "delta", piece
        except BackendError as e:
            self._mark_master_down(e)
            trace.add("master-stream", ms=(time.perf_counter() - t0) * 1000, error=str(e)[:200])
            if pieces or not self.policy.degraded_ok:
                raise
            r = await self._degraded(sig, decision, draft_res, hits, trace, self.master_down_reason, tool_results,
                                        messages)
            yield "delta", r.answer
            yield "result", r
            return
        trace.add("master-stream", ms=(time.perf_counter() - t0) * 1000, prompt_tokens=n, pieces=len(pieces))
        yield "result", HybridResult("".join(pieces), "master", model, True, False, decision, sig, hits, trace,
                                     sig.answer, {}, tool_results, finish)

    async def aclose(self):
        await self.small.aclose()
        if self.master:
            await self.master.aclose()


def draft_prompt_json(result: HybridResult) -> str:
    return json.dumps(result.meta(), indent=1)
