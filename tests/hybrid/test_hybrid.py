"""The orchestrator against real fake-backend processes and a real LanceDB store with real embeddings."""

import asyncio
import json
import time
import urllib.request

import pytest

from regraft.hybrid.backends import Backend, BackendError
from regraft.hybrid.contract import describe_side
from regraft.hybrid.orchestrator import Hybrid, OversizeError, strip_thinking
from regraft.hybrid.policy import policy_from_dict
from regraft.hybrid.store import open_store
from regraft.hybrid.tools import default_tools
from tests.hybrid import procs

# one worker runs this module (--dist loadgroup): its module-scoped servers start once, not once per worker
pytestmark = pytest.mark.xdist_group("hybrid")

ANSWERS = {
    "Reply yes or no": {"content": "yes", "logprob": -0.1},
    "sample me": {"content": "Paris", "samples": ["Paris", "Lyon", "paris!", "Nice"]},
    "capital of France": {"content": "Paris [1].", "logprob": -0.1},
    "xyzzy": {"content": "I am not sure, maybe 7.", "use_evidence": True, "master_content": "It is 8, per the draft review."},
    "multiply": {"tool_call": {"name": "calculator", "arguments": {"expression": "6*7"}}},
    "broken": {"tool_call": {"name": "calculator", "arguments": {"expression": "__import__('os')"}}},
    "unsure": {"content": "Perhaps.", "logprob": -3.0},
}


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hy")
    a = tmp / "answers.json"
    a.write_text(json.dumps(ANSWERS))
    ps, small = procs.fake_backend(tmp, "--logprobs", "--answers", str(a), "--model-id", "small-m", name="small")
    pm, master = procs.fake_backend(tmp, "--answers", str(a), "--model-id", "master-m", name="master")
    yield small, master
    procs.stop(ps)
    procs.stop(pm)


