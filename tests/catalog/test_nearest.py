"""Nearest real models for invented names, and names known not to exist (Qwen3-70B, Qwen3.7)."""

from __future__ import annotations

import pytest

from regraft import catalog
from regraft.errors import UnknownModelError
from regraft.inspection.resolve import resolve_model


@pytest.mark.parametrize("name,first", [
    ("Qwen/Qwen3.7-27B", ["Qwen/Qwen3.6-27B", "Qwen/Qwen3.8-27B"]),
    ("Qwen/Qwen3.7-35B-A3B", ["Qwen/Qwen3.6-35B-A3B"]),
    ("Qwen/Qwen3.7-Max", ["Qwen/Qwen3.8-2.4T-A95B", "Qwen/Qwen3.6-35B-A3B"]),
    ("Qwen/Qwen3.6-32B", ["Qwen/Qwen3.6-35B-A3B", "Qwen/Qwen3.6-27B"]),
    ("Qwen/Qwen3.8-35B-A3B", ["Qwen/Qwen3.8-27B", "Qwen/Qwen3.8-2.4T-A95B"]),
    ("Qwen/Qwen3-70B", ["Qwen/Qwen3-32B", "Qwen/Qwen3-30B-A3B"]),
    ("openai/gpt-oss-60b", ["openai/gpt-oss-20b", "openai/gpt-oss-120b"]),
])
def test_nearest_models(name, first):
    assert catalog.nearest_models(name)[:len(first)] == first


def test_sizes_read_from_names():
    assert catalog._size_key("Qwen/Qwen3.8-2.4T-A95B") == (2400.0,)
    assert catalog._size_key("Qwen/Qwen3-30B-A3B-Instruct-2507") == (30.0,)
    assert catalog._size_key("openai/gpt-oss-120b") == (120.0,)


@pytest.mark.parametrize("name", ["Qwen/Qwen3.7-27B", "Qwen3.7-Max", "Qwen/Qwen3.7", "qwen/qwen3.7-plus"])
def test_qwen37_refused_with_what_exists(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnknownModelError) as e:
        resolve_model(name)
    msg = str(e.value)
    assert "no open weights" in msg and "FINDINGS.md" in msg
    for real in ("Qwen3.6-27B", "Qwen3.6-35B-A3B", "Qwen3.8-27B", "Qwen3.8-2.4T-A95B"):
        assert real in msg
    for real in catalog.nearest_models(name)[:2]:
        assert catalog.find_model(real)  # suggestions are catalog models


def test_qwen36_and_38_resolve():
    for mid in ("Qwen/Qwen3.6-27B", "Qwen/Qwen3.6-35B-A3B", "Qwen/Qwen3.8-27B", "Qwen/Qwen3.8-2.4T-A95B"):
        spec = resolve_model(mid)
        assert spec.origin == "catalog" and spec.arch is not None and not spec.partial
