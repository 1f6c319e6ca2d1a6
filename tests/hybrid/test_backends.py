"""The backend client against real OpenAI-compatible server processes on loopback (no mocked HTTP)."""

import asyncio
import json
import time
import urllib.request

import pytest

from regraft.hybrid.backends import Backend, BackendError
from tests.hybrid import procs

# one worker runs this module (--dist loadgroup): its module-scoped servers start once, not once per worker
pytestmark = pytest.mark.xdist_group("backends")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fb")
    answers = tmp / "answers.json"
    answers.write_text(json.dumps({"capital": {"content": "Paris is the capital.", "logprob": -0.3}}))
    p, url = procs.fake_backend(tmp, "--logprobs", "--answers", str(answers), "--model-id", "fake-small")
    yield url
    procs.stop(p)


def set_mode(url, **kw):
    req = urllib.request.Request(url.replace("/v1", "/_mode"), data=json.dumps(kw).encode(),
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()


def run(coro):
    return asyncio.run(coro)


def test_chat_models_logprobs(fake):
    b = Backend(fake, role="small")
    assert run(b.models()) == ["fake-small"]
    r = run(b.chat([{"role": "user", "content": "What is the capital?"}]))
    assert r.content == "Paris is the capital." and r.model == "fake-small"
    assert r.logprobs == [-0.3] * 4 and r.mean_logprob == pytest.approx(-0.3)
    assert b.logprobs_supported is True and r.attempts == 1


def test_streaming(fake):
    async def go():
        b = Backend(fake, role="small")
        return [c["choices"][0]["delta"].get("content", "") async for c in b.stream([{"role": "user", "content": "capital"}])]

    assert "".join(run(go())) == "Paris is the capital."


@pytest.mark.parametrize("mode,kind,max_s", [("error", "http", 5), ("malformed", "malformed", 5),
                                             ("garbage-schema", "malformed", 5), ("slow", "timeout", 6)])
def test_faults_are_bounded_and_clear(fake, mode, kind, max_s):
    set_mode(fake, mode=mode)
    try:
        b = Backend(fake, role="master", timeout=1.5, retries=2, backoff=0.05)
        t = time.monotonic()
        with pytest.raises(BackendError) as e:
            run(b.chat([{"role": "user", "content": "hi"}]))
        took = time.monotonic() - t
    finally:
        set_mode(fake, mode="ok")
    assert e.value.kind == kind
    assert took < max_s
    assert fake in str(e.value)
    if kind in ("http", "malformed") and mode != "garbage-schema":
        assert e.value.attempts == 3  # retried with backoff
    if mode == "slow":
        assert took >= 1.4  # waited for the deadline, not longer


def test_retry_recovers_after_transient_failure(fake, tmp_path):
    set_mode(fake, mode="error")

    async def go():
        b = Backend(fake, role="small", retries=4, backoff=0.2)
        task = asyncio.create_task(b.chat([{"role": "user", "content": "capital"}]))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(set_mode, fake, mode="ok")
        return await task

    r = run(go())
    assert r.content == "Paris is the capital." and r.attempts >= 2


def test_connection_refused_is_fast_and_names_the_url():
    url = f"http://127.0.0.1:{procs.free_port()}/v1"
    b = Backend(url, role="master", retries=1, backoff=0.05, timeout=5)
    t = time.monotonic()
    with pytest.raises(BackendError) as e:
        run(b.chat([{"role": "user", "content": "hi"}]))
    assert e.value.kind == "connect" and time.monotonic() - t < 3
    assert "is the master server running at" in str(e.value)
    assert run(b.health(timeout=1)) is False


def test_bad_url_is_an_input_problem():
    from regraft.errors import RegraftError

    with pytest.raises(RegraftError, match="not an http"):
        Backend("localhost:8000", role="small")
