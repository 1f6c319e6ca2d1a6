"""Symlinks and '..' in manifests (safetensors index, adapter and model folders, RAG docs) cannot make regraft
read outside what the user named; the Hugging Face cache layout (snapshot links into blobs/) still works."""

from __future__ import annotations

import json
import os

import pytest

from regraft.errors import UnsafeInputError
from regraft.inspection.adapter import read_adapter
from regraft.inspection.resolve import read_model_folder, resolve_model
from tests.hostile._files import adapter_folder, model_folder, safetensors_bytes


def _sharded(d, shard_name, shard_bytes=None):
    model_folder(d, weights=False)
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard_name}}))
    return d


@pytest.mark.parametrize("name", ["../outside.safetensors", "sub/../../outside.safetensors", "/tmp/outside.safetensors",
                                  "./../outside.safetensors"])
def test_index_dotdot_and_absolute_are_refused(tmp_path, name):
    (tmp_path / "outside.safetensors").write_bytes(safetensors_bytes({"w": ("F32", [1])}))
    d = _sharded(tmp_path / "model", name)
    with pytest.raises(UnsafeInputError, match="outside"):
        read_model_folder(d)


def test_index_shard_symlink_out_is_refused(tmp_path):
    (tmp_path / "secret.safetensors").write_bytes(safetensors_bytes({"w": ("F32", [1])}))
    d = _sharded(tmp_path / "model", "model-00001.safetensors")
    os.symlink(tmp_path / "secret.safetensors", d / "model-00001.safetensors")
    with pytest.raises(UnsafeInputError, match="link to"):
        read_model_folder(d)


def test_index_non_string_shard_is_a_format_error(tmp_path):
    from regraft.errors import FileFormatError

    d = _sharded(tmp_path / "model", "x")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": ["x"], "b": 3}}))
    with pytest.raises(FileFormatError, match="shard file name"):
        read_model_folder(d)


def test_symlink_inside_the_folder_is_fine(tmp_path):
    d = _sharded(tmp_path / "model", "model-00001.safetensors")
    (d / "real.safetensors").write_bytes(safetensors_bytes({"w": ("F32", [1])}))
    os.symlink("real.safetensors", d / "model-00001.safetensors")
    assert set(read_model_folder(d).tensors) == {"w"}


def test_hf_cache_snapshot_links_into_blobs_work(tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--Org--Tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    model_folder(tmp_path / "src", weights=False)
    blobs = {"config.json": (tmp_path / "src" / "config.json").read_bytes(),
             "model.safetensors.index.json": json.dumps({"weight_map": {"w": "model-00001-of-00001.safetensors"}})
             .encode(), "model-00001-of-00001.safetensors": safetensors_bytes({"w": ("F32", [2])})}
    for i, (name, data) in enumerate(blobs.items()):
        (repo / "blobs" / f"blob{i}").write_bytes(data)
        os.symlink(f"../../blobs/blob{i}", snap / name)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = resolve_model("Org/Tiny", use_hub=False)
    assert set(spec.tensors) == {"w"}


def test_hf_cache_snapshot_link_elsewhere_is_refused(tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--Org--Tiny"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    model_folder(tmp_path / "src")
    (snap / "config.json").write_text((tmp_path / "src" / "config.json").read_text())
    os.symlink(tmp_path / "src" / "model.safetensors", snap / "model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(UnsafeInputError):
        resolve_model("Org/Tiny", use_hub=False)


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json", "generation_config.json",
                                  "chat_template.jinja", "model.safetensors"])
def test_model_folder_file_linked_out_is_refused(tmp_path, name):
    d = model_folder(tmp_path / "model")
    target = tmp_path / ("private." + name)
    target.write_bytes((d / name).read_bytes() if (d / name).exists() else b"{{ secret }}")
    (d / name).unlink(missing_ok=True)
    os.symlink(target, d / name)
    with pytest.raises(UnsafeInputError, match="outside"):
        read_model_folder(d)


@pytest.mark.parametrize("name", ["adapter_config.json", "adapter_model.safetensors"])
def test_adapter_file_linked_out_is_refused(tmp_path, name):
    d = adapter_folder(tmp_path / "adapter")
    target = tmp_path / ("private-" + name)
    os.replace(d / name, target)
    os.symlink(target, d / name)
    with pytest.raises(UnsafeInputError, match="outside"):
        read_adapter(d)


def test_symlink_loop_is_an_input_error(tmp_path):
    from regraft.errors import RegraftError

    d = model_folder(tmp_path / "model", weights=False)
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "loop.safetensors"}}))
    os.symlink("loop.safetensors", d / "loop.safetensors")
    with pytest.raises(RegraftError):
        read_model_folder(d)


def test_index_docs_do_not_follow_links_out(tmp_path):
    from regraft.hybrid.index import iter_docs

    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.md").write_text("public")
    (docs / "sub" / "b.md").write_text("public too")
    (tmp_path / "secret.md").write_text("password 42")
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "c.md").write_text("private")
    os.symlink(tmp_path / "secret.md", docs / "s.md")
    os.symlink("../../secret.md", docs / "sub" / "rel.md")
    os.symlink(tmp_path / "private", docs / "linkdir")
    os.symlink("a.md", docs / "alias.md")  # inside: fine
    names = [rel for rel, _ in iter_docs(docs)]
    assert names == ["a.md", "alias.md", "sub/b.md"]


def test_index_run_stores_nothing_from_outside(tmp_path):
    pytest.importorskip("lancedb")
    from regraft.hybrid.embed import HashingEmbedder
    from regraft.hybrid.index import index_docs
    from regraft.hybrid.store import open_store

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("public notes about lora adapters")
    (tmp_path / "secret.md").write_text("password hunter2")
    os.symlink(tmp_path / "secret.md", docs / "s.md")
    index_docs(docs, str(tmp_path / "kb"), embedder=HashingEmbedder(32), progress=False)
    store = open_store(str(tmp_path / "kb"))
    hits = store.search(HashingEmbedder(32).embed(["password hunter2"])[0], k=10)
    assert hits and all("hunter2" not in h.text for h in hits)
