"""Index a folder of documents: walk -> chunk (target tokenizer) -> embed -> upsert.

Chunk ids are ``sha256(path NUL chunk-text)[:32]``: indexing the same docs twice stores the same rows once,
and unchanged chunks are not re-embedded. Each file is written in batches that the store commits atomically;
only *after* a file's new chunks are stored are its stale chunks (from an older version of the file) deleted,
so a run killed at any point loses nothing that was already stored.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from regraft.errors import InputError

from .chunking import CharEstimate, chunk_text, load_tokenizer
from .store import STORE_FORMAT, open_store

DEFAULT_EXTS = (".md", ".markdown", ".txt", ".rst")


@dataclass
class IndexReport:
    store: str
    files: int = 0
    chunks: int = 0  # chunks in the docs this run
    embedded: int = 0  # new chunks embedded and stored this run
    unchanged: int = 0  # chunks already in the store (skipped)
    stale_deleted: int = 0
    total_in_store: int = 0
    tokenizer: str = ""
    token_counts_estimated: bool = False
    seconds: float = 0.0
    skipped_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def chunk_id(path: str, text: str) -> str:
    return hashlib.sha256(f"{path}\0{text}".encode()).hexdigest()[:32]


def iter_docs(root: Path, exts=DEFAULT_EXTS) -> Iterator[tuple[str, Path]]:
    """(relative posix path, file) for every document under root, sorted; root may be a single file."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"docs {root} does not exist; expected a folder (or file) of {', '.join(exts)} documents")
    if root.is_file():
        yield root.name, root
        return
    real_root = root.resolve()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in exts and not any(part.startswith(".") for part in p.relative_to(root).parts):
            if p.is_symlink() and real_root not in p.resolve().parents:
                continue  # a link out of DOCS is never read: it could pull a private file into the store
            yield p.relative_to(root).as_posix(), p


def _tokenizer_for(model: str | None):
    """The target model's tokenizer, as the RAG layer of `check` picks it (a model folder's tokenizer.json, the
    bundled exact Qwen tokenizer for catalog/HF names, else a labelled estimate); no model: a labelled estimate."""
    if not model:
        return CharEstimate()
    try:
        from regraft.inspection.resolve import resolve_model
        from regraft.rag.tokenizer import tokenizer_for
    except ImportError:  # core not present: a local folder still works
        tok = load_tokenizer(model) if Path(model).is_dir() else None
    else:
        tok = tokenizer_for(resolve_model(model, use_hub=False))  # UnknownModelError: clear message
    if tok is None:
        raise InputError(
            f"tokenizer for {model!r} not found: expected a model folder with tokenizer.json; "
            f"omit --tokenizer to use a character estimate (4 chars/token)"
        )
    return tok


def index_docs(
    docs: str | Path,
    store_spec: str,
    embedder=None,
    tokenizer_model: str | None = None,
    max_tokens: int = 256,
    batch_size: int = 64,
    exts=DEFAULT_EXTS,
    prune: bool = False,
    progress: bool = True,
    on_batch=None,
) -> IndexReport:
    from .embed import get_embedder

    t0 = time.perf_counter()
    files = list(iter_docs(Path(docs), exts))
    tok = _tokenizer_for(tokenizer_model)
    emb = embedder or get_embedder()
    store = open_store(store_spec, create=True)
    rep = IndexReport(store=str(store_spec), tokenizer=getattr(tok, "name", type(tok).__name__))
    rep.token_counts_estimated = bool(getattr(tok, "is_estimate", False)) or getattr(tok, "exact", True) is False
    meta = store.get_meta()
    want = {"format": STORE_FORMAT, "embedder": emb.name, "dim": emb.dim}
    if meta:
        if meta.get("embedder") != emb.name or int(meta.get("dim", -1)) != emb.dim:
            raise InputError(
                f"store {store_spec} was built with embedder {meta.get('embedder')} (dim {meta.get('dim')}), "
                f"not {emb.name} (dim {emb.dim}); use --embedder {meta.get('embedder')} or a new --store"
            )
    else:
        store.set_meta({**want, "tokenizer": rep.tokenizer, "max_tokens": max_tokens,
                        "token_counts_estimated": rep.token_counts_estimated})

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    seen_paths = set()
    with Progress(
        TextColumn("[bold]indexing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[file]}"),
        TimeElapsedColumn(), disable=not progress, transient=False,
    ) as bar:
        task = bar.add_task("index", total=len(files), file="")
        for rel, path in files:
            bar.update(task, file=rel)
            seen_paths.add(rel)
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError) as e:
                rep.skipped_files.append(f"{rel}: {type(e).__name__}")
                bar.advance(task)
                continue
            rep.files += 1
            chunks = chunk_text(text, tok, max_tokens=max_tokens)
            ids = [chunk_id(rel, c.text) for c in chunks]
            # duplicates inside one file collapse to one row
            uniq = {}
            for cid, c in zip(ids, chunks):
                uniq.setdefault(cid, c)
            rep.chunks += len(uniq)
            have = store.existing_ids(list(uniq))
            rep.unchanged += len(have)
            todo = [(cid, c) for cid, c in uniq.items() if cid not in have]
            for i in range(0, len(todo), batch_size):
                part = todo[i : i + batch_size]
                vecs = emb.embed([c.text for _, c in part])
                store.upsert(
                    [
                        {"id": cid, "path": rel, "text": c.text, "start": c.start, "end": c.end,
                         "n_tokens": c.n_tokens, "vector": v}
                        for (cid, c), v in zip(part, vecs)
                    ]
                )
                rep.embedded += len(part)
                if on_batch:
                    on_batch(rel, rep)
            rep.stale_deleted += store.delete_stale(rel, list(uniq))
            bar.advance(task)
    if prune and hasattr(store, "paths"):
        for gone in sorted(store.paths() - seen_paths):
            rep.stale_deleted += store.delete_stale(gone, [])
    rep.total_in_store = store.count()
    store.close()
    rep.seconds = round(time.perf_counter() - t0, 3)
    return rep
