"""One real OpenAI-compatible test server on loopback for the session (tests/endpoint/server.py)."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A tiny Qwen3 (real BPE tokenizer + chat template) and a PEFT LoRA on every projection."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from tests.hybrid.tiny import build_tiny_qwen3
    from tests.factories import peft_adapter

    d = tmp_path_factory.mktemp("endpoint")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = build_tiny_qwen3(d / "qwen3-tiny")
        lora = peft_adapter(base, d / "lora")
    return {"dir": d, "base": base, "lora": lora}


@pytest.fixture(scope="session")
def server(world):
    """The adapter served under several names, each with what the server really does with it."""
    from tests.hybrid.procs import PY, free_port, start, stop

    port = free_port()
    lora = world["lora"]
    cmd = [PY, "-m", "tests.endpoint.server", "--base", str(world["base"]), "--port", str(port),
           "--adapter", f"good={lora}", "--adapter", f"noop={lora}:ignore", "--adapter", f"swapped={lora}:swap",
           "--adapter", f"half={lora}:halfscale", "--adapter", f"nolp={lora}:nologprobs",
           "--adapter", f"rejectlp={lora}:rejectlp", "--adapter", f"slow={lora}:slow"]
    env = {"PYTHONPATH": os.pathsep.join([os.getcwd(), os.path.join(os.getcwd(), "src"),
                                          os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    url = f"http://127.0.0.1:{port}/v1"
    proc = start(cmd, url + "/models", world["dir"] / "server.log", timeout=90, env=env)
    yield url
    import signal

    stop(proc, signal.SIGKILL)  # our own process group; nothing to flush
