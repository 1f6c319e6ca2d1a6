"""Every LoRA rule (RG1xx-RG4xx) has a golden case in tests/adapters/cases (format: cases/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adapters.golden import check_golden

CASES = sorted(p for p in (Path(__file__).parent / "cases").iterdir() if p.is_dir())
# Rules whose golden input is a local model folder with weights (RG113) or needs transformers' meta-device
# inference (RG114), or two local checkpoints whose drift is streamed (RG205): covered by
# tests/core/test_model_consistency.py and tests/core/test_oracle_peft.py instead; RG115 (wrapper namespaces, the
# catalog helper's rule) by tests/catalog/test_namespaces.py.
ELSEWHERE = {"RG113", "RG114", "RG115", "RG205", "RG307"}  # RG307 needs local base weights: tests/layouts


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case, tmp_path):
    check_golden(case, tmp_path)


def test_every_lora_rule_has_a_case():
    from regraft.checks.registry import rules_for

    codes = {r.code for r in rules_for("lora")}
    tests = Path(__file__).parents[1]  # other areas keep LoRA-rule cases in the same format (e.g. tests/catalog)
    covered = {c.name.split("-")[0] for c in tests.glob("*/cases/RG*") if c.is_dir()}
    from tests.layouts.test_rules import GOLDEN as LAYOUT_GOLDEN  # RG304-RG307: in-module cases (no folders)

    covered |= {case[0].split("-")[0] for case in LAYOUT_GOLDEN}
    assert codes - ELSEWHERE <= covered, sorted(codes - ELSEWHERE - covered)
