"""OpenAI-compatible chat backends on httpx (vLLM, SGLang, llama.cpp server, transformers serve, Ollama, ...).

Every call has a connect timeout, a per-read timeout and an overall deadline; connection errors, timeouts,
HTTP 429/5xx and malformed JSON are retried with exponential backoff (+ jitter) up to ``retries`` times, and
then raise ``BackendError`` whose message names the URL, what went wrong and what to do. 4xx answers are not
retried. Log-probabilities are requested and used when the server returns them (vLLM, llama.cpp); servers that
ignore the field (transformers serve) simply give ``logprobs=None``, and a server that *rejects* the field is
asked again without it (remembered per backend).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from regraft.errors import RegraftError


from regraft.errors import BackendError  # noqa: E402,F401  (defined in errors.py)


@dataclass
class Choice:
    """One choice of a chat.completion as the backend returned it."""

    index: int
    content: str
    tool_calls: list[dict] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: dict | None = None  # the OpenAI ``choices[i].logprobs`` object, as returned
    token_logprobs: list[float] | None = None  # its per-token log-probabilities
    token_margins: list[float] | None = None  # top-1 minus top-2 log-probability per token (needs top_logprobs >= 2)
    reasoning: str | None = None


@dataclass
class ChatResult:
    content: str
    tool_calls: list[dict] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[float] | None = None  # per generated token of choice 0, when the server returns them
    usage: dict = field(default_factory=dict)
    model: str = ""
    latency_s: float = 0.0
    attempts: int = 1
    reasoning: str | None = None
    choices: list[Choice] = field(default_factory=list)

    @property
    def mean_logprob(self) -> float | None:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else None

    @property
    def min_logprob(self) -> float | None:
        return min(self.logprobs) if self.logprobs else None


def _finite(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def parse_logprobs(lp) -> tuple[list[float] | None, list[float] | None]:
    """Per-token log-probabilities and top-1/top-2 margins from an OpenAI ``logprobs`` object."""
    if not isinstance(lp, dict) or not isinstance(lp.get("content"), list):
        return None, None
    vals, margins = [], []
    for t in lp["content"]:
        if not isinstance(t, dict):
            continue
        v = _finite(t.get("logprob"))
        if v is None:
            continue
        vals.append(v)
        top = [x for x in (_finite(a.get("logprob")) for a in t.get("top_logprobs") or [] if isinstance(a, dict))
               if x is not None]
        if len(top) >= 2:
            top.sort(reverse=True)
            margins.append(top[0] - top[1])
    return vals or None, (margins if margins and len(margins) == len(vals) else None)


_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def _short(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def parse_chat_response(data: Any, url: str) -> ChatResult:
    """Validate and read an OpenAI chat.completion body; raise BackendError(kind='malformed') if it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        raise BackendError(url, "malformed", f"answer is not an OpenAI chat.completion (no choices): {_short(data)}")
    choices = []
    for i, ch in enumerate(data["choices"]):
        msg = ch.get("message") if isinstance(ch, dict) else None
        if not isinstance(msg, dict):
            raise BackendError(url, "malformed", f"choices[{i}].message missing: {_short(data)}")
        content = msg.get("content") or ""
        if not isinstance(content, str):
            content = json.dumps(content)
        tool_calls = msg.get("tool_calls") or []
        if not isinstance(tool_calls, list):
            raise BackendError(url, "malformed", f"message.tool_calls is not a list: {_short(tool_calls)}")
        lp = ch.get("logprobs") if isinstance(ch.get("logprobs"), dict) else None
        vals, margins = parse_logprobs(lp)
        idx = ch.get("index", i)
        choices.append(Choice(idx if isinstance(idx, int) and not isinstance(idx, bool) else i, content, tool_calls,
                              ch.get("finish_reason"), lp, vals, margins, msg.get("reasoning_content")))
    choices.sort(key=lambda c: c.index)
    c0 = choices[0]
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return ChatResult(content=c0.content, tool_calls=c0.tool_calls, finish_reason=c0.finish_reason,
                      logprobs=c0.token_logprobs, usage=usage, model=str(data.get("model", "")),
                      reasoning=c0.reasoning, choices=choices)


