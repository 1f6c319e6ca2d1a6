"""Every LoRA rule (RG1xx-RG4xx) has a golden case in tests/adapters/cases (format: cases/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adapters.golden import check_golden

CASES = sorted(p for p in (Path(__file__).parent / "cases").iterdir() if p.is_dir())
# Rules with no case folder: RG307 (layout evidence from the numbers), which needs a fused-expert base and adapter
# with trained values: tests/layouts/test_weights_evidence.py. RG113 (config vs headers), RG114 (architecture
# inferred) and RG205 (drift between local checkpoints) have cases whose local model folders are synthesised at test
# time (`models:` in case.yaml); RG304-RG306 are in-module cases of tests/layouts/test_rules.py.
ELSEWHERE = {"RG307"}


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
