"""`zoo_smoke`: the test tier's directory (tests/conftest.py `zoo`; the smoke tier unless REGRAFT_TEST_TIER says
otherwise), built once per run for all xdist workers (file-locked)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def zoo_smoke(zoo):
    return zoo
