"""regraft drift A B: per-module distance between two checkpoints of the same shapes, and a lineage verdict."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from regraft.cli._common import add_format, emit


def add_parser(sub):
    p = sub.add_parser(
        "drift", help="how far apart are two checkpoints (Base vs Instruct)? streamed, bounded memory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Streams both checkpoints shard by shard (chunks of at most --chunk values; never a whole model "
                    "in memory) and reports per module the relative Frobenius distance ||A-B||/||A|| and "
                    "sigma = sum|A-B| / (sum|A|+sum|B|), a lineage verdict (same weights <= 1e-4 < siblings <= 0.30 < "
                    "unrelated) and the copy rule (sigma <= 0.15: copying a LoRA is expected to work).",
        epilog="examples:\n"
               "  regraft drift ./Qwen3-4B-Base ./Qwen3-4B-Instruct-2507\n"
               "  regraft drift ./a ./b --plot drift.png --format json\n"
               "exit codes: 0 measured, 2 input error")
    p.add_argument("a", metavar="A", help="local model folder (safetensors)")
    p.add_argument("b", metavar="B", help="local model folder with the same tensor names and shapes")
    p.add_argument("--plot", metavar="FILE", help="plot of the change per module role and layer: .png (matplotlib) or .html")
    p.add_argument("--modules", help="only tensors whose name contains one of these, comma-separated")
    p.add_argument("--chunk", type=int, default=1024 * 1024, help="values read per step (default 1M)")
    p.add_argument("--top", type=int, default=10, help="modules listed, most drifted first (default 10)")
    add_format(p, ("table", "json"))
    return p


def run(args) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from regraft.cli._common import stderr_console
    from regraft.drift import drift
    from regraft.report.drift import plot, render_drift

    if args.plot and Path(args.plot).suffix.lower() not in (".png", ".html", ".htm"):
        from regraft.errors import InputError

        raise InputError(f"--plot {args.plot}: unknown plot format; expected a file name ending in .png or .html")
    mods = [m.strip() for m in args.modules.split(",") if m.strip()] if args.modules else None
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=stderr_console(), transient=True) as prog:
        task = prog.add_task("reading both checkpoints", total=None)
        rep = drift(args.a, args.b, mods, args.chunk, progress=lambda d, t: prog.update(task, completed=d, total=t))
    plotted = plot(rep, args.plot) if args.plot else None
    if args.format == "json":
        d = rep.to_dict()
        d["plot"] = str(plotted) if plotted else None
        emit(json.dumps(d, indent=2, default=str))
        return 0
    text = render_drift(rep, args.top)
    emit(text + (f"\n  plot: {plotted}" if plotted else ""))
    return 0
