"""The OpenAI-compatible endpoint of the hybrid runtime (FastAPI + uvicorn).

- ``POST /v1/chat/completions``: OpenAI chat.completion (or ``stream: true`` SSE chunks). Every parameter is
  validated by ``chat_request.parse_chat_request`` and honoured or refused with a 400 naming it. ``model`` picks
  the route: ``regraft`` / ``auto`` (policy decides), ``small``, ``master`` (explicit user choice). The answer
  carries a ``regraft`` object (route, escalated, degraded, reasons, evidence, bounded, usage by model, trace) and
  headers ``x-regraft-route`` / ``x-regraft-degraded`` / ``x-regraft-bounded``; plain OpenAI clients ignore them.
- ``GET /v1/models`` and ``GET /v1/models/{id}``: the three route names. ``GET /health``: backends, store size.

Every error is the OpenAI error object ``{"error": {"message", "type", "param", "code"}}`` as JSON: 400 for bad
requests (a backend refusing a parameter the client passed is a 400 too), 404 for unknown models and paths, 413
for oversized bodies, 502/504 for backend failures, 500 (JSON, never plain text) for anything unexpected; never a
hang (every backend call has a deadline).
"""


import json
import time
import uuid

from regraft.errors import InputError

from .backends import BackendError
from .chat_request import MODEL_IDS, ROUTES, RequestError, parse_chat_request
from .orchestrator import Hybrid, OversizeError

__all__ = ["ROUTES", "create_app"]


