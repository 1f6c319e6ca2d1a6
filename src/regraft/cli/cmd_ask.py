"""regraft ask "question": one hybrid request from the command line, with --trace."""

from __future__ import annotations

from regraft.cli._common import add_format

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    from regraft.cli._hybrid_options import add_hybrid_options

    p = sub.add_parser("ask", help="ask one question through the hybrid runtime (--trace shows why it escalated)",
                       description="Retrieve, ask the small model, escalate to the master per the policy, print the answer.")
    p.add_argument("question")
    add_hybrid_options(p)
    p.add_argument("--route", choices=["auto", "small", "master"], default="auto", help="explicit user choice")
    p.add_argument("--trace", action="store_true", help="show every step and why it escalated")
    add_format(p, ("table", "json"))  # "text" is accepted as another name for table
    return p


def run(args) -> int:
    import asyncio
    import json

    from rich.console import Console

    from regraft.errors import InputError
    from regraft.hybrid.assemble import assemble
    from regraft.cli._hybrid_options import options_from_args, print_contract

    if not args.question.strip():
        raise InputError("ask: the question is empty")
    opts = options_from_args(args)
    opts.probe_timeout = min(opts.probe_timeout, opts.timeout or 60.0)

    async def go():
        hybrid, report = await assemble(opts)
        try:
            return report, await hybrid.answer([{"role": "user", "content": args.question}], args.route)
        finally:
            await hybrid.aclose()

    report, res = asyncio.run(go())
    if args.format == "json":
        out = {"answer": res.answer, **res.meta(with_trace=True)}
        if report is not None:
            out["contract"] = report.to_dict()
        print(json.dumps(out, indent=1))
        return 0
    out, err = Console(), Console(stderr=True)
    if args.trace:
        print_contract(report, err)
        res.trace.render(err)
    flag = " [red](degraded: master unavailable)[/]" if res.degraded else ""
    from regraft.escape import markup as _m
    from regraft.escape import safe

    err.print(f"[dim]route {_m(res.route)} ({_m(res.model)}); {_m('; '.join(res.decision.reasons))}[/]{flag}")
    if res.evidence:
        err.print("[dim]sources: " + ", ".join(f"{_m(h.path)} ({h.score:.2f})" for h in res.evidence) + "[/]")
    out.print(safe(res.answer), markup=False, highlight=False)
    return 0
