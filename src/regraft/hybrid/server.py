"""The OpenAI-compatible endpoint of the hybrid runtime (FastAPI + uvicorn).

- ``POST /v1/chat/completions``: OpenAI chat.completion (or ``stream: true`` SSE chunks). ``model`` picks the
  route: ``regraft`` / ``auto`` (policy decides), ``small``, ``master`` (explicit user choice). The answer
  carries a ``regraft`` object (route, escalated, degraded, reasons, evidence, trace) and headers
  ``x-regraft-route`` / ``x-regraft-degraded``; plain OpenAI clients ignore both.
- ``GET /v1/models``: the three route names. ``GET /health``: backends' reachability, store size.

Bad requests get OpenAI-style ``{"error": {...}}`` JSON with 400/413; backend failures 502/504; never a hang
(every backend call has a deadline).
"""



import json
import time
import uuid

from regraft.errors import InputError

from .backends import BackendError
from .orchestrator import Hybrid, OversizeError

ROUTES = {"regraft": "auto", "auto": "auto", "regraft-auto": "auto", "small": "small", "regraft-small": "small",
          "master": "master", "regraft-master": "master"}


def _err(status: int, message: str, type_: str, code: str | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": type_, "code": code}}, status_code=status)


def create_app(hybrid: Hybrid, *, max_request_bytes: int = 1_000_000, trace_default: bool = False,
               contract: dict | None = None):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="regraft hybrid", docs_url=None, redoc_url=None)
    app.state.hybrid = hybrid
    app.state.stats = {"requests": 0, "small": 0, "master": 0, "degraded": 0, "errors": 0}

    @app.get("/health")
    async def health():
        master_ok = None
        if hybrid.master is not None:
            master_ok = hybrid._master_available() and await hybrid.master.health(timeout=2.0)
        small_ok = await hybrid.small.health(timeout=2.0)
        return {"status": "ok" if small_ok else "degraded", "small": small_ok, "master": master_ok,
                "store_chunks": hybrid.store.count() if hybrid.store is not None else None,
                "stats": app.state.stats, "contract": contract}

    @app.get("/v1/models")
    async def models():
        now = int(time.time())
        return {"object": "list", "data": [{"id": i, "object": "model", "created": now, "owned_by": "regraft"}
                                           for i in ("regraft", "small", "master")]}

    def _request_failed(e: Exception):
        """The HTTP error for a request the hybrid refused (OpenAI error shape), counted in /stats."""
        app.state.stats["errors"] += 1
        if isinstance(e, OversizeError):
            return _err(400, str(e), "invalid_request_error", "context_length_exceeded")
        if isinstance(e, BackendError):
            return _err(504 if e.kind == "timeout" else 502, str(e), "backend_error", e.kind)
        return _err(400, str(e), "invalid_request_error")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        st = app.state.stats
        st["requests"] += 1
        raw = await request.body()
        if len(raw) > max_request_bytes:
            st["errors"] += 1
            return _err(413, f"request body is {len(raw)} bytes; this server accepts at most {max_request_bytes} "
                        "(--max-request-bytes)", "invalid_request_error", "request_too_large")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            st["errors"] += 1
            return _err(400, f"request body is not JSON ({e.msg if hasattr(e, 'msg') else e})", "invalid_request_error")
        if not isinstance(body, dict):
            return _err(400, "request body must be a JSON object", "invalid_request_error")
        route = ROUTES.get(str(body.get("model", "regraft")).lower())
        ext = body.get("regraft") if isinstance(body.get("regraft"), dict) else {}
        route = ext.get("route", route)
        if route not in ("auto", "small", "master"):
            return _err(400, f"model {body.get('model')!r} is not served here; use one of regraft, small, master",
                        "invalid_request_error", "model_not_found")
        want_trace = bool(ext.get("trace", trace_default))
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        messages = body.get("messages")

        if body.get("stream"):
            gen = hybrid.answer_stream(messages, route)
            # run until the first event so input errors become proper HTTP errors, not a broken stream
            try:
                first = await gen.__anext__()
            except (OversizeError, InputError, BackendError) as e:
                return _request_failed(e)

            async def sse():
                base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": "regraft"}
                yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}) + "\n\n"
                ev = first
                try:
                    while True:
                        kind, val = ev
                        if kind == "delta" and val:
                            yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"content": val}}]}) + "\n\n"
                        elif kind == "result":
                            st[val.route] += 1
                            st["degraded"] += int(val.degraded)
                            final = {**base, "model": val.model, "choices": [
                                {"index": 0, "delta": {}, "finish_reason": val.finish_reason or "stop"}],
                                "regraft": val.meta(with_trace=want_trace)}
                            yield "data: " + json.dumps(final) + "\n\n"
                            break
                        ev = await gen.__anext__()
                except (BackendError, InputError) as e:
                    st["errors"] += 1
                    yield "data: " + json.dumps({"error": {"message": str(e), "type": "backend_error"}}) + "\n\n"
                except StopAsyncIteration:
                    pass
                yield "data: [DONE]\n\n"

            return StreamingResponse(sse(), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-regraft-request": rid})
        try:
            res = await hybrid.answer(messages, route)
        except (OversizeError, InputError, BackendError) as e:
            return _request_failed(e)
        st[res.route] += 1
        st["degraded"] += int(res.degraded)
        usage = res.usage or {}
        out = {
            "id": rid, "object": "chat.completion", "created": created, "model": res.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": res.answer},
                         "finish_reason": res.finish_reason or "stop"}],
            "usage": {k: usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
            "regraft": res.meta(with_trace=want_trace),
        }
        return JSONResponse(out, headers={"x-regraft-route": res.route, "x-regraft-degraded": str(res.degraded).lower()})

    return app
