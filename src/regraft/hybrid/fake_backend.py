"""A deterministic OpenAI-compatible server, run as a real process on loopback.

Used to measure regraft's *own* overhead (the backend answers in microseconds, so the serve latency above the
direct-backend latency is regraft's), and to inject faults in tests without mocking HTTP:

    python -m regraft.hybrid.fake_backend --port 8001 [--mode ok|slow|malformed|error|garbage-schema]
        [--delay 0.0] [--logprobs] [--answers answers.json] [--model-id fake]

``answers.json`` maps a substring of the last user message to ``{"content": str, "logprob": float,
"tool_call": {"name": str, "arguments": {...}}}``. Without a match the answer is ``"echo: <question>"``.
When the request carries tools and a matching entry names a tool_call, the first answer is that tool call;
once a ``tool`` message is present the answer is ``"tool said: <tool content>"``.
``POST /_mode {"mode": ..., "delay": ...}`` switches behaviour at run time. Never use it as a model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

STATE = {"mode": "ok", "delay": 0.0, "logprobs": False, "answers": {}, "model": "fake", "calls": 0}


def _last_user(messages) -> str:
    for m in reversed(messages or []):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else json.dumps(c)
    return ""


def _answer(body: dict) -> dict:
    msgs = body.get("messages") or []
    q = _last_user(msgs)
    entry = next((v for k, v in STATE["answers"].items() if k in q), None) or {}
    tool_msgs = [m for m in msgs if m.get("role") == "tool"]
    if tool_msgs:
        return {"content": "tool said: " + str(tool_msgs[-1].get("content")), "logprob": -0.1}
    if body.get("tools") and entry.get("tool_call"):
        tc = entry["tool_call"]
        return {"content": "", "tool_calls": [{"id": "call_" + uuid.uuid4().hex[:8], "type": "function",
                "function": {"name": tc["name"], "arguments": json.dumps(tc.get("arguments", {}))}}]}
    sys_txt = " ".join(m.get("content", "") for m in msgs if m.get("role") == "system" and isinstance(m.get("content"), str))
    content = entry.get("content", "echo: " + q[:200])
    if entry.get("use_evidence") and "DRAFT" in sys_txt:
        content = entry.get("master_content", content)
    return {"content": content, "logprob": entry.get("logprob", -0.05)}


def build_app():
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    async def models(_: Request):
        return JSONResponse({"object": "list", "data": [{"id": STATE["model"], "object": "model", "owned_by": "fake"}]})

    async def health(_: Request):
        return JSONResponse({"status": "ok"})

    async def mode(req: Request):
        STATE.update(await req.json())
        return JSONResponse({k: STATE[k] for k in ("mode", "delay")})

    async def chat(req: Request):
        STATE["calls"] += 1
        body = await req.json()
        m = STATE["mode"]
        if STATE["delay"]:
            await asyncio.sleep(STATE["delay"])
        if m == "slow":
            await asyncio.sleep(3600)
        if m == "error":
            return JSONResponse({"error": {"message": "injected failure"}}, status_code=503)
        if m == "malformed":
            return PlainTextResponse("{not json", media_type="application/json")
        if m == "garbage-schema":
            return JSONResponse({"hello": "world"})
        ans = _answer(body)
        rid = "fake-" + uuid.uuid4().hex[:12]
        content = ans.get("content", "")
        ntok = max(1, len(content.split()))
        if body.get("stream"):
            async def gen():
                base = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": STATE["model"]}
                yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}) + "\n\n"
                words = content.split(" ")
                for i, w in enumerate(words):
                    piece = w if i == 0 else " " + w
                    yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"content": piece}}]}) + "\n\n"
                yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(gen(), media_type="text/event-stream")
        msg = {"role": "assistant", "content": content}
        finish = "stop"
        if ans.get("tool_calls"):
            msg["tool_calls"] = ans["tool_calls"]
            finish = "tool_calls"
        choice = {"index": 0, "message": msg, "finish_reason": finish}
        if STATE["logprobs"] and body.get("logprobs"):
            lp = float(ans.get("logprob", -0.05))
            choice["logprobs"] = {"content": [{"token": t, "logprob": lp} for t in content.split()[:64] or [""]]}
        return JSONResponse({"id": rid, "object": "chat.completion", "created": int(time.time()), "model": STATE["model"],
                             "choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": ntok, "total_tokens": ntok + 1}})

    return Starlette(routes=[
        Route("/v1/models", models), Route("/health", health), Route("/_mode", mode, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m regraft.hybrid.fake_backend")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--mode", default="ok", choices=["ok", "slow", "malformed", "error", "garbage-schema"])
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--logprobs", action="store_true")
    ap.add_argument("--answers")
    ap.add_argument("--model-id", default="fake")
    a = ap.parse_args(argv)
    STATE.update(mode=a.mode, delay=a.delay, logprobs=a.logprobs, model=a.model_id)
    if a.answers:
        with open(a.answers) as f:
            STATE["answers"] = json.load(f)
    import uvicorn

    uvicorn.run(build_app(), host=a.host, port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
