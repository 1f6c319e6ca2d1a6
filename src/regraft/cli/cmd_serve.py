"""regraft serve: the hybrid runtime as an OpenAI-compatible server (small model + RAG + tools -> master)."""

from __future__ import annotations

from regraft.cli._common import add_format

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    from regraft.cli._hybrid_options import add_hybrid_options

    p = sub.add_parser("serve", help="serve small+master+RAG as one OpenAI-compatible endpoint",
                       description="Serve /v1/chat/completions (streaming too): a small model with RAG and tools "
                       "answers, escalating to the master per the policy. A contract check runs first.")
    add_hybrid_options(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--trace", action="store_true", help="include the trace in every answer's `regraft` object")
    p.add_argument("--max-request-bytes", type=int, default=1_000_000)
    p.add_argument("--check-only", action="store_true", help="run the contract check and exit (0 ok, 2 mismatch)")
    add_format(p, ("table", "json"))  # "text" is accepted as another name for table
    return p


def run(args) -> int:
    import asyncio
    import json
    import os
    import sys

    from rich.console import Console

    from regraft.errors import need
    from regraft.hybrid.assemble import assemble
    from regraft.cli._hybrid_options import options_from_args, print_contract

    need("fastapi", "regraft serve", "serve")
    uvicorn = need("uvicorn", "regraft serve", "serve")
    err = Console(stderr=True)
    opts = options_from_args(args)
    if opts.store:  # query embeddings are tiny: one torch thread avoids thrashing next to the model servers
        try:
            import torch

            torch.set_num_threads(int(os.environ.get("REGRAFT_TORCH_THREADS", "1")))
        except ImportError:
            pass

    hybrid, report = asyncio.run(assemble(opts))
    if args.format == "json" and report is not None:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print_contract(report, err)
    if args.check_only:
        return 0
    from regraft.hybrid.server import create_app

    app = create_app(hybrid, max_request_bytes=args.max_request_bytes, trace_default=args.trace,
                     contract=report.to_dict() if report else None)
    from regraft.escape import markup as _m

    err.print(f"[green]regraft serve[/] on http://{_m(args.host)}:{args.port}/v1 (small {_m(opts.small)}"
              + (f", master {_m(opts.master)}" if opts.master else ", no master") + ")")
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    server.run()
    sys.stderr.flush()
    return 0
