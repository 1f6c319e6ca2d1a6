import os

import pytest


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
    """The tiny model world of tests/factories.py, shared by tests/port, tests/verify and tests/drift."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from tests.factories import tiny_world

    return tiny_world(tmp_path_factory.mktemp("tiny"))
