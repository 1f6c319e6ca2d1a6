"""Every RG6xx / RG7xx rule is documented: a summary line, why, a Bad and a Good example; codes in their ranges."""

from __future__ import annotations

import pytest

from regraft.checks.registry import load_all

MINE = [r for r in load_all().values() if r.area in ("config", "rag")]


@pytest.mark.parametrize("rule", MINE, ids=[r.code for r in MINE])
def test_rule_documented(rule):
    doc = rule.doc
    assert rule.summary and len(doc.splitlines()) >= 4
    assert "Bad:" in doc and "Good:" in doc
    assert rule.code.startswith("RG6" if rule.area == "config" else "RG7")


def test_counts():
    assert len([r for r in MINE if r.area == "config"]) == 21
    assert len([r for r in MINE if r.area == "rag"]) == 9
