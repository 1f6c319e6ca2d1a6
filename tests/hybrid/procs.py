"""Real processes on loopback for the runtime tests: free ports, bounded start-up waits, kill by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen | None, timeout: float, log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.2)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    stop(proc)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{tail}")


def start(cmd: list[str], ready_url: str, log: Path, timeout: float = 60.0, env: dict | None = None) -> subprocess.Popen:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    fh = open(log, "wb")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=e, start_new_session=True)
    wait_http(ready_url, proc, timeout, log)
    return proc


def stop(proc: subprocess.Popen | None, sig=signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)  # the process group we created for this one process (start_new_session)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=3)  # uvicorn waits for keep-alive clients on SIGTERM; do not wait for it long
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def fake_backend(tmp: Path, *args: str, name: str = "fake") -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = start([PY, "-m", "regraft.hybrid.fake_backend", "--port", str(port), *args],
                 f"http://127.0.0.1:{port}/health", tmp / f"{name}-{port}.log", timeout=30)
    return proc, f"http://127.0.0.1:{port}/v1"


def transformers_serve(model_dir: Path, log: Path) -> tuple[subprocess.Popen, str, int]:
    port = free_port()
    exe = str(Path(PY).with_name("transformers"))
    cmd = [exe, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=e, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}/v1", port
