"""Per-file (and top per-test) CPU seconds from a REGRAFT_TEST_CPU_LOG file (see tests/conftest.py).

    python -m tests.cpu_report LOG [--top 30]
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


if __name__ == "__main__":
    main()
