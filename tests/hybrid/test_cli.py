"""`regraft index / ask / serve` as real processes: exit codes, one-line errors, no hangs."""

import json
import subprocess
import sys
import time

import pytest

from tests.hybrid import procs

# one worker runs this module (--dist loadgroup): its module-scoped servers start once, not once per worker
pytestmark = pytest.mark.xdist_group("hybrid_cli")


def regraft(*args, timeout=120):
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "regraft", *args], capture_output=True, text=True, timeout=timeout,
                       env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    return p, time.monotonic() - t


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clifake")
    a = tmp / "a.json"
    a.write_text(json.dumps({"Eiffel": {"content": "330 metres [1].", "logprob": -0.1}}))
    ps, small = procs.fake_backend(tmp, "--logprobs", "--answers", str(a), name="s")
    pm, master = procs.fake_backend(tmp, "--answers", str(a), "--model-id", "m", name="m")
    yield small, master
    procs.stop(ps)
    procs.stop(pm)


def test_index_then_reindex_then_ask(tmp_path, docs, fakes):
    kb = str(tmp_path / "kb")
    p, _ = regraft("index", str(docs), "--store", kb, "--format", "json", "--embedder", "hashing-128")
    assert p.returncode == 0, p.stderr
    r1 = json.loads(p.stdout)
    assert r1["files"] == 3 and r1["embedded"] == r1["total_in_store"] > 0 and r1["token_counts_estimated"]
    p, _ = regraft("index", str(docs), "--store", kb, "--format", "json")  # embedder remembered by the store
    r2 = json.loads(p.stdout)
    assert r2["embedded"] == 0 and r2["unchanged"] == r1["chunks"] and r2["total_in_store"] == r1["total_in_store"]
    small, master = fakes
    p, _ = regraft("ask", "How tall is the Eiffel tower?", "--small", small, "--master", master, "--store", kb,
                   "--format", "json", "--trace")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["answer"] == "330 metres [1]." and out["route"] == "small"
    assert out["evidence"][0]["source"] == "france.md"
    assert [s["step"] for s in out["trace"]][:4] == ["retrieve", "fit", "render", "small"]
    p, _ = regraft("ask", "What about quux?", "--small", small, "--master", master, "--store", kb, "--trace")
    assert p.returncode == 0 and "escalat" not in p.stdout
    assert "route master (m)" in p.stderr and "regraft trace" in p.stderr


@pytest.mark.parametrize("case", ["store", "policy", "small-down", "docs"])
def test_bad_input_is_one_line_exit_2(tmp_path, fakes, case):
    small, master = fakes
    bad_policy = tmp_path / "p.yaml"
    bad_policy.write_text("escalate_if:\n  retrieval_score: 0.3\n")
    dead = f"http://127.0.0.1:{procs.free_port()}/v1"
    args = {
        "store": ["ask", "q", "--small", small, "--store", str(tmp_path / "missing")],
        "policy": ["ask", "q", "--small", small, "--policy", str(bad_policy)],
        "small-down": ["serve", "--small", dead, "--master", master, "--retries", "0"],
        "docs": ["index", str(tmp_path / "nodocs"), "--store", str(tmp_path / "kb"), "--embedder", "hashing-8"],
    }[case]
    p, took = regraft(*args, timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"regraft {args[0]}: error: ")
    assert "Traceback" not in p.stderr and took < 30
    expect = {"store": "does not exist; build it first with: regraft index", "policy": "unknown key(s) retrieval_score",
              "small-down": "small model unreachable, not starting", "docs": "nodocs does not exist"}[case]
    assert expect in lines[0]
