"""Every catalog entry: a known status, a source, and -- where a Hub SHA-256 is recorded -- bytes that hash to it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from regraft import catalog

_ROOT = Path(__file__).resolve().parents[2]
ADDITIONS = next((p / "shared" / "reference" / "models" / "additions-2026-12" for p in _ROOT.parents
                  if (p / "shared" / "reference" / "models" / "additions-2026-12").is_dir()), _ROOT / "missing")
IDS = list(catalog.model_ids())


def config_of(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if not k.startswith("_")}


@pytest.mark.parametrize("model_id", IDS)
def test_entry_has_status_and_source(model_id):
    e = catalog.model_entry(model_id)
    assert e["_model"] == model_id
    assert e["_status"] in catalog.STATUSES
    assert e["_source"].strip()
    if e["_status"] == "reconstructed-hash-verified":
        assert e.get("_sha256") and e.get("_hash_pins"), "a reconstruction counts only with the Hub hash"


HASHED = [m for m in IDS if catalog.model_entry(m).get("_sha256")]


@pytest.mark.parametrize("model_id", HASHED)
def test_hash_verified_entries_rebuild_the_hub_bytes(model_id):
    """The values and key order, written as the Hub writes config.json, give exactly the recorded SHA-256."""
    e = catalog.model_entry(model_id)
    cfg = config_of(e)
    seen = set()
    for indent in (2, 4):
        for end in ("", "\n"):
            raw = (json.dumps(cfg, indent=indent, ensure_ascii=False) + end).encode()
            seen.add((hashlib.sha256(raw).hexdigest(), len(raw)))
    assert (e["_sha256"], e["_bytes"]) in seen


def test_hash_verified_covers_the_completed_entries():
    assert len(HASHED) >= 20
    for mid in ("Qwen/Qwen3-30B-A3B-Instruct-2507", "Qwen/Qwen3-30B-A3B-Base", "Qwen/Qwen3-8B-Base",
                "Qwen/Qwen3-0.6B-Base", "Qwen/Qwen2.5-14B-Instruct", "Qwen/Qwen3.6-35B-A3B", "openai/gpt-oss-20b"):
        assert mid in HASHED
    # byte-identical Hub files (FINDINGS.md section 2)
    assert (catalog.model_entry("Qwen/Qwen3-30B-A3B-Instruct-2507")["_sha256"]
            == catalog.model_entry("Qwen/Qwen3-30B-A3B-Thinking-2507")["_sha256"])


def test_no_partial_entry_left_among_the_qwen_siblings():
    for mid in ("Qwen/Qwen3-30B-A3B-Instruct-2507", "Qwen/Qwen3-30B-A3B-Base", "Qwen/Qwen3-8B-Base",
                "Qwen/Qwen3-0.6B-Base", "Qwen/Qwen2.5-14B-Instruct", "Qwen/Qwen3-235B-A22B-Thinking-2507"):
        assert catalog.model_entry(mid)["_status"] != "partial", mid
    partial = {m for m in IDS if catalog.model_entry(m)["_status"] == "partial"}
    assert partial == {"meta-llama/Llama-4-Scout-17B-16E-Instruct", "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
                       "mistralai/Mistral-Small-3.1-24B-Instruct-2503"}


@pytest.mark.skipif(not ADDITIONS.is_dir(), reason="shared reference folder not present")
def test_catalog_holds_the_additions_exactly():
    """Values and key order of every additions-2026-12 config are the catalog entry's (no value touched)."""
    files = sorted(ADDITIONS.glob("*__*.json"))
    assert len(files) >= 20
    for f in files:
        mid = f.name[:-5].replace("__", "/", 1)
        want = json.loads(f.read_text(encoding="utf-8"))
        got = config_of(catalog.model_entry(mid))
        assert json.dumps(got) == json.dumps(want), mid
