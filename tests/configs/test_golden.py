"""Every RG6xx rule has a golden case (inputs + expected findings), several on real recipes and Qwen docs commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.configs.golden import check_golden

CASES = sorted(p for p in (Path(__file__).parent / "cases").iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case):
    check_golden(case, "config")


def test_every_config_rule_has_a_case():
    from regraft.checks.registry import rules_for

    codes = {r.code for r in rules_for("config")}
    covered = {c.name.split("-")[0] for c in CASES}
    assert codes <= covered, sorted(codes - covered)
