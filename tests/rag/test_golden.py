"""Every RG7xx rule has a golden case (inputs + expected findings with numbers from the real tokenizers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.configs.golden import check_golden

CASES = sorted(p for p in (Path(__file__).parent / "cases").iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case, qwen_dir):
    check_golden(case, "rag")


def test_every_rag_rule_has_a_case():
    from regraft.checks.registry import rules_for

    codes = {r.code for r in rules_for("rag")}
    covered = {c.name.split("-")[0] for c in CASES}
    assert codes <= covered, sorted(codes - covered)
