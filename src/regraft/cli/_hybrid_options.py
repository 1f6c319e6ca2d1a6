"""Options shared by `regraft serve` and `regraft ask`."""

from __future__ import annotations


def add_hybrid_options(p) -> None:
    p.add_argument("--small", required=True, metavar="URL", help="small model endpoint, e.g. http://127.0.0.1:8001/v1")
    p.add_argument("--master", metavar="URL", help="master model endpoint (omit: small model only)")
    p.add_argument("--store", help="vector store built by `regraft index` (directory or Qdrant URL)")
    p.add_argument("--policy", help="escalation policy file (YAML/JSON; default: built-in policy)")
    p.add_argument("--small-model", metavar="NAME", help="model folder/name behind --small (default: its /v1/models id)")
    p.add_argument("--master-model", metavar="NAME", help="model folder/name behind --master")
    p.add_argument("--embedder", help="override the store's embedder (must match what built it)")
    p.add_argument("--tools", dest="user_tools", metavar="FILE.py", help="register the public functions of this file as tools")
    p.add_argument("--no-tools", action="store_true", help="send no tools (built-ins retrieve/calculator are on by default)")
    p.add_argument("--timeout", type=float, help="per-call deadline in seconds (default: from the policy)")
    p.add_argument("--retries", type=int, help="retries per backend call (default: from the policy)")
    p.add_argument("--no-contract", action="store_true", help="skip the start-up contract check (not recommended)")
    p.add_argument("--api-key", help="bearer token for the backends (or OPENAI_API_KEY)")


def options_from_args(args):
    import os

    from regraft.hybrid.assemble import Options

    return Options(small=args.small, master=args.master, store=args.store, policy=args.policy,
                   small_model=args.small_model, master_model=args.master_model, embedder=args.embedder,
                   tools=not args.no_tools, user_tools=args.user_tools, timeout=args.timeout, retries=args.retries,
                   contract=not args.no_contract, api_key=args.api_key or os.environ.get("OPENAI_API_KEY"))


def print_contract(report, console) -> None:
    if report is None:
        return
    for side in (report.small, report.master):
        if side is None:
            continue
        s = side.summary()
        from regraft.escape import markup as _m

        console.print(f"[bold]{_m(s['role'])}[/] {_m(s['endpoint'])} -> {_m(s['model'])} (resolved: {_m(s['resolved'])}, context "
                      f"{s['context_window']}, template {'yes' if s['chat_template'] else 'no'}, tools in template "
                      f"{'yes' if s['tools_in_template'] else 'no'})")
    for f in report.findings:
        color = {"error": "red", "warning": "yellow"}.get(f.severity, "dim")
        from regraft.escape import markup as _m

        console.print(f"[{color}]{_m(f.severity)}[/] {_m(f.code)}: {_m(f.message)}")
