"""Hypothesis profiles for the hostile-input suite.

- ``ci`` (default): a few hundred cases per reader, the whole folder in about a minute on 2 cores.
- ``long``: 10,000 cases per reader (``HYPOTHESIS_PROFILE=long pytest tests/hostile -m fuzz``);
  ``REGRAFT_FUZZ_CASES=N`` overrides the count of either profile.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("REGRAFT_OFFLINE", "1")

_common = dict(deadline=None, derandomize=False, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
_n = os.environ.get("REGRAFT_FUZZ_CASES")
# CI: the same cases on every run (a failure found once is not a flaky red on the next push); "long" explores.
settings.register_profile("ci", max_examples=int(_n or 200), **{**_common, "derandomize": True})
settings.register_profile("long", max_examples=int(_n or 10_000), **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: property-based fuzzing of a reader (hypothesis)")


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """Tiny real models, adapters and setup files (tests/hostile/world.py), built once per session."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from tests.hostile.world import build

    return build(tmp_path_factory.mktemp("world"))
