"""The OpenAI contract of `regraft serve`, driven by the official `openai` package (sync, async, streaming) against a
real `regraft serve` process on loopback in front of two fast fake backends (real processes). One server for the
module. Each chat-completions parameter is asserted as honoured (it reached the backend that answered and shaped
the answer) or refused with a 400 naming it; every parameter test runs with and without stream=True."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request

import pytest

from tests.hybrid import procs

# one worker runs this module (--dist loadgroup): its module-scoped servers start once, not once per worker
pytestmark = [pytest.mark.server, pytest.mark.xdist_group("openai_contract")]

openai = pytest.importorskip("openai")

ANSWERS = {
    "capital": {"content": "Paris is the capital of France .", "logprobs": [-0.1, -0.2, -0.05, -0.3, -0.1, -0.2, -0.1]},
    "escalate": {"content": "I am not sure , maybe seven", "use_evidence": True, "master_content": "It is eight ."},
    "json please": {"content": "sure", "json_content": "{\"a\": 1}"},
    "weather": {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}},
}
POLICY = {"small_max_tokens": 64, "master_max_tokens": 48, "max_n": 4,
          "escalate_if": {"retrieval_score_below": None, "mean_logprob_below": None}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oai")
    (tmp / "answers.json").write_text(json.dumps(ANSWERS))
    (tmp / "policy.json").write_text(json.dumps(POLICY))
    ps, small = procs.fake_backend(tmp, "--logprobs", "--answers", str(tmp / "answers.json"), "--model-id", "small-m",
                                   name="small")
    pm, master = procs.fake_backend(tmp, "--logprobs", "--answers", str(tmp / "answers.json"), "--model-id",
                                    "master-m", name="master")
    port = procs.free_port()
    try:
        p = procs.start([sys.executable, "-m", "regraft", "serve", "--small", small, "--master", master, "--no-tools",
                         "--policy", str(tmp / "policy.json"), "--port", str(port)],
                        f"http://127.0.0.1:{port}/health", tmp / "serve.log", timeout=60)
    except Exception:
        procs.stop(ps)
        procs.stop(pm)
        raise
    yield {"url": f"http://127.0.0.1:{port}/v1", "small": small, "master": master}
    procs.stop(p)
    procs.stop(ps)
    procs.stop(pm)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["url"], api_key="unused", timeout=30, max_retries=0)


def last_body(url: str) -> dict:
    with urllib.request.urlopen(url.replace("/v1", "/_last"), timeout=5) as r:
        return json.loads(r.read())["body"]


def ask(client, stream: bool, q="What is the capital of France?", **kw) -> dict:
    """One request; the answer normalised to the same shape for stream=False and stream=True."""
    msgs = [{"role": "user", "content": q}]
    if not stream:
        r = client.chat.completions.create(model=kw.pop("model", "regraft"), messages=msgs, **kw)
        return {"texts": [c.message.content for c in r.choices], "finish": [c.finish_reason for c in r.choices],
                "logprobs": [c.logprobs for c in r.choices], "tool_calls": [c.message.tool_calls for c in r.choices],
                "usage": r.usage, "model": r.model, "meta": r.model_extra["regraft"], "chunks": None}
    chunks = list(client.chat.completions.create(model=kw.pop("model", "regraft"), messages=msgs, stream=True, **kw))
    n = 1 + max((c.index for ch in chunks for c in ch.choices), default=0)
    texts, finish, lps, tcs = [""] * n, [None] * n, [[] for _ in range(n)], [[] for _ in range(n)]
    for ch in chunks:
        for c in ch.choices:
            texts[c.index] += c.delta.content or ""
            finish[c.index] = c.finish_reason or finish[c.index]
            if c.logprobs and c.logprobs.content:
                lps[c.index] += c.logprobs.content
            tcs[c.index] += c.delta.tool_calls or []
    meta = next(ch.model_extra["regraft"] for ch in reversed(chunks) if "regraft" in (ch.model_extra or {}))
    return {"texts": texts, "finish": finish, "logprobs": [x or None for x in lps], "tool_calls": [x or None for x in tcs],
            "usage": chunks[-1].usage, "model": chunks[-1].model, "meta": meta, "chunks": chunks}


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])


def test_models_list_and_retrieve(client):
    assert [m.id for m in client.models.list().data] == ["regraft", "small", "master"]
    m = client.models.retrieve("regraft")
    assert m.id == "regraft" and m.object == "model" and m.owned_by == "regraft"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-9")
    assert e.value.body["code"] == "model_not_found"


@STREAM
def test_max_tokens_and_max_completion_tokens(client, server, stream):
    r = ask(client, stream, max_tokens=2)
    assert r["texts"] == ["Paris is"] and r["finish"] == ["length"]
    assert last_body(server["small"])["max_tokens"] == 2
    assert r["meta"]["route"] == "small" and r["meta"]["bounded"] == []  # the client's limit, not a reason to escalate
    r = ask(client, stream, max_completion_tokens=3)
    assert r["texts"] == ["Paris is the"] and r["finish"] == ["length"]


@STREAM
def test_max_tokens_above_the_policy_is_bounded_and_said(client, server, stream):
    r = ask(client, stream, max_tokens=1000)
    assert last_body(server["small"])["max_tokens"] == 64
    assert r["meta"]["bounded"] == [{"param": "max_tokens", "asked": 1000, "used": 64, "by": "policy.small_max_tokens",
                                     "model": "small"}]
    if not stream:
        raw = client.chat.completions.with_raw_response.create(
            model="regraft", messages=[{"role": "user", "content": "capital?"}], max_tokens=1000)
        assert raw.headers["x-regraft-bounded"] == "max_tokens=64"


@STREAM
def test_n_choices(client, stream):
    r = ask(client, stream, n=2)
    assert r["texts"] == ["Paris is the capital of France ."] * 2 and r["finish"] == ["stop", "stop"]
    if stream:
        assert {c.index for ch in r["chunks"] for c in ch.choices} == {0, 1}


@STREAM
def test_stop(client, server, stream):
    r = ask(client, stream, stop=[" capital"])
    assert r["texts"] == ["Paris is the"] and r["finish"] == ["stop"]
    assert last_body(server["small"])["stop"] == [" capital"]
    r = ask(client, stream, stop="France")
    assert r["texts"] == ["Paris is the capital of "]


@STREAM
def test_sampling_parameters_reach_the_backend(client, server, stream):
    ask(client, stream, temperature=0.3, top_p=0.9, seed=7, presence_penalty=0.5, frequency_penalty=-0.5,
        user="u-1", reasoning_effort="low", extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1})
    b = last_body(server["small"])
    assert (b["temperature"], b["top_p"], b["seed"], b["presence_penalty"], b["frequency_penalty"]) == (
        0.3, 0.9, 7, 0.5, -0.5)
    assert (b["user"], b["reasoning_effort"], b["top_k"], b["min_p"], b["repetition_penalty"]) == (
        "u-1", "low", 20, 0.05, 1.1)


@STREAM
def test_logprobs_and_top_logprobs(client, stream):
    r = ask(client, stream, logprobs=True, top_logprobs=3)
    lp = r["logprobs"][0]
    content = lp.content if not stream else lp
    assert [t.token for t in content] == ["Paris", " is", " the", " capital", " of", " France", " ."]
    assert [t.logprob for t in content][:3] == [-0.1, -0.2, -0.05]
    assert all(len(t.top_logprobs) == 3 for t in content)
    r = ask(client, stream)  # not asked: none returned, although regraft reads them for its signals
    assert r["logprobs"] == [None] and r["meta"]["signals"]["tokens"] == 7


@STREAM
def test_response_format(client, server, stream):
    rf = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object", "required": ["a"]}}}
    r = ask(client, stream, q="json please", response_format=rf)
    assert json.loads(r["texts"][0]) == {"a": 1} and r["meta"]["route"] == "small"
    assert last_body(server["small"])["response_format"] == rf
    # a draft that is not the JSON asked for is escalated, with the reason
    r = ask(client, stream, q="capital of France", response_format={"type": "json_object"})
    assert r["meta"]["route"] == "master" and "answer is not valid JSON (response_format json_object)" in r["meta"][
        "reasons"]


@STREAM
def test_client_tools_come_back_as_tool_calls(client, server, stream):
    r = ask(client, stream, q="weather in Paris?", tools=TOOLS, tool_choice="auto", parallel_tool_calls=False)
    tc = r["tool_calls"][0][0]
    assert tc.function.name == "get_weather" and json.loads(tc.function.arguments) == {"city": "Paris"}
    assert r["finish"] == ["tool_calls"] and r["meta"]["route"] == "small"
    assert r["meta"]["server_tools"].startswith("off")
    b = last_body(server["small"])
    assert b["tools"] == TOOLS and b["tool_choice"] == "auto" and b["parallel_tool_calls"] is False


@STREAM
def test_escalation_sums_usage_of_both_models(client, stream):
    kw = {"stream_options": {"include_usage": True}} if stream else {}
    r = ask(client, stream, q="escalate this", **kw)
    assert r["texts"] == ["It is eight ."] and r["meta"]["route"] == "master"
    by = r["meta"]["usage_by_model"]
    assert set(by) == {"small", "master"} and by["master"]["completion_tokens"] == 4
    u = r["usage"]
    assert u.completion_tokens == by["small"]["completion_tokens"] + 4
    assert u.total_tokens == by["small"]["total_tokens"] + by["master"]["total_tokens"]
    assert r["model"] == "master-m"


def test_stream_include_usage_is_the_last_chunk(client):
    r = ask(client, True, stream_options={"include_usage": True}, max_tokens=2)
    last = r["chunks"][-1]
    assert last.choices == [] and last.usage.completion_tokens == 2 and last.usage.total_tokens > 2
    assert all(ch.usage is None for ch in r["chunks"][:-1])
    r = ask(client, True)
    assert all(ch.choices for ch in r["chunks"])  # without include_usage no chunk has empty choices


def test_logit_bias_only_when_one_model_answers(client, server):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="regraft", messages=[{"role": "user", "content": "capital?"}],
                                       logit_bias={"15": 2})
    assert e.value.body["param"] == "logit_bias"
    client.chat.completions.create(model="small", messages=[{"role": "user", "content": "capital?"}],
                                   logit_bias={"15": 2})
    assert last_body(server["small"])["logit_bias"] == {"15": 2}


def test_metadata_echoed_and_store_refused(client):
    r = client.chat.completions.create(model="regraft", messages=[{"role": "user", "content": "capital?"}],
                                       metadata={"team": "a"}, store=False)
    assert r.model_extra["regraft"]["metadata"] == {"team": "a"}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="regraft", messages=[{"role": "user", "content": "x"}], store=True)
    assert e.value.body["param"] == "store"


@pytest.mark.parametrize("kw,param,code", [
    ({"max_tokens": -1}, "max_tokens", "integer_below_min_value"),
    ({"max_tokens": "5"}, "max_tokens", "invalid_type"),
    ({"n": 0}, "n", "integer_below_min_value"),
    ({"n": 5}, "n", "integer_above_max_value"),  # the policy's max_n
    ({"temperature": 2.5}, "temperature", "decimal_above_max_value"),
    ({"top_p": -0.1}, "top_p", "decimal_below_min_value"),
    ({"top_logprobs": 3}, "top_logprobs", "invalid_value"),  # without logprobs
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "integer_above_max_value"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "invalid_value"),
    ({"tool_choice": "auto"}, "tool_choice", "invalid_value"),  # without tools
    ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),  # without stream
    ({"seed": 1.5}, "seed", "invalid_type"),
    ({"modalities": ["text", "audio"]}, "modalities", "unsupported_parameter"),
    ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
    ({"extra_body": {"frobnicate": 1}}, "frobnicate", "unknown_parameter"),
    ({"max_tokens": 3, "max_completion_tokens": 4}, "max_tokens", "invalid_value"),
])
def test_invalid_parameters_are_400_naming_them(client, kw, param, code):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="regraft", messages=[{"role": "user", "content": "capital?"}], **kw)
    err = e.value.body
    assert e.value.status_code == 400 and err["param"] == param and err["code"] == code
    assert err["type"] == "invalid_request_error" and param.split(".")[0] in err["message"]


@pytest.mark.parametrize("raw,param,code", [
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "messages[0].content", "invalid_value"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stream": "false"}', "stream", "invalid_type"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', None, "invalid_json"),
    (b'{"messages": [{"role": "user", "content": "hi"}', None, "invalid_json"),
    (b'\xff\xfe', None, "invalid_json"),
    (b'[1, 2]', None, "invalid_type"),
    (b'{"messages": []}', "messages", "empty_array"),
    (b'{"model": "regraft"}', "messages", "missing_required_parameter"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}',
     "messages[0].content[0].type", "unsupported_content"),
    (b'{"messages": [{"role": "system", "content": "only system"}]}', "messages", "invalid_value"),
])
def test_malformed_bodies_are_400_json_never_500(server, raw, param, code):
    import httpx

    r = httpx.post(server["url"] + "/chat/completions", content=raw, headers={"content-type": "application/json"},
                   timeout=10)
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["param"] == param and err["code"] == code and err["type"] == "invalid_request_error"


def test_a_backend_refusing_a_parameter_is_a_400_not_a_502(client, server):
    req = urllib.request.Request(server["small"].replace("/v1", "/_mode"), data=b'{"mode": "reject"}',
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()
    try:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="regraft", messages=[{"role": "user", "content": "capital?"}], seed=3)
    finally:
        req.data = b'{"mode": "ok"}'
        urllib.request.urlopen(req, timeout=5).read()
    assert e.value.body["code"] == "backend_rejected_request" and "injected rejection" in e.value.body["message"]


def test_unknown_paths_and_methods_are_openai_errors(server):
    import httpx

    r = httpx.get(server["url"] + "/chat/completions", timeout=10)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = httpx.post(server["url"] + "/completions", json={}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.post(server["url"] + "/chat/completions", json={"model": "gpt-9", "messages": [
        {"role": "user", "content": "x"}]}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_async_client(server):
    async def go():
        c = openai.AsyncOpenAI(base_url=server["url"], api_key="unused", timeout=30, max_retries=0)
        msgs = [{"role": "user", "content": "What is the capital of France?"}]
        rs = await asyncio.gather(*(c.chat.completions.create(model="regraft", messages=msgs, max_tokens=k, n=2)
                                    for k in (1, 2, 3)))
        stream = await c.chat.completions.create(model="regraft", messages=msgs, stream=True, stop=[" of"],
                                                 stream_options={"include_usage": True})
        text, usage = "", None
        async for ch in stream:
            text += "".join(x.delta.content or "" for x in ch.choices)
            usage = ch.usage or usage
        with pytest.raises(openai.BadRequestError):
            await c.chat.completions.create(model="regraft", messages=msgs, max_tokens=0)
        await c.close()
        return rs, text, usage

    rs, text, usage = asyncio.run(go())
    assert [[len(ch.message.content.split()) for ch in r.choices] for r in rs] == [[1, 1], [2, 2], [3, 3]]
    assert text == "Paris is the capital" and usage.completion_tokens == 4
