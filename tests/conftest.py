import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # so tests can import bench.zoo
    sys.path.insert(0, str(ROOT))

# Never touch the network or the user's caches from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("REGRAFT_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("REGRAFT_CACHE", str(tmp_path_factory.getbasetemp() / "regraft-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.getbasetemp() / "hf-cache"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny model world of tests/port/_tiny.py, shared by tests/port, tests/verify and tests/drift."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from tests.port._tiny import tiny_world

    return tiny_world(tmp_path_factory.mktemp("tiny"))
