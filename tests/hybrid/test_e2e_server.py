"""End to end: two real `transformers serve` processes (tiny Qwen3s built at test time) behind a real
`regraft serve` process, used through the stock `openai` client. No mocked HTTP anywhere."""

import json
import subprocess
import sys
import time

import pytest

from tests.hybrid import procs

# one worker runs this module (--dist loadgroup): its module-scoped servers start once, not once per worker
pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.xdist_group("e2e_server")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from tests.hybrid.tiny import build_tiny_qwen3

    root = tmp_path_factory.mktemp("tiny")
    small = build_tiny_qwen3(root / "qwen3-tiny-small", seed=0)
    master = build_tiny_qwen3(root / "qwen3-tiny-master", seed=1, hidden=48)
    # a model with a context window too small for the policy's budget, and one without a chat template
    short = build_tiny_qwen3(root / "qwen3-tiny-short", seed=2, max_pos=256)
    notpl = root / "qwen3-tiny-notemplate"
    import shutil

    shutil.copytree(small, notpl)
    (notpl / "chat_template.jinja").unlink()
    cfg = json.loads((notpl / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (notpl / "tokenizer_config.json").write_text(json.dumps(cfg))
    return {"small": small, "master": master, "short": short, "notpl": notpl}


@pytest.fixture(scope="module")
def backends(models, tmp_path_factory):
    logs = tmp_path_factory.mktemp("tslogs")
    ps, small, _ = procs.transformers_serve(models["small"], logs / "small.log")
    pm, master, _ = procs.transformers_serve(models["master"], logs / "master.log")
    try:
        procs.wait_http(small.replace("/v1", "/health"), ps, 120, logs / "small.log")
        procs.wait_http(master.replace("/v1", "/health"), pm, 120, logs / "master.log")
        yield {"small": small, "master": master, "ps": ps, "pm": pm}
    finally:
        procs.stop(ps)
        procs.stop(pm)


@pytest.fixture(scope="module")
def serve(backends, store, tmp_path_factory):
    port = procs.free_port()
    log = tmp_path_factory.mktemp("rs") / "serve.log"
    p = procs.start([sys.executable, "-m", "regraft", "serve", "--small", backends["small"], "--master",
                     backends["master"], "--store", str(store), "--port", str(port), "--trace"],
                    f"http://127.0.0.1:{port}/health", log, timeout=120)
    yield f"http://127.0.0.1:{port}/v1", log
    procs.stop(p)


def regraft(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "regraft", *args], capture_output=True, text=True, timeout=timeout)


def test_contract_passes_for_two_qwen3s(backends, models):
    p = regraft("serve", "--small", backends["small"], "--master", backends["master"], "--check-only",
                "--format", "json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["small"]["model"] == str(models["small"]) and rep["small"]["resolved"] == "local"
    assert rep["master"]["context_window"] == 2048 and rep["master"]["tools_in_template"]
    assert not [f for f in rep["findings"] if f["severity"] == "error"]


@pytest.mark.parametrize("which,needle", [
    ("short", "context window 256 tokens < "),
    ("notpl", "has no chat template"),
])
def test_contract_mismatch_stops_startup(backends, models, which, needle):
    t = time.monotonic()
    p = regraft("serve", "--small", backends["small"], "--master", backends["master"],
                "--master-model", str(models[which]), "--port", str(procs.free_port()))
    assert p.returncode == 2 and time.monotonic() - t < 60
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("regraft serve: error: contract check failed, not starting:") and needle in line


def test_openai_client_unchanged(serve, models):
    import openai

    url, _ = serve
    c = openai.OpenAI(base_url=url, api_key="unused", timeout=120, max_retries=0)
    assert {m.id for m in c.models.list().data} == {"regraft", "small", "master"}
    r = c.chat.completions.create(model="regraft", messages=[{"role": "user", "content": "What is the capital of France?"}],
                                  max_tokens=8)
    meta = r.model_extra["regraft"]
    # the random tiny small model answers "" -> escalated with the reason, master's id reported
    assert meta["escalated"] and "empty answer" in meta["reasons"] and meta["route"] == "master"
    assert r.model == str(models["master"])
    assert meta["evidence"][0]["source"] == "france.md"
    assert meta["signals"]["mean_logprob"] is None  # transformers serve returns no logprobs; said, not faked
    steps = [s["step"] for s in meta["trace"]]
    assert steps[:5] == ["retrieve", "fit", "render", "small", "decide"] and "master" in steps
    r2 = c.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert r2.model_extra["regraft"]["route"] == "small" and r2.model == str(models["small"])


def test_streaming_through_openai_client(serve, models):
    import openai

    url, _ = serve
    c = openai.OpenAI(base_url=url, api_key="unused", timeout=120, max_retries=0)
    chunks = list(c.chat.completions.create(model="master", stream=True, max_tokens=8,
                                            messages=[{"role": "user", "content": "Tell me about LoRA."}]))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
    assert chunks[-1].model == str(models["master"])
    assert chunks[-1].model_extra["regraft"]["route"] == "master"


def test_oversize_and_bad_requests(serve):
    import httpx

    url, _ = serve
    r = httpx.post(url + "/chat/completions", content=b"x" * 1_100_000, timeout=30)
    assert r.status_code == 413 and "accepts at most 1000000" in r.json()["error"]["message"]
    r = httpx.post(url + "/chat/completions", json={"messages": [{"role": "user", "content": "LoRA " * 3000}]},
                   timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert "context window 2048" in r.json()["error"]["message"]
    r = httpx.post(url + "/chat/completions", content=b"{nope", timeout=30)
    assert r.status_code == 400 and "could not parse the JSON body" in r.json()["error"]["message"]
    r = httpx.post(url + "/chat/completions", json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]},
                   timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_master_killed_means_degraded_flagged_answers(serve, backends):
    """Last in this module: it kills the master."""
    import httpx

    url, _ = serve
    procs.stop(backends["pm"])
    t = time.monotonic()
    r = httpx.post(url + "/chat/completions", json={"messages": [{"role": "user", "content": "capital of France?"}],
                                                    "max_tokens": 8}, timeout=60)
    assert r.status_code == 200 and time.monotonic() - t < 20
    meta = r.json()["regraft"]
    assert meta["degraded"] and meta["route"] == "small" and r.headers["x-regraft-degraded"] == "true"
    assert any("master unavailable, degraded" in x for x in meta["reasons"])
    h = httpx.get(url.replace("/v1", "/health"), timeout=30).json()
    assert h["master"] is False and h["small"] is True and h["stats"]["degraded"] >= 1
