from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory) -> Path:
    """The bundled exact Qwen tokenizer folder, built once per session into the session's REGRAFT_CACHE."""
    os.environ["REGRAFT_CACHE"] = str(tmp_path_factory.getbasetemp() / "regraft-cache")
    from regraft.rag.tokenizer import bundled_qwen_dir

    return bundled_qwen_dir()


@pytest.fixture(scope="session")
def hf_tokenizer(qwen_dir, tmp_path_factory):
    """transformers' own tokenizer loaded from a copy of the built folder (AutoTokenizer, as users load it)."""
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("qwen-tok")
    for f in qwen_dir.iterdir():
        shutil.copy(f, d / f.name)
    return AutoTokenizer.from_pretrained(str(d))
