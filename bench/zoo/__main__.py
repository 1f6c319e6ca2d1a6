"""CLI: python -m bench.zoo {build,eval,list,report} (or python bench/zoo ...)."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/zoo`: make `bench.zoo` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "bench.zoo"

import argparse  # noqa: E402


def _resolve(tier, name, kind):
    from .build import zoo_path

    p = Path(name)
    if p.is_dir():
        return p
    return zoo_path(tier, name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench/zoo", description="The tiny model world: build, list, evaluate.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or reuse) a tier; each member cached by its own key")
    b.add_argument("--tier", default="smoke")
    b.add_argument("--only", nargs="*", help="members to build (with their dependencies), e.g. S lora/A/S")
    b.add_argument("--quiet", action="store_true")
    b.add_argument("--jobs", type=int, default=None, help="parallel member builds (default min(4, cores))")
    b.add_argument("--report", action="store_true", help="then write bench/results/zoo_<tier>.md/.json")
    b.add_argument("--n", type=int, default=None, help="with --report: first N test items per score (default all)")
    e = sub.add_parser("eval", help="exact match and gold NLL of MODEL (+ADAPTER) on a task's test split")
    e.add_argument("model", help="zoo name (S, T1, ...) or a model directory")
    e.add_argument("--adapter", help="zoo name (lora/A/S or S+A) or an adapter directory")
    e.add_argument("--task", default="A")
    e.add_argument("--tier", default="smoke")
    e.add_argument("--n", type=int, default=None, help="first N test items (default: all)")
    e.add_argument("--split", default="test", choices=["train", "dev", "test"])
    e.add_argument("--generic", action="store_true", help="also report generic-text NLL")
    li = sub.add_parser("list", help="members of a tier, where they are and whether they are built")
    li.add_argument("--tier", default="smoke")
    r = sub.add_parser("report", help="write the sanity table bench/results/zoo_<tier>.md/.json")
    r.add_argument("--tier", default="smoke")
    r.add_argument("--n", type=int, default=None)
    r.add_argument("--jobs", type=int, default=None, help="scoring processes (default min(4, cores))")
    a = ap.parse_args(argv)

    from regraft.errors import RegraftError

    try:
        return _run(a, argv)
    except RegraftError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(a, argv) -> int:
    from . import build

    if a.cmd == "build":
        root = build.build_zoo(a.tier, only=a.only, quiet=a.quiet, jobs=a.jobs)
        print(root)
        if a.report:
            from . import report

            cmd = f"python -m bench.zoo build --tier {a.tier} --report" + (f" --n {a.n}" if a.n else "")
            print(report.write(a.tier, a.n, cmd, a.jobs))
        return 0
    if a.cmd == "list":
        build.tier_config(a.tier)
        man = build.manifest(a.tier).get("members", {})
        print(f"tier {a.tier}: {build.tier_dir(a.tier)}")
        for n in build.member_names(a.tier):
            s, state = man.get(n), build.member_state(a.tier, n)
            key = build.member_key(a.tier, n)
            if state == "built" and s:
                state = f"built  key {key}  {s['wall_s']:>7} s  sha256 {s['sha256'][:12]}"
            elif state == "stale":
                state = f"stale  (built with another recipe or code; expected key {key})"
            print(f"  {n:<14} {state}")
        return 0
    if a.cmd == "eval":
        from . import scores as evaluate

        build._setup_torch()
        model = _resolve(a.tier, a.model, "model")
        adapter = _resolve(a.tier, a.adapter, "adapter") if a.adapter else None
        res = evaluate.evaluate(model, adapter, task=a.task, n=a.n, split=a.split, generic=a.generic)
        extra = f"  generic_nll {res['generic_nll']:.4f}" if "generic_nll" in res else ""
        print(f"{a.model}{' + ' + a.adapter if a.adapter else ''} task {a.task} {a.split} n={res['n']}: "
              f"exact_match {res['exact_match']:.4f}  gold_nll {res['gold_nll']:.4f}{extra}")
        return 0
    if a.cmd == "report":
        from . import report

        build._setup_torch()
        cmd = f"python -m bench.zoo report --tier {a.tier}" + (f" --n {a.n}" if a.n else "")
        print(report.write(a.tier, a.n, cmd, a.jobs))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
