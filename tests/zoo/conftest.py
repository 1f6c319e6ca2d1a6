"""Builds the smoke tier once per session (file-locked, so pytest-xdist workers never race)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def zoo_smoke():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from bench.zoo import build
    from bench.zoo.build import build_zoo

    build._setup_torch()
    return build_zoo("smoke", quiet=True)
