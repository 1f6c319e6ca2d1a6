import json
import os
import resource
import time
from pathlib import Path

import pytest


# One intra-op thread per test process (and, inherited, per CLI / server subprocess): the suite runs as `-n 2` on
# 2 cores beside the zoo build, and torch's default of one thread per core then oversubscribes the machine, where
# OpenMP's spinning workers burn CPU waiting (the transfer bench smoke test: 446 CPU-s with 2 threads under load,
# 54 alone with 1). Set before torch is imported; a test that wants more threads sets them itself.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# Never touch the network or the user's caches from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("REGRAFT_OFFLINE", "1")

# The zoo tier the tests use: smoke (the tier of the committed bench results), built once per run and shared by all
# xdist workers (file lock). REGRAFT_TEST_TIER=ci runs the same tests on the cheaper ci tier (bench/zoo/build.py),
# which does not pass all of them yet (bench/results/ci_time.md).
ZOO_TIER = os.environ.get("REGRAFT_TEST_TIER", "smoke")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("REGRAFT_CACHE", str(tmp_path_factory.getbasetemp() / "regraft-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.getbasetemp() / "hf-cache"))
    # the user catalog (`regraft catalog add`) of whoever runs the tests must not change what the catalog answers
    monkeypatch.setenv("REGRAFT_CATALOG_DIR", str(tmp_path_factory.getbasetemp() / "user-catalog"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny model world of tests/factories.py, shared by tests/port, tests/verify and tests/drift."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from tests.factories import tiny_world

    return tiny_world(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def zoo_tier() -> str:
    """Name of the zoo tier the tests run on (`ZOO_TIER`)."""
    return ZOO_TIER


@pytest.fixture(scope="session")
def zoo(zoo_tier) -> Path:
    """The test tier's directory, built if needed: once per run for all xdist workers (`build_zoo` holds a file
    lock; a worker that finds it built reuses it)."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from bench.zoo import build

    build._setup_torch()
    return build.build_zoo(zoo_tier, quiet=True)


# ------------------------------------------------------------------ order: the zoo's tests last
def _needs_zoo(item) -> bool:
    return bool({"zoo", "zoo_smoke"} & set(getattr(item, "fixturenames", ())))


@pytest.hookimpl(tryfirst=True)  # before xdist appends the group to the node ids
def pytest_collection_modifyitems(config, items):
    """Longest first, the zoo's last: the slow tests that do not need the test zoo start first (the transfer bench
    smoke test builds its own smoke members), then the rest, then the tests that need the zoo (.ci/run builds it in
    the background meanwhile). The session-scoped `scores` of tests/zoo/test_zoo.py is built once: its users are one
    xdist_group (with --dist loadgroup one worker runs them); the other zoo tests are another, for the other worker.
    """
    zoo = [i for i in items if _needs_zoo(i)]
    other = [i for i in items if not _needs_zoo(i)]
    for i in zoo:  # two groups, so that both workers share the tail: the `scores` users, and the rest
        if i.nodeid.startswith("tests/zoo/"):
            i.add_marker(pytest.mark.xdist_group("zoo" if "scores" in i.fixturenames else "zoo-other"))
    slow = sorted((i for i in other if i.get_closest_marker("slow")), key=lambda i: "test_bench_smoke" not in i.nodeid)
    items[:] = slow + [i for i in other if not i.get_closest_marker("slow")] + zoo


# ------------------------------------------------------------------ CPU time per test
# REGRAFT_TEST_CPU_LOG=FILE appends one JSON line per test: wall s and CPU s (user+sys of the worker process and of
# the child processes it reaped during the test: servers, CLI runs, zoo builders), setup + call + teardown, and the
# time it ended (`end`, epoch s: a timeline of the workers).
# Summarise with `python -m tests.cpu_report FILE`.
_CPU_LOG = os.environ.get("REGRAFT_TEST_CPU_LOG")


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


if _CPU_LOG:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        t0, c0 = time.perf_counter(), _cpu()
        yield
        rec = {"test": item.nodeid, "wall_s": round(time.perf_counter() - t0, 3), "cpu_s": round(_cpu() - c0, 3),
               "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "end": round(time.time(), 2)}
        with open(_CPU_LOG, "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    def pytest_sessionfinish(session):
        rec = {"test": "<session>", "cpu_s": round(_cpu(), 3),
               "worker": os.environ.get("PYTEST_XDIST_WORKER", "main")}
        with open(_CPU_LOG, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
