"""Port a RAG setup to TARGET: the prompt re-rendered with the target's chat template, top_k / chunk size
re-budgeted for its tokenizer and context, thinking and stop strings for its protocol, with one reason per change.

examples:
  regraft port rag rag.yaml --to Qwen/Qwen3-32B --out rag-32b.yaml
  regraft port rag rag.yaml --from Qwen/Qwen3-30B-A3B-Base --to meta-llama/Llama-3.1-8B-Instruct
  regraft port rag rag.yaml --to Qwen/Qwen3-32B --embedding BAAI/bge-m3 --out rag-32b.yaml
exit codes: 0 written (or printed), 2 usage or input error
"""

from __future__ import annotations

import json

from regraft.cli._common import add_format, emit


def add_arguments(p) -> None:
    p.add_argument("rag", metavar="FILE", help="the RAG setup (YAML/JSON)")
    p.add_argument("--to", required=True, metavar="TARGET", help="target model (folder, repo id or catalog name)")
    p.add_argument("--from", dest="source", metavar="SOURCE",
                   help="the model the setup was built for (default: the setup's 'model:')")
    p.add_argument("--embedding", metavar="MODEL", help="switch the embedding model (the index is then re-embedded)")
    p.add_argument("--out", metavar="FILE", help="write the ported setup here (default: print it)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_format(p, ("table", "json"))  # "text" is accepted as another name for table


def run(args) -> int:
    import yaml

    from regraft.configs.output import write_text_atomic
    from regraft.errors import RegraftError
    from regraft.inspection.resolve import resolve_model
    from regraft.rag.port import plan_rag, to_doc
    from regraft.rag.setup import read_rag

    setup = read_rag(args.rag)
    target = resolve_model(args.to)
    source = None
    if args.source:
        source = resolve_model(args.source)
    elif setup.model:
        try:
            source = resolve_model(setup.model, use_hub=False)
        except RegraftError:
            source = None
    res = plan_rag(setup, source, target, args.embedding)
    header = [f"# ported by regraft for {target.name}" + (f" from {source.name}" if source else "")]
    header += ["# " + c.text() for c in res.changes] + [f"# ? {k}: left out: {w}" for k, w in res.left_out]
    header += [f"# note: {n}" for n in res.notes]
    text = "\n".join(header) + "\n" + yaml.safe_dump(to_doc(res.setup), sort_keys=False, allow_unicode=True,
                                                     width=100)
    if args.out:
        write_text_atomic(args.out, text, [args.rag, target.path, source.path if source else None],
                          args.force)
    if args.format == "json":
        d = res.to_dict()
        d.update(out=args.out)
        emit(json.dumps(d, indent=2, default=str))
        return 0
    lines = [f"port rag {setup.path.name} -> {target.name}" + (f", built for {source.name}" if source else
                                                                  ", source model unknown (use --from)"),
             res.diff_text()]
    lines += [f"note: {n}" for n in res.notes]
    if res.budget:
        b = res.budget
        lines.append(f"budget: {b['total']:,} of {b['usable']:,} tokens ({b['usable_from']}), margin {b['margin']:,}"
                     + ("" if b["quality"] in ("exact", "measured") else f" ({b['quality']})"))
    lines.append(f"wrote {args.out}" if args.out else "---\n" + text.rstrip("\n"))
    emit("\n".join(lines))
    return 0
