"""A deterministic OpenAI-compatible server, run as a real process on loopback.

Used to measure regraft's *own* overhead (the backend answers in microseconds, so the serve latency above the
direct-backend latency is regraft's), and to inject faults in tests without mocking HTTP:

    python -m regraft.hybrid.fake_backend --port 8001 [--mode ok|slow|malformed|error|garbage-schema]
        [--delay 0.0] [--logprobs] [--answers answers.json] [--model-id fake]

``answers.json`` maps a substring of the last user message to ``{"content": str, "logprob": float,
"tool_call": {"name": str, "arguments": {...}}}``. Without a match the answer is ``"echo: <question>"``.
When the request carries tools and a matching entry names a tool_call, the first answer is that tool call;
once a ``tool`` message is present the answer is ``"tool said: <tool content>"``.
It honours ``n``, ``stop``, ``max_tokens`` / ``max_completion_tokens`` (its tokens are words), ``logprobs`` /
``top_logprobs`` (an entry's ``"logprobs": [per-token values]``), ``temperature > 0`` (an entry's ``"samples"`` list, one
per choice), ``response_format`` (an entry's ``"json_content"``) and ``stream_options.include_usage``.
``POST /_mode {"mode": ..., "delay": ...}`` switches behaviour at run time; ``GET /_last`` returns the last request
body it received (what regraft passed through). Never use it as a model.
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
    if body.get("tools") and entry.get("tool_call") and body.get("tool_choice") != "none":
        tc = entry["tool_call"]
        return {"content": "", "tool_calls": [{"id": "call_" + uuid.uuid4().hex[:8], "type": "function",
                "function": {"name": tc["name"], "arguments": json.dumps(tc.get("arguments", {}))}}]}
    sys_txt = " ".join(m.get("content", "") for m in msgs if m.get("role") == "system" and isinstance(m.get("content"), str))
    content = entry.get("content", "echo: " + q[:200])
    if entry.get("use_evidence") and "DRAFT" in sys_txt:
        content = entry.get("master_content", content)
    rf = body.get("response_format") or {}
    if rf.get("type") in ("json_object", "json_schema") and "json_content" in entry:
        content = entry["json_content"]
    return {"content": content, "logprob": entry.get("logprob", -0.05), "logprobs": entry.get("logprobs"),
            "samples": entry.get("samples")}


def _words(text: str) -> list[str]:
    """The fake's tokens: words, each with its leading space (so ''.join(tokens) == text)."""
    out = []
    for i, w in enumerate(text.split(" ")):
        out.append(w if i == 0 else " " + w)
    return [t for t in out if t] if text else []


def _choice_text(ans: dict, body: dict, i: int) -> tuple[str, str]:
    """Content and finish_reason of choice ``i``, honouring temperature (samples), stop and max_tokens."""
    content = ans.get("content", "")
    samples = ans.get("samples")
    if samples and (body.get("temperature") or 0) > 0:
        content = samples[i % len(samples)]
    finish = "stop"
    for s in body.get("stop") or []:
        cut = content.find(s)
        if cut >= 0:
            content = content[:cut]
    toks = _words(content)
    mt = body.get("max_completion_tokens") or body.get("max_tokens")
    if mt is not None and len(toks) > mt:
        content, finish = "".join(toks[:mt]), "length"
    return content, finish


def _logprobs(ans: dict, content: str, top: int) -> dict:
    toks = _words(content) or [""]
    per = ans.get("logprobs") or []
    items = []
    for j, t in enumerate(toks):
        lp = float(per[j]) if j < len(per) else float(ans.get("logprob", -0.05))
        alts = [{"token": t, "logprob": lp, "bytes": list(t.encode())}]
        alts += [{"token": f"<alt{k}>", "logprob": lp - 1.0 - k, "bytes": None} for k in range(max(0, top - 1))]
        items.append({"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": alts[:top]})
    return {"content": items, "refusal": None}


def _prompt_tokens(body: dict) -> int:
    return sum(len(str(m.get("content") or "").split()) for m in body.get("messages") or []) + 1


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

    async def last(_: Request):
        return JSONResponse({"body": STATE.get("last"), "calls": STATE["calls"]})

    async def chat(req: Request):
        STATE["calls"] += 1
        body = await req.json()
        STATE["last"] = body
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
        if m == "reject":
            return JSONResponse({"error": {"message": "injected rejection: unsupported parameter"}}, status_code=400)
        ans = _answer(body)
        rid = "fake-" + uuid.uuid4().hex[:12]
        n = int(body.get("n") or 1)
        want_lp = STATE["logprobs"] and body.get("logprobs")
        top = int(body.get("top_logprobs") or 0)
        texts = [_choice_text(ans, body, i) for i in range(n)]
        ptoks = _prompt_tokens(body)
        ctoks = sum(len(_words(t)) for t, _ in texts)
        usage = {"prompt_tokens": ptoks, "completion_tokens": ctoks, "total_tokens": ptoks + ctoks}
        if body.get("stream"):
            async def gen():
                base = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": STATE["model"]}
                for i, (content, finish) in enumerate(texts):
                    yield "data: " + json.dumps({**base, "choices": [{"index": i, "delta": {"role": "assistant"}}]}) + "\n\n"
                    if ans.get("tool_calls"):
                        tcs = [{"index": k, **tc} for k, tc in enumerate(ans["tool_calls"])]
                        yield "data: " + json.dumps({**base, "choices": [{"index": i, "delta": {"tool_calls": tcs}}]}) + "\n\n"
                        finish = "tool_calls"
                    for w in _words(content):
                        ch = {"index": i, "delta": {"content": w}}
                        if want_lp:
                            ch["logprobs"] = {"content": _logprobs(ans, w, top)["content"][:1], "refusal": None}
                        yield "data: " + json.dumps({**base, "choices": [ch]}) + "\n\n"
                    yield "data: " + json.dumps({**base, "choices": [{"index": i, "delta": {}, "finish_reason": finish}]}) + "\n\n"
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield "data: " + json.dumps({**base, "choices": [], "usage": usage}) + "\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(gen(), media_type="text/event-stream")
        choices = []
        for i, (content, finish) in enumerate(texts):
            msg = {"role": "assistant", "content": content}
            if ans.get("tool_calls"):
                msg["tool_calls"] = ans["tool_calls"]
                finish = "tool_calls"
            choice = {"index": i, "message": msg, "finish_reason": finish}
            if want_lp:
                choice["logprobs"] = _logprobs(ans, content, top)
            choices.append(choice)
        return JSONResponse({"id": rid, "object": "chat.completion", "created": int(time.time()), "model": STATE["model"],
                             "choices": choices, "usage": usage})

    return Starlette(routes=[
        Route("/v1/models", models), Route("/health", health), Route("/_mode", mode, methods=["POST"]),
        Route("/_last", last), Route("/v1/chat/completions", chat, methods=["POST"]),
    ])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m regraft.hybrid.fake_backend")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--mode", default="ok", choices=["ok", "slow", "malformed", "error", "garbage-schema", "reject"])
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
