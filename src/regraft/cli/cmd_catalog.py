"""regraft catalog list | show MODEL: the built-in models (config facts with their sources)."""

from __future__ import annotations

from regraft.cli._common import add_format, emit


def add_parser(sub):
    p = sub.add_parser("catalog", help="list the built-in models and architectures, or show one")
    p.add_argument("action", choices=("list", "show", "architectures", "runtimes"))
    p.add_argument("name", nargs="?")
    add_format(p)
    return p


def run(args) -> int:
    from regraft import catalog
    from regraft.errors import InputError

    if args.action == "architectures":
        emit("\n".join(catalog.architecture_types()))
    elif args.action == "runtimes":
        emit("\n".join(catalog.runtime_names()))
    elif args.action == "show":
        if not args.name:
            raise InputError("`regraft catalog show` needs a model id, e.g. Qwen/Qwen3-32B.")
        from regraft.cli import cmd_inspect

        args.thing, args.allow_pickle = args.name, False
        return cmd_inspect.run(args)
    else:
        rows = []
        for mid in catalog.model_ids():
            e = catalog.model_entry(mid)
            rows.append({"model": mid, "status": e["_status"], "model_type": e.get("model_type"),
                         "source": e["_source"]})
        if args.format == "json":
            import json

            emit(json.dumps(rows, indent=2))
        else:
            emit("\n".join(f"{r['model']:42} {r['status']:14} {r['model_type'] or '?':12} {r['source'][:80]}"
                           for r in rows))
    return 0
