"""Per-file (and top per-test) CPU seconds from a REGRAFT_TEST_CPU_LOG file (see tests/conftest.py).

    python -m tests.cpu_report LOG [--top 30]

With the records' ``end`` times it also prints a timeline per xdist worker: its first and last test, the time its
tests ran (wall), and where the zoo's tests (tests/zoo/) started: the tail that runs on one worker.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args(argv)
    recs = [json.loads(line) for line in open(a.log) if line.strip()]
    tests = [r for r in recs if r["test"] != "<session>"]
    by_file = defaultdict(lambda: [0.0, 0.0, 0])
    for r in tests:
        f = by_file[r["test"].split("::")[0]]
        f[0] += r["cpu_s"]
        f[1] += r["wall_s"]
        f[2] += 1
    total = sum(r["cpu_s"] for r in tests)
    sess = sum(r["cpu_s"] for r in recs if r["test"] == "<session>")
    print(f"{len(tests)} tests, {total:.0f} CPU s in tests; whole worker processes {sess:.0f} CPU s "
          f"(incl. collection and imports)\n")
    print("| file | tests | CPU s | wall s |\n|---|---|---|---|")
    for f, (c, w, n) in sorted(by_file.items(), key=lambda kv: -kv[1][0]):
        print(f"| {f} | {n} | {c:.1f} | {w:.1f} |")
    print(f"\ntop {a.top} tests by CPU s:")
    for r in sorted(tests, key=lambda r: -r["cpu_s"])[:a.top]:
        print(f"  {r['cpu_s']:8.1f} CPU s {r['wall_s']:8.1f} wall s  {r['test']}")
    timeline(tests)


def timeline(tests: list[dict]) -> None:
    timed = [r for r in tests if "end" in r]
    if not timed:
        return
    t0 = min(r["end"] - r["wall_s"] for r in timed)
    print("\ntimeline (s from the first test's start):\n| worker | tests | first start | last end | busy wall s | "
          "zoo tests start | zoo tests wall s |\n|---|---|---|---|---|---|---|")
    workers = defaultdict(list)
    for r in timed:
        workers[r["worker"]].append(r)
    for w, rs in sorted(workers.items()):
        zoo = [r for r in rs if r["test"].startswith("tests/zoo/")]
        zoo_start = f"{min(r['end'] - r['wall_s'] for r in zoo) - t0:.0f}" if zoo else "-"
        print(f"| {w} | {len(rs)} | {min(r['end'] - r['wall_s'] for r in rs) - t0:.0f} | "
              f"{max(r['end'] for r in rs) - t0:.0f} | {sum(r['wall_s'] for r in rs):.0f} | {zoo_start} | "
              f"{sum(r['wall_s'] for r in zoo):.0f} |")


if __name__ == "__main__":
    main()
