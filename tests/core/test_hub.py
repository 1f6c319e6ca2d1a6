"""Model resolution beyond local folders: the HF cache layout, and the Hub protocol against a local HTTP server
that serves files like the Hub does (resolve URLs, Range requests) — never the real Hub."""

from __future__ import annotations

import json
import re
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from regraft.errors import UnknownModelError
from regraft.inspection import hub
from regraft.inspection.resolve import resolve_model
from regraft.inspection.safetensors_header import write_safetensors

CFG = {"model_type": "qwen3", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
       "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 48, "vocab_size": 128}


def make_repo(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(CFG))
    (root / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    write_safetensors(root / "model.safetensors", {"model.embed_tokens.weight": ("BF16", (128, 32), b"\0" * 8192)})


class FakeHub(BaseHTTPRequestHandler):
    root: Path
    log: list

    def do_GET(self):  # noqa: N802
        m = re.match(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", self.path)
        path = self.root / m.group("repo") / m.group("file") if m else None
        if path is None or not path.is_file():
            self.send_response(404)
            self.end_headers()
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        if rng:
            a, b = map(int, rng.removeprefix("bytes=").split("-"))
            data = data[a:b + 1]
            self.send_response(206)
        else:
            self.send_response(200)
        self.log.append((self.path, rng, len(data)))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    make_repo(tmp_path / "hub" / "org" / "Tiny-Model")
    handler = type("H", (FakeHub,), {"root": tmp_path / "hub", "log": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("REGRAFT_OFFLINE", raising=False)
    yield handler
    server.shutdown()


def test_hub_reads_config_and_header_only(fake_hub):
    spec = resolve_model("org/Tiny-Model")
    assert spec.origin == "hub" and spec.arch.num_layers == 2
    assert spec.tensors["model.embed_tokens.weight"].shape == (128, 32)
    ranges = [r for _, r, _ in fake_hub.log if r]
    assert ranges[0] == "bytes=0-7" and len(ranges) == 2  # two Range requests, never the 8 KB of data
    assert sum(n for p, _, n in fake_hub.log if p.endswith(".safetensors")) < 200
    assert spec.chat_template == "{{ messages }}"


def test_hub_404_names_nearest_models(fake_hub):
    with pytest.raises(UnknownModelError, match="not found on the Hugging Face Hub"):
        resolve_model("org/Nope")


def test_unreachable_hub_is_a_clean_error(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("REGRAFT_OFFLINE", raising=False)
    with pytest.raises(UnknownModelError, match="Cannot reach the Hugging Face Hub"):
        resolve_model("org/Some-Model")


def test_offline_env_never_calls_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(UnknownModelError, match="the Hub is off"):
        resolve_model("org/Some-Model")


def test_hf_cache_snapshot_is_found(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    repo = cache / "models--org--Cached-Model"
    make_repo(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    spec = resolve_model("org/Cached-Model")
    assert spec.origin == "hf-cache" and spec.name == "org/Cached-Model"
    assert spec.path == repo / "snapshots" / "abc123"
    assert hub.cached_snapshot("org/Cached-Model", "abc123") == repo / "snapshots" / "abc123"


def test_header_length_over_limit_from_hub(fake_hub):
    bad = fake_hub.root / "org" / "Bad-Model"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text(json.dumps(CFG))
    (bad / "model.safetensors").write_bytes(struct.pack("<Q", 10**12))
    from regraft.errors import FileFormatError

    with pytest.raises(FileFormatError, match="over the 100000000 limit"):
        resolve_model("org/Bad-Model")
