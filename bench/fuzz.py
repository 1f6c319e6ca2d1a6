"""The long hostile-input campaign: N generated cases per reader, SIGKILL loops per writer, one table.

    python bench/fuzz.py                         # 10,000 cases per reader, 25 kills per writer (about an hour on 2 cores)
    python bench/fuzz.py --cases 300 --kill-runs 3     # a quick pass
    python bench/fuzz.py --readers adapter,check --no-kill

Each reader runs in its own worker process (``--jobs`` at a time) under an address-space limit (``--mem-gb``), with
a per-case alarm (``REGRAFT_FUZZ_TIMEOUT``, 30 s). A case ends as: ok, regraft-error (a RegraftError with a proper
one-line message), other-exception (a bug), or timeout (a bug). Cases come from the hypothesis strategies in
tests/hostile (the same ones CI runs a few hundred of). Writes bench/results/reliability.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("REGRAFT_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- one reader, in a worker process ------------------------------------------------------------------------------
def campaign(name: str, cases: int, seed: int, max_seconds: float = float("inf")) -> dict:
    from hypothesis import HealthCheck, given, seed as hseed, settings

    from tests.hostile.harness import OUTCOMES, OTHER, TIMEOUT, run_case, scratch
    from tests.hostile.targets import TARGETS

    target = TARGETS[name]
    counts: Counter = Counter()
    examples: list[dict] = []
    kinds: Counter = Counter()
    t0 = time.perf_counter()

    def one(case):
        with scratch() as d:
            outcome, exc = run_case(target.run, case, d)
        counts[outcome] += 1
        if outcome in (OTHER, TIMEOUT):
            kinds[type(exc).__name__] += 1
            if len(examples) < 8:
                examples.append({"outcome": outcome, "exception": f"{type(exc).__name__}: {str(exc)[:300]}",
                                 "case": repr(case)[:600],
                                 "where": "".join(traceback.format_tb(exc.__traceback__)[-2:])[-600:]})

    if target.warmup:
        target.warmup()
    chunk = 0
    while sum(counts.values()) < cases and time.perf_counter() - t0 < max_seconds:
        # hypothesis runs in chunks (own seed each) so that a time budget can end the campaign between chunks
        n = min(500, cases - sum(counts.values()))
        run = settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))(
            hseed(seed * 1000 + chunk)(given(target.strategy)(one)))
        before = sum(counts.values())
        try:
            run()
        except Exception as e:  # noqa: BLE001 - a strategy bug must not hide the counts so far
            examples.append({"outcome": "harness", "exception": f"{type(e).__name__}: {str(e)[:300]}"})
            break
        chunk += 1
        if sum(counts.values()) == before:
            break
    return {"reader": name, "what": target.what, "cases": sum(counts.values()),
            **{o: counts.get(o, 0) for o in OUTCOMES}, "bug_kinds": dict(kinds), "examples": examples,
            "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _worker_main(argv: list[str]) -> None:
    name, cases, seed, mem_gb, out = argv[0], int(argv[1]), int(argv[2]), float(argv[3]), argv[4]
    max_seconds = float(argv[5]) if len(argv) > 5 else float("inf")
    if mem_gb > 0:
        lim = int(mem_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    res = campaign(name, cases, seed, max_seconds)
    Path(out).write_text(json.dumps(res, indent=1))


def run_reader(name: str, cases: int, seed: int, mem_gb: float, tmp: Path, max_seconds: float) -> dict:
    out = tmp / f"{name}.json"
    log = tmp / f"{name}.log"
    with open(log, "w") as f:
        p = subprocess.run([sys.executable, __file__, "--worker", name, str(cases), str(seed), str(mem_gb), str(out),
                            str(max_seconds)],
                           stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if p.returncode != 0 or not out.exists():
        tail = log.read_text()[-1500:]
        return {"reader": name, "what": "", "cases": 0, "ok": 0, "regraft-error": 0, "other-exception": 0,
                "timeout": 0, "worker_failed": f"exit {p.returncode}: {tail}"}
    return json.loads(out.read_text())


# -- writers under SIGKILL -----------------------------------------------------------------------------------------
def run_writers(names: list[str], runs: int, tmp: Path) -> list[dict]:
    from tests.hostile import writers as W
    from tests.hostile.killer import kill_loop

    world = None
    out = []
    for n in names:
        d = tmp / f"kill-{n}"
        d.mkdir(parents=True, exist_ok=True)
        try:
            if n in ("port-lora", "port-gguf", "port-config") and world is None:
                from tests.hostile.world import build

                world = build(tmp / "world")
            w = {"write-safetensors": lambda: W.safetensors_writer(d), "example": lambda: W.example_writer(d),
                 "port-lora": lambda: W.port_lora_writer(d, world), "port-gguf": lambda: W.port_gguf_writer(d, world),
                 "port-config": lambda: W.port_config_writer(d, world),
                 "index": lambda: W.index_writer(d, n_docs=20), "write-peft": lambda: W.peft_folder_writer(d),
                 "write-gguf": lambda: W.gguf_file_writer(d)}[n]()
            res = kill_loop(w, d / "loop", runs, seed=hash(n) % 1000)
            row = res.to_dict()
        except Exception as e:  # noqa: BLE001
            row = {"writer": n, "error": f"{type(e).__name__}: {str(e)[:500]}"}
        row["key"] = n
        print(f"  kill {n}: {row}", flush=True)
        out.append(row)
    return out


# -- report --------------------------------------------------------------------------------------------------------
READERS = ["safetensors-header", "adapter", "model-folder", "check", "serving-config", "rag-setup", "policy",
           "chat-template", "store-meta", "tokenizer-json", "gguf"]
WRITERS = ["write-safetensors", "example", "port-config", "port-lora", "port-gguf", "index", "write-peft", "write-gguf"]


def markdown(doc: dict) -> str:
    lines = [f"Generated by `{doc['command']}` on {doc['date']} ({doc['machine']}); "
             f"regraft {doc['regraft_commit']}.", "",
             "| reader | cases | ok | regraft error | other exception | timeout | peak RSS | time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["readers"]:
        if r.get("worker_failed"):
            lines.append(f"| {r['reader']} | worker failed: {r['worker_failed'][:120]!r} | | | | | | |")
            continue
        lines.append(f"| {r['reader']} | {r['cases']:,} | {r['ok']:,} | {r['regraft-error']:,} | "
                     f"{r['other-exception']:,} | {r['timeout']:,} | {r.get('peak_rss_mb', '?')} MB | "
                     f"{r.get('seconds', 0):,.0f} s |")
    lines += ["", "| writer killed with SIGKILL | runs | killed mid-run | finished | old state | complete new state "
              "| consistent partial | corrupted | killed while writing (temp file left) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w in doc["writers"]:
        if "error" in w:
            lines.append(f"| {w['key']} | error: {w['error'][:150]} | | | | | | | |")
            continue
        lines.append(f"| {w['writer']} | {w['runs']} | {w['killed']} | {w['finished']} | {w['old']} | {w['new']} | "
                     f"{w.get('partial', 0)} | **{w['corrupt']}** | {w['leftovers']} |")
    bugs = [(r["reader"], e) for r in doc["readers"] for e in r.get("examples", [])]
    if bugs:
        lines += ["", "Cases that ended in another exception or a timeout (first few per reader):", ""]
        lines += [f"- {r}: {e['outcome']}: `{e['exception'][:200]}`" for r, e in bugs]
    fails = [(w.get("key"), f) for w in doc["writers"] for f in w.get("failures", [])]
    if fails:
        lines += ["", "Kill-loop failures:", ""] + [f"- {k}: {f[:300]}" for k, f in fails]
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000, help="generated cases per reader (default 10,000)")
    ap.add_argument("--readers", default=",".join(READERS), help="comma-separated (default: all)")
    ap.add_argument("--kill-runs", type=int, default=25, help="SIGKILL runs per writer (default 25)")
    ap.add_argument("--writers", default=",".join(WRITERS), help="comma-separated (default: all)")
    ap.add_argument("--no-kill", action="store_true", help="skip the kill loops")
    ap.add_argument("--jobs", type=int, default=2, help="reader campaigns in parallel (default 2)")
    ap.add_argument("--mem-gb", type=float, default=8.0, help="address-space limit per reader worker (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=0, help="stop a reader's campaign after this long "
                    "(default: no limit; the table then shows fewer cases)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"), help="folder for reliability.{json,md}")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="combine earlier runs' reliability.json files "
                    "(e.g. readers and kill loops run side by side) into one table, then exit")
    args = ap.parse_args()
    if args.merge:
        docs = [json.loads(Path(p).read_text()) for p in args.merge]
        doc = dict(docs[0], command=" && ".join(d["command"] for d in docs),
                   readers=[r for d in docs for r in d["readers"]], writers=[w for d in docs for w in d["writers"]],
                   seconds=max(d["seconds"] for d in docs))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "reliability.json").write_text(json.dumps(doc, indent=1) + "\n")
        (out / "reliability.md").write_text(markdown(doc))
        print(markdown(doc))
        return 0

    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="regraft-fuzz-"))
    readers = [r for r in args.readers.split(",") if r]
    t0 = time.time()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futs = {r: pool.submit(run_reader, r, args.cases, args.seed, args.mem_gb, tmp,
                                    args.max_minutes * 60 or float("inf")) for r in readers}
        results = []
        for r in readers:
            res = futs[r].result()
            print(f"  {r}: {res.get('cases')} cases, ok {res.get('ok')}, regraft-error {res.get('regraft-error')}, "
                  f"other {res.get('other-exception')}, timeout {res.get('timeout')} "
                  f"({res.get('seconds')} s){' ' + res['worker_failed'][-300:] if res.get('worker_failed') else ''}",
                  flush=True)
            results.append(res)
    writers = [] if args.no_kill else run_writers([w for w in args.writers.split(",") if w], args.kill_runs, tmp)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout
    cmd = "python bench/fuzz.py " + " ".join(sys.argv[1:])
    doc = {"command": cmd.strip(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
           "regraft_commit": commit.strip(), "seconds": round(time.time() - t0), "readers": results,
           "writers": writers}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "reliability.md").write_text(markdown(doc))
    print(markdown(doc))
    bad = sum(r.get("other-exception", 0) + r.get("timeout", 0) + (1 if r.get("worker_failed") else 0)
              for r in results) + sum(w.get("corrupt", 0) + (1 if "error" in w else 0) for w in writers)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