class Backend:
    """One OpenAI-compatible endpoint, e.g. ``http://127.0.0.1:8001/v1``."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        role: str = "backend",
        api_key: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 3.0,
        retries: int = 2,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise RegraftError(
                f"{role} endpoint {base_url!r} is not an http(s) URL; expected e.g. http://127.0.0.1:8001/v1"
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.role = role
        self.api_key = api_key
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.logprobs_supported: bool | None = None
        self._client = None
        self._loop = None

    # -- plumbing ---------------------------------------------------------------------------------------
    def _http(self):
        import httpx

        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                headers={"Authorization": f"Bearer {self.api_key}"} if self.api_key else None,
            )
            self._loop = loop
        return self._client

    async def aclose(self):
        if self._client is not None:
            try:
                await self._client.aclose()
            except RuntimeError:
                pass
            self._client = None

    def _sleep_for(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * (2**attempt)) * (0.5 + random.random() / 2)

    async def _request_json(self, method: str, path: str, body: dict | None = None, deadline: float | None = None):
        """JSON request with retries; returns (data, attempts)."""
        import httpx

        url = self.base_url + path
        end = time.monotonic() + (deadline or self.timeout)
        last: BackendError | None = None
        for attempt in range(self.retries + 1):
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            try:
                r = await asyncio.wait_for(self._http().request(method, url, json=body), timeout=remaining)
            except (asyncio.TimeoutError, httpx.TimeoutException):
                last = BackendError(url, "timeout", f"no answer within {self.timeout:g}s (attempt {attempt + 1}); "
                                    "is the server overloaded? raise --timeout or check it")
            except httpx.HTTPError as e:
                last = BackendError(url, "connect", f"cannot connect ({type(e).__name__}: {_short(e) or 'refused'}); "
                                    f"is the {self.role} server running at {self.base_url}?")
            else:
                if r.status_code >= 400:
                    detail = _short(r.text)
                    err = BackendError(url, "http", f"HTTP {r.status_code}: {detail}", status=r.status_code)
                    if r.status_code not in _RETRY_STATUS:
                        err.kind = "rejected"
                        err.attempts = attempt + 1
                        raise err
                    last = err
                else:
                    try:
                        return r.json(), attempt + 1
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        last = BackendError(url, "malformed", f"answer is not JSON: {_short(r.text, 80)!r}; "
                                            "expected an OpenAI-compatible server", status=r.status_code)
            if attempt < self.retries:
                await asyncio.sleep(min(self._sleep_for(attempt), max(0.0, end - time.monotonic())))
        if last is None:
            last = BackendError(url, "timeout", f"deadline of {deadline or self.timeout:g}s passed")
        last.attempts = self.retries + 1
        last.args = (str(last) + f" (after {self.retries + 1} attempt(s))",)
        raise last

    # -- API --------------------------------------------------------------------------------------------
    async def models(self) -> list[str]:
        data, _ = await self._request_json("GET", "/models", deadline=min(self.timeout, 10.0))
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise BackendError(self.base_url + "/models", "malformed", f"not an OpenAI model list: {_short(data)}")
        return [str(m.get("id")) for m in data["data"] if isinstance(m, dict) and m.get("id")]

    async def resolve_model(self) -> str:
        if not self.model:
            ids = await self.models()
            if not ids:
                raise BackendError(self.base_url + "/models", "malformed", "lists no model; pass --small-model/--master-model")
            self.model = ids[0]
        return self.model

    def _body(self, messages, tools, max_tokens, temperature, logprobs, stream, extra, top_logprobs=None) -> dict:
        body: dict = {"model": self.model, "messages": messages, "stream": stream}
        if tools:
            body["tools"] = tools
        if max_tokens is not None:
            body["max_tokens"] = int(max_tokens)
        if temperature is not None:
            body["temperature"] = temperature
        if logprobs and self.logprobs_supported is not False:
            body["logprobs"] = True
            if top_logprobs:
                body["top_logprobs"] = int(top_logprobs)
        if extra:
            body.update(extra)
        return body

    async def chat(self, messages: list[dict], *, tools=None, max_tokens=None, temperature=None, logprobs=True,
                   top_logprobs: int | None = None, extra: dict | None = None,
                   deadline: float | None = None) -> ChatResult:
        """One chat completion. ``extra`` holds the client's parameters passed through (n, stop, seed, ...)."""
        if not self.model:
            await self.resolve_model()
        t0 = time.perf_counter()
        body = self._body(messages, tools, max_tokens, temperature, logprobs, False, extra, top_logprobs)
        try:
            data, attempts = await self._request_json("POST", "/chat/completions", body, deadline)
        except BackendError as e:
            if e.kind == "rejected" and "logprobs" in body and "logprob" in str(e).lower():
                self.logprobs_supported = False
                body.pop("logprobs")
                body.pop("top_logprobs", None)
                data, attempts = await self._request_json("POST", "/chat/completions", body, deadline)
            else:
                raise
        res = parse_chat_response(data, self.base_url + "/chat/completions")
        if "logprobs" in body:
            self.logprobs_supported = res.logprobs is not None
        res.latency_s = time.perf_counter() - t0
        res.attempts = attempts
        return res

    async def stream(self, messages: list[dict], *, tools=None, max_tokens=None, temperature=None, logprobs=False,
                     top_logprobs: int | None = None, extra: dict | None = None,
                     deadline: float | None = None) -> AsyncIterator[dict]:
        """Yield OpenAI chat.completion.chunk dicts. Retries only before the first chunk arrives."""
        import httpx

        if not self.model:
            await self.resolve_model()
        url = self.base_url + "/chat/completions"
        body = self._body(messages, tools, max_tokens, temperature, logprobs, True, extra, top_logprobs)
        end = time.monotonic() + (deadline or self.timeout)
        for attempt in range(self.retries + 1):
            started = False
            try:
                async with self._http().stream("POST", url, json=body) as r:
                    if r.status_code >= 400:
                        text = (await r.aread()).decode("utf-8", "replace")
                        kind = "http" if r.status_code in _RETRY_STATUS else "rejected"
                        raise BackendError(url, kind, f"HTTP {r.status_code}: {_short(text)}", status=r.status_code)
                    lines = r.aiter_lines()
                    while True:
                        remaining = end - time.monotonic()
                        if remaining <= 0:
                            raise BackendError(url, "timeout", f"stream exceeded the {deadline or self.timeout:g}s deadline")
                        try:
                            line = await asyncio.wait_for(lines.__anext__(), timeout=remaining)
                        except StopAsyncIteration:
                            return
                        line = line.strip()
                        if not line.startswith("data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == "[DONE]":
                            return
                        try:
                            chunk = json.loads(payload)
                        except json.JSONDecodeError:
                            raise BackendError(url, "malformed", f"stream chunk is not JSON: {_short(payload, 80)!r}")
                        if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
                            raise BackendError(url, "http", f"stream error: {_short(chunk['error'])}")
                        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
                            raise BackendError(url, "malformed", f"stream chunk has no choices: {_short(chunk)}")
                        started = True
                        yield chunk
            except BackendError as e:
                if started or e.kind in ("rejected", "malformed") or attempt >= self.retries:
                    raise
            except (asyncio.TimeoutError, httpx.TimeoutException) as e:
                if started or attempt >= self.retries:
                    raise BackendError(url, "timeout", f"stream stalled beyond {self.timeout:g}s") from e
            except httpx.HTTPError as e:
                if started or attempt >= self.retries:
                    raise BackendError(url, "connect", f"cannot connect ({type(e).__name__}); is the {self.role} "
                                       f"server running at {self.base_url}?") from e
            await asyncio.sleep(self._sleep_for(attempt))

    async def health(self, timeout: float = 3.0) -> bool:
        """True when /models answers within `timeout` (one attempt)."""
        import httpx

        try:
            r = await asyncio.wait_for(self._http().get(self.base_url + "/models"), timeout=timeout)
            return r.status_code < 400
        except (asyncio.TimeoutError, httpx.HTTPError):
            return False
