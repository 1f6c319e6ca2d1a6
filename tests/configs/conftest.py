from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def qwen_dir_env(tmp_path_factory):
    """Build the bundled Qwen tokenizer once into this session's cache and export it to subprocesses."""
    cache = tmp_path_factory.getbasetemp() / "regraft-cache"
    os.environ["REGRAFT_CACHE"] = str(cache)
    from regraft.rag.tokenizer import bundled_qwen_dir

    return bundled_qwen_dir()