def set_mode(url, **kw):
    req = urllib.request.Request(url.replace("/v1", "/_mode"), data=json.dumps(kw).encode(),
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()


def make(backends, store=None, embedder=None, policy=None, tools=True, master_url=None, **bk):
    small, master = backends
    h = Hybrid(Backend(small, role="small", **bk), Backend(master_url or master, role="master", **bk),
               store=open_store(store) if store else None, embedder=embedder,
               policy=policy_from_dict(policy or {}))
    if tools:
        h.tools = default_tools(h.retriever if store else None)
    return h


def ask(h, q, route="auto"):
    return asyncio.run(h.answer([{"role": "user", "content": q}], route))


def test_grounded_confident_answer_stays_small(backends, store, embedder):
    r = ask(make(backends, store, embedder), "What is the capital of France?")
    assert r.route == "small" and not r.escalated and r.answer == "Paris [1]."
    assert r.evidence[0].path == "france.md" and r.signals.retrieval_top_score > 0.5
    assert r.signals.mean_logprob == pytest.approx(-0.1)
    steps = [s["step"] for s in r.trace.to_list()]
    assert steps == ["retrieve", "fit", "render", "small", "decide"]


def test_escalation_sends_draft_and_evidence_to_master(backends, store, embedder):
    r = ask(make(backends, store, embedder), "What is xyzzy?")
    assert r.route == "master" and r.escalated and not r.degraded
    assert r.answer == "It is 8, per the draft review."  # the master saw the DRAFT in its prompt
    assert r.draft == "I am not sure, maybe 7."
    assert any("retrieval score" in x for x in r.decision.reasons)
    assert any("i am not sure" in x for x in r.decision.reasons)
    assert [s["step"] for s in r.trace.to_list()][-2:] == ["render", "master"]


def test_low_logprob_escalates(backends):
    r = ask(make(backends, policy={"escalate_if": {"retrieval_score_below": None}}), "I am unsure here")
    assert r.route == "master" and "mean logprob -3.000 < -1.500" in r.decision.reasons


def test_answerability_and_agreement_signals(backends, store, embedder):
    pol = {"answerability_check": True, "sample_k": 4, "sample_temperature": 0.7,
           "escalate_if": {"retrieval_score_below": None, "agreement_below": 0.8, "answerability_below": 0.5}}
    r = ask(make(backends, store, embedder, policy=pol, tools=False), "sample me, what is the capital of France?")
    sig = r.signals
    assert sig.answerability == 1.0 and sig.agreement == 0.5  # "Paris" and "paris!" agree with the draft
    assert sig.context_coverage is not None and 0 < sig.context_coverage <= 1
    assert r.route == "master" and r.decision.reasons == ["agreement 0.50 < 0.80"]
    steps = [s["step"] for s in r.trace.to_list()]
    assert "answerability" in steps and "samples" in steps
    assert r.usage_by_model["small"]["completion_tokens"] == 1 + 1 + 4  # draft + answerability + 4 samples


def test_tool_loop_calculator(backends):
    r = ask(make(backends, policy={"escalate_if": {"retrieval_score_below": None}}), "multiply six by seven")
    assert r.route == "small" and r.answer == "tool said: 42"
    assert r.tool_results == [{"tool": "calculator", "ok": True, "error": None}]
    assert [s["step"] for s in r.trace.to_list()] == ["retrieve", "fit", "render", "small", "tool", "small", "decide"]


def test_tool_failure_escalates(backends):
    r = ask(make(backends, policy={"escalate_if": {"retrieval_score_below": None}}), "broken tool please")
    assert r.tool_results[0]["ok"] is False and "not allowed" in r.tool_results[0]["error"]
    assert r.route == "master" and "1 tool failure(s) >= 1" in r.decision.reasons


def test_user_choice(backends):
    h = make(backends, policy={"escalate_if": {"retrieval_score_below": None}})
    assert ask(h, "capital of France", "master").route == "master"
    r = ask(h, "What is xyzzy?", "small")
    assert r.route == "small" and r.decision.reasons == ["user chose the small model (no escalation)"]


def test_master_down_gives_flagged_small_answer_fast(backends):
    dead = f"http://127.0.0.1:{procs.free_port()}/v1"
    h = make(backends, master_url=dead, retries=1, backoff=0.05)
    t = time.monotonic()
    r = ask(h, "What is xyzzy?")
    assert time.monotonic() - t < 5
    assert r.degraded and r.route == "small" and r.answer == "I am not sure, maybe 7."
    assert any("master unavailable, degraded" in x for x in r.decision.reasons)
    # the next request does not wait on the dead master again (cooldown)
    t = time.monotonic()
    r2 = ask(h, "What is xyzzy?")
    assert r2.degraded and "marked down" in r2.decision.reasons[-1] and time.monotonic() - t < 1.0


@pytest.mark.parametrize("mode", ["slow", "malformed", "error"])
def test_master_faults_degrade_within_deadline(backends, mode):
    small, master = backends
    set_mode(master, mode=mode)
    try:
        h = make(backends, policy={"master_timeout_s": 1.5, "retries": 1}, retries=1, backoff=0.05)
        h.master.timeout = 1.5
        t = time.monotonic()
        r = ask(h, "What is xyzzy?")
        took = time.monotonic() - t
    finally:
        set_mode(master, mode="ok")
    assert r.degraded and r.answer == "I am not sure, maybe 7." and took < 6
    h2 = make(backends, policy={"degraded_ok": False, "master_timeout_s": 1.5})
    set_mode(master, mode=mode)
    try:
        h2.master.timeout, h2.master.retries = 1.5, 0
        with pytest.raises(BackendError):
            ask(h2, "What is xyzzy?")
    finally:
        set_mode(master, mode="ok")


def test_small_down_goes_to_master(backends):
    small, master = backends
    set_mode(small, mode="error")
    try:
        h = make(backends, retries=0)
        r = ask(h, "capital of France")
    finally:
        set_mode(small, mode="ok")
    assert r.route == "master" and r.decision.reasons[0].startswith("small model failed")


def test_streaming_escalated_answer_comes_in_pieces(backends, store, embedder):
    h = make(backends, store, embedder)

    async def go():
        out = []
        async for kind, val in h.answer_stream([{"role": "user", "content": "What is xyzzy?"}]):
            out.append((kind, val))
        return out

    ev = asyncio.run(go())
    deltas = [v["content"] for k, v in ev if k == "choice" and v["content"]]
    assert len(deltas) > 3 and "".join(deltas) == "It is 8, per the draft review."
    assert ev[-1][0] == "result" and ev[-1][1].route == "master"


def _ctx_dir(tmp_path_factory, window: int):
    from tests.hybrid.tiny import build_tokenizer

    d = tmp_path_factory.mktemp(f"ctx{window}")
    build_tokenizer(d)
    (d / "config.json").write_text(json.dumps({"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"],
                                               "max_position_embeddings": window, "hidden_size": 32,
                                               "num_hidden_layers": 2, "vocab_size": 406}))
    return d


@pytest.fixture(scope="module")
def tiny_ctx_dir(tmp_path_factory):
    return _ctx_dir(tmp_path_factory, 400)


@pytest.fixture(scope="module")
def wide_ctx_dir(tmp_path_factory):
    return _ctx_dir(tmp_path_factory, 4000)