def _err(status: int, message: str, type_: str, code: str | None = None, param: str | None = None, headers=None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status, headers=headers)


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _usage(u: dict) -> dict:
    return {k: int(u.get(k, 0)) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def create_app(hybrid: Hybrid, *, max_request_bytes: int = 1_000_000, trace_default: bool = False,
               contract: dict | None = None):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="regraft hybrid", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.hybrid = hybrid
    app.state.stats = {"requests": 0, "small": 0, "master": 0, "degraded": 0, "errors": 0}
    created_at = int(time.time())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _err(exc.status_code, f"{exc.detail}: this server serves POST /v1/chat/completions, GET /v1/models, "
                    "GET /v1/models/{id} and GET /health", "invalid_request_error", code)

    @app.exception_handler(Exception)
    async def unexpected(_, exc: Exception):
        app.state.stats["errors"] += 1
        return _err(500, f"internal error in regraft serve ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
                    "; please report it", "server_error", "internal_error")

    @app.get("/health")
    async def health():
        master_ok = None
        if hybrid.master is not None:
            master_ok = hybrid._master_available() and await hybrid.master.health(timeout=2.0)
        small_ok = await hybrid.small.health(timeout=2.0)
        return {"status": "ok" if small_ok else "degraded", "small": small_ok, "master": master_ok,
                "store_chunks": hybrid.store.count() if hybrid.store is not None else None,
                "stats": app.state.stats, "contract": contract}

    def _model(i: str) -> dict:
        return {"id": i, "object": "model", "created": created_at, "owned_by": "regraft"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model(i) for i in MODEL_IDS]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id not in MODEL_IDS and model_id.lower() not in ROUTES:
            return _err(404, f"The model {model_id!r} does not exist; this server serves "
                        + ", ".join(repr(m) for m in MODEL_IDS) + ".", "invalid_request_error", "model_not_found",
                        "model")
        return _model(model_id)

    def _request_failed(e: Exception):
        """The HTTP error for a request the hybrid refused (OpenAI error shape), counted in /stats."""
        app.state.stats["errors"] += 1
        if isinstance(e, RequestError):
            return _err(e.status, e.message, e.type, e.code, e.param)
        if isinstance(e, OversizeError):
            return _err(400, str(e), "invalid_request_error", "context_length_exceeded", "messages")
        if isinstance(e, BackendError):
            if e.kind == "rejected" and e.status in (400, 404, 413, 422):
                return _err(400, f"a backend refused the request (a parameter it does not support?): {e}",
                            "invalid_request_error", "backend_rejected_request")
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
            body = json.loads(raw, parse_constant=_no_constants)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            st["errors"] += 1
            msg = e.msg if isinstance(e, json.JSONDecodeError) else " ".join(str(e).split())[:120]
            return _err(400, f"We could not parse the JSON body of your request ({msg}). The body must be a JSON "
                        "object in UTF-8.", "invalid_request_error", "invalid_json")
        try:
            req = parse_chat_request(body, has_master=hybrid.master is not None)
        except RequestError as e:
            return _request_failed(e)
        want_trace = trace_default if req.trace is None else req.trace
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())

        if req.stream:
            gen = hybrid.answer_stream(req.messages, req.route, req)
            # run until the first event so input errors become proper HTTP errors, not a broken stream
            try:
                first = await gen.__anext__()
            except (RequestError, OversizeError, InputError, BackendError) as e:
                return _request_failed(e)

            async def sse():
                model = "regraft"
                usage_field = {"usage": None} if req.include_usage else {}

                def chunk(choices, **more):
                    return "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": created,
                                                  "model": model, "system_fingerprint": None, "choices": choices,
                                                  **usage_field, **more}) + "\n\n"

                started: set[int] = set()
                finishes: list[dict] = []
                ev = first
                try:
                    while True:
                        kind, val = ev
                        if kind == "choice":
                            model = val.get("model") or model
                            i = val["index"]
                            if i not in started:
                                started.add(i)
                                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                                              "logprobs": None, "finish_reason": None}])
                            delta = {}
                            if val.get("content"):
                                delta["content"] = val["content"]
                            if val.get("tool_calls"):
                                delta["tool_calls"] = [{"index": k, **tc} if "index" not in tc else tc
                                                       for k, tc in enumerate(val["tool_calls"])]
                            if delta or val.get("logprobs"):
                                yield chunk([{"index": i, "delta": delta, "logprobs": val.get("logprobs"),
                                              "finish_reason": None}])
                        elif kind == "finish":
                            finishes.append(val)
                        elif kind == "result":
                            res = val
                            model = res.model or model
                            st[res.route] += 1
                            st["degraded"] += int(res.degraded)
                            meta = res.meta(with_trace=want_trace)
                            if not finishes:
                                finishes.append({"index": 0, "finish_reason": res.finish_reason or "stop"})
                            for j, f in enumerate(finishes):
                                if f["index"] not in started:
                                    started.add(f["index"])
                                    yield chunk([{"index": f["index"], "delta": {"role": "assistant", "content": ""},
                                                  "logprobs": None, "finish_reason": None}])
                                last = j == len(finishes) - 1 and not req.include_usage
                                yield chunk([{"index": f["index"], "delta": {}, "logprobs": None,
                                              "finish_reason": f["finish_reason"] or "stop"}],
                                            **({"regraft": meta} if last else {}))
                            if req.include_usage:
                                usage_field = {}
                                yield chunk([], usage=_usage(res.usage), regraft=meta)
                            break
                        ev = await gen.__anext__()
                except (BackendError, InputError, RequestError) as e:
                    st["errors"] += 1
                    yield "data: " + json.dumps({"error": {"message": str(e), "type": "backend_error",
                                                           "param": None, "code": getattr(e, "kind", None)}}) + "\n\n"
                except StopAsyncIteration:
                    pass
                yield "data: [DONE]\n\n"

            return StreamingResponse(sse(), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-regraft-request": rid})
        try:
            res = await hybrid.answer(req.messages, req.route, req)
        except (RequestError, OversizeError, InputError, BackendError) as e:
            return _request_failed(e)
        st[res.route] += 1
        st["degraded"] += int(res.degraded)
        out = {
            "id": rid, "object": "chat.completion", "created": created, "model": res.model,
            "system_fingerprint": None, "service_tier": "default",
            "choices": res.choices or [{"index": 0, "message": {"role": "assistant", "content": res.answer,
                                                               "refusal": None},
                                        "logprobs": None, "finish_reason": res.finish_reason or "stop"}],
            "usage": _usage(res.usage),
            "regraft": res.meta(with_trace=want_trace),
        }
        headers = {"x-regraft-route": res.route, "x-regraft-degraded": str(res.degraded).lower()}
        if res.bounded:
            headers["x-regraft-bounded"] = ",".join(f"{b['param']}={b['used']}" for b in res.bounded)
        return JSONResponse(out, headers=headers)

    return app
