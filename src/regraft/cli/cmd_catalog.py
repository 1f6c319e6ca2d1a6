"""regraft catalog list | show MODEL | add PATH_OR_CONFIG | remove MODEL | architectures | runtimes."""

from __future__ import annotations

from regraft.cli._common import add_format, emit


def add_parser(sub):
    p = sub.add_parser("catalog", help="list the built-in and your own models (with where each came from), show, "
                                       "add or remove one")
    p.add_argument("action", choices=("list", "show", "add", "remove", "architectures", "runtimes"))
    p.add_argument("name", nargs="?", help="show/remove: a model id; add: a config.json or a model folder")
    p.add_argument("--name", dest="model_id", help="add: the id to store it under (ORG/NAME)")
    p.add_argument("--force", action="store_true", help="add: replace an existing user entry of that id")
    add_format(p)
    return p


def run(args) -> int:
    from regraft import catalog
    from regraft.catalog import user
    from regraft.errors import InputError

    if args.action != "add" and (args.model_id or args.force):
        raise InputError(f"--name and --force apply to `regraft catalog add` only, not `catalog {args.action}`.")
    if args.action in ("architectures", "runtimes") and args.name:
        raise InputError(f"`regraft catalog {args.action}` takes no argument (got '{args.name}').")
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
    elif args.action == "add":
        if not args.name:
            raise InputError("`regraft catalog add` needs a config.json or a model folder, e.g. "
                             "`regraft catalog add ./my-model --name me/my-model`.")
        meta = user.add(args.name, args.model_id, args.force)
        emit(f"added {meta['_model']} to the user catalog ({user.user_dir()}) from {meta['_source']}"
             + (f" with {meta['_index']}" if meta.get("_index") else "")
             + f"; `regraft check ... {meta['_model']}` now names it")
    elif args.action == "remove":
        if not args.name:
            raise InputError("`regraft catalog remove` needs a model id from the user catalog.")
        emit(f"removed {user.remove(args.name)} from the user catalog ({user.user_dir()})")
    else:
        if args.name:
            raise InputError(f"`regraft catalog list` takes no argument (got '{args.name}').")
        rows = []
        for mid in user.user_ids():
            _, meta, index = user.entry(mid)
            cfg = user.entry(mid)[0]
            rows.append({"model": mid, "origin": "user", "status": "user", "model_type": cfg.get("model_type"),
                         "source": meta.get("_source"), "added": meta.get("_added"),
                         "index_tensors": len(index["weight_map"]) if index else None})
        shadowed = {r["model"] for r in rows}
        for mid in catalog.model_ids():
            e = catalog.model_entry(mid)
            rows.append({"model": mid, "origin": "built-in" if mid not in shadowed else "built-in (replaced by user)",
                         "status": e["_status"], "model_type": e.get("model_type"), "source": e["_source"]})
        if args.format == "json":
            import json

            emit(json.dumps(rows, indent=2))
        else:
            emit("\n".join(f"{r['model']:46} {r['origin']:8} {r['status']:27} {r['model_type'] or '?':16} "
                           f"{(r['source'] or '')[:70]}" for r in rows))
    return 0