def test_route_by_fit(backends, tiny_ctx_dir, wide_ctx_dir):
    """Too long for the small model's window but not the master's: the master answers (reason in the trace); too
    long for both: refused with both sets of numbers; evidence is trimmed before either."""
    h = make(backends, policy={"small_max_tokens": 64, "master_max_tokens": 64}, tools=False)
    h.small_side = describe_side("small", h.small.base_url, "small-m", str(tiny_ctx_dir))
    h.master_side = describe_side("master", h.master.base_url, "master-m", str(wide_ctx_dir))
    assert (h.small_side.context_window, h.master_side.context_window) == (400, 4000)
    r = ask(h, "LoRA adapters " * 300)
    assert r.route == "master" and not r.degraded
    assert r.decision.reasons[0].startswith("request does not fit the small model; the master's window fits it: "
                                            "request too large for the small model small-m")
    steps = [s["step"] for s in r.trace.to_list()]
    assert "small" not in steps and steps[-1] == "master"
    fit = next(s for s in r.trace.to_list() if s["step"] == "fit")
    assert "context window 400 minus max_tokens 64 leaves 336" in fit["small"] and isinstance(fit["master"], int)
    with pytest.raises(OversizeError) as e:
        ask(h, "LoRA adapters " * 3000)
    msg = str(e.value)
    assert msg.startswith("request too large for every model: ") and "leaves 336" in msg and "leaves 3936" in msg
    with pytest.raises(OversizeError, match="the master's window fits it"):
        ask(h, "LoRA adapters " * 300, "small")
    assert ask(h, "capital of France").route == "small"


def test_client_max_tokens_shrinks_the_budget(backends, tiny_ctx_dir, wide_ctx_dir):
    from regraft.hybrid.chat_request import parse_chat_request

    h = make(backends, policy={"small_max_tokens": 300, "master_max_tokens": 300}, tools=False)
    h.small_side = describe_side("small", h.small.base_url, "small-m", str(tiny_ctx_dir))
    h.master_side = describe_side("master", h.master.base_url, "master-m", str(wide_ctx_dir))
    msgs = [{"role": "user", "content": "capital of France " + "word " * 60}]
    assert asyncio.run(h.answer(msgs)).route == "master"  # 300 answer tokens leave the small model too little room
    req = parse_chat_request({"messages": msgs, "max_tokens": 16})
    r = asyncio.run(h.answer(msgs, "auto", req))
    assert r.route == "small" and r.bounded == []


def test_oversize_request_is_refused_with_numbers(backends, tiny_ctx_dir):
    h = make(backends, policy={"small_max_tokens": 64, "master_max_tokens": 64}, tools=False)
    h.small_side = describe_side("small", h.small.base_url, "small-m", str(tiny_ctx_dir))
    h.master_side = describe_side("master", h.master.base_url, "master-m", str(tiny_ctx_dir))
    assert h.small_side.context_window == 400 and h.small_side.tokenizer is not None
    with pytest.raises(OversizeError) as e:
        ask(h, "LoRA adapters " * 300)
    msg = str(e.value)
    assert "context window 400 minus max_tokens 64 leaves 336" in msg
    assert ask(h, "capital of France").answer == "Paris [1]."


def test_evidence_is_trimmed_to_fit_the_budget(backends, store, embedder, tiny_ctx_dir):
    h = make(backends, store, embedder, policy={"small_max_tokens": 64, "master_max_tokens": 64,
                                                 "evidence_token_budget": 10_000}, tools=False)
    h.small_side = describe_side("small", h.small.base_url, "small-m", str(tiny_ctx_dir))
    hits = asyncio.run(h.retrieve("France Paris LoRA serve", 3))
    msgs, kept, n = h.build_messages([{"role": "user", "content": "word " * 60}], hits, h.small_side, 64)
    assert n <= 400 - 64 and len(kept) < len(hits)


def test_bad_requests_are_input_errors(backends):
    from regraft.errors import InputError

    h = make(backends)
    for bad in ([], [{"role": "wizard", "content": "x"}], [{"role": "system", "content": "only system"}], "text"):
        with pytest.raises(InputError):
            asyncio.run(h.answer(bad))


def test_strip_thinking():
    assert strip_thinking("<think>hmm</think>\n\nParis") == "Paris"
    assert strip_thinking("reasoning...</think>Paris") == "Paris"
    assert strip_thinking("Paris") == "Paris"


def test_user_chose_master_but_master_down_falls_back_to_small_flagged(backends):
    dead = f"http://127.0.0.1:{procs.free_port()}/v1"
    h = make(backends, master_url=dead, retries=0)
    r = ask(h, "capital of France", "master")
    assert r.degraded and r.route == "small" and r.answer == "Paris [1]."
