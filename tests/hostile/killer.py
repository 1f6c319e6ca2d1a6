"""SIGKILL a writer at random points and judge what it left: the old state, or the complete new one.

A child Python process imports what the writer needs, says "ready", waits for "go" on stdin, then runs the writer;
the parent sends "go", sleeps a random fraction of the writer's measured run time, and SIGKILLs the child. The
writer's ``judge(out)`` then classifies the output path: "old", "new", or "corrupt: why".
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
CHILD = r"""
import json, os, sys
spec = json.loads(sys.argv[1])
for m in spec["preload"]:
    __import__(m)
if spec.get("kill_at_rename"):  # SIGKILL right after the N-th rename/exchange (aimed between the renames)
    import signal
    import regraft.outputs as _o
    _n, _k = [0], int(spec["kill_at_rename"])
    def _after(f):
        def g(*a, **kw):
            r = f(*a, **kw)
            if r is not False:
                _n[0] += 1
                if _n[0] == _k:
                    os.kill(os.getpid(), signal.SIGKILL)
            return r
        return g
    os.replace, os.rename, _o._exchange = _after(os.replace), _after(os.rename), _after(_o._exchange)
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
if spec.get("argv") is not None:
    from regraft.cli.main import main
    try:
        code = main(spec["argv"])
    except SystemExit as e:
        code = e.code
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(int(code or 0))
exec(spec["code"])
os._exit(0)
"""


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", REGRAFT_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return env


def start(spec: dict, extra_env: dict | None = None) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**_env(), **(extra_env or {})},
                         cwd=REPO)
    line = p.stdout.readline()
    if line.strip() != b"ready":
        p.kill()
        raise RuntimeError(f"child did not start: {line!r} {p.stderr.read()[-2000:]!r}")
    return p


def run_once(spec: dict, kill_after: float | None, extra_env: dict | None = None) -> tuple[str, float, bytes]:
    """('killed'|'exit N', seconds after go, stderr)."""
    p = start(spec, extra_env)
    t0 = time.perf_counter()
    p.stdin.write(b"go\n")
    p.stdin.flush()
    if kill_after is None:
        _, err = p.communicate(timeout=600)
        return f"exit {p.returncode}", time.perf_counter() - t0, err
    try:
        p.wait(timeout=kill_after)
        _, err = p.communicate()
        return f"exit {p.returncode}", time.perf_counter() - t0, err
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.communicate()
        return "killed", kill_after, b""


@dataclass
class Writer:
    name: str
    spec: Callable[[Path], dict]  # out path -> child spec
    prepare: Callable[[Path], None]  # put the "old state" at out (or nothing)
    judge: Callable[[Path], str]  # "old" | "new" | "corrupt: ..."
    env: Callable[[Path], dict] = field(default=lambda out: {})
    after: Callable[[Path], str] | None = None  # re-run to completion after a kill; "" if fine, else why not


@dataclass
class KillResult:
    writer: str
    runs: int = 0
    killed: int = 0
    finished: int = 0
    old: int = 0
    new: int = 0
    partial: int = 0  # index only: a consistent subset of the complete index (every committed batch kept)
    corrupt: int = 0
    failures: list[str] = field(default_factory=list)
    leftovers: int = 0  # temporary files left next to the output: the kill landed while it was being written
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def aimed_kill_loop(w: Writer, workdir: Path, max_renames: int = 8, recover: bool = False) -> KillResult:
    """Kill right after the 1st, 2nd, ... rename the writer makes (every point between two renames), until a run
    finishes. ``recover``: judge after ``regraft.outputs.recover`` (what the next run on the path does first)."""
    from regraft import outputs

    res = KillResult(w.name + " (kill aimed after each rename)")
    t_start = time.perf_counter()
    for k in range(1, max_renames + 1):
        d = workdir / f"aimed{k}"
        d.mkdir(parents=True, exist_ok=True)
        out = d / "out"
        w.prepare(out)
        status, _, err = run_once({**w.spec(out), "kill_at_rename": k}, None, w.env(out))
        killed = status == f"exit {-signal.SIGKILL}"
        res.runs += 1
        res.killed += killed
        res.finished += not killed
        if recover:
            outputs.recover(out)
        verdict = w.judge(out)
        if verdict in ("old", "new"):
            setattr(res, verdict, getattr(res, verdict) + 1)
        else:
            res.corrupt += 1
            res.failures.append(f"killed after rename {k}: {verdict}")
        if not killed:
            if status != "exit 0":
                res.failures.append(f"after rename {k}: {status}: {err[-300:]!r}")
            break
    res.seconds = round(time.perf_counter() - t_start, 1)
    return res


def kill_loop(w: Writer, workdir: Path, runs: int, seed: int = 0) -> KillResult:
    rng = random.Random(seed)
    res = KillResult(w.name)
    t_start = time.perf_counter()
    ref = workdir / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    out = ref / "out"
    w.prepare(out)
    status, full, err = run_once(w.spec(out), None, w.env(out))
    if status != "exit 0" or w.judge(out) != "new":
        raise RuntimeError(f"{w.name}: the uninterrupted run failed ({status}, {w.judge(out)}): {err[-2000:]!r}")
    # kill points: half spread evenly over the whole run, half over its last 40% (where the output is written)
    points = [full * 1.15 * (i + rng.random()) / max(1, (runs + 1) // 2) for i in range((runs + 1) // 2)]
    points += [full * (0.75 + 0.4 * (i + rng.random()) / max(1, runs // 2)) for i in range(runs // 2)]
    rng.shuffle(points)
    for i, when in enumerate(points):
        d = workdir / f"run{i}"
        d.mkdir(parents=True, exist_ok=True)
        out = d / "out"
        w.prepare(out)
        status, _, err = run_once(w.spec(out), when, w.env(out))
        res.runs += 1
        res.killed += status == "killed"
        res.finished += status != "killed"
        verdict = w.judge(out)
        if verdict in ("old", "new", "partial"):
            setattr(res, verdict, getattr(res, verdict) + 1)
        else:
            res.corrupt += 1
            res.failures.append(f"run {i} ({status}): {verdict}")
        if status != "killed" and status != "exit 0":
            res.failures.append(f"run {i}: {status}: {err[-300:]!r}")
        res.leftovers += any(p.name != "out" and "tmp" in p.name for p in d.iterdir()) or (
            out.is_dir() and any("tmp" in p.name for p in out.rglob("*")))
        if w.after is not None:
            why = w.after(out)
            if why:
                res.corrupt += 1
                res.failures.append(f"run {i}: re-run after the kill: {why}")
    res.seconds = round(time.perf_counter() - t_start, 1)
    return res
