"""Golden cases: a folder per rule with its inputs, case.yaml (source, target, config/rag, runtime) and expected.txt
(the area verdict, then every finding as 'CODE severity verdict: message'). REGRAFT_UPDATE_GOLDEN=1 rewrites
expected.txt (review the diff before committing)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def load_case(case: Path) -> dict:
    return yaml.safe_load((case / "case.yaml").read_text())


def run_case(case: Path, area: str):
    from regraft.inspection.resolve import resolve_model

    spec = load_case(case)

    def model(name):
        if name is None:
            return None
        p = case / name
        return resolve_model(p if p.is_dir() else name)

    source, target = model(spec.get("source")), model(spec["target"])
    options = {"config": None, "rag": None, "runtime": spec.get("runtime", "peft")}
    options[area] = str(case / spec[area])
    if area == "config":
        from regraft.checks.area_config import run_config as runner
    else:
        from regraft.checks.area_rag import run_rag as runner
    return runner(source, target, options)


def render_result(result) -> str:
    lines = [f"verdict: {result.verdict.value}"]
    for f in result.findings:
        lines.append(f"{f.code} {f.severity.value} {f.verdict.value if f.verdict else '-'}: {f.message}")
    return "\n".join(lines) + "\n"


def compare_golden(case: Path, got: str) -> str:
    """``got`` equals the case's expected.txt (REGRAFT_UPDATE_GOLDEN=1 rewrites it) and triggers the case's code."""
    exp_path = case / "expected.txt"
    if os.environ.get("REGRAFT_UPDATE_GOLDEN") or not exp_path.exists():
        exp_path.write_text(got)
    expected = exp_path.read_text()
    assert got == expected, f"{case.name}:\n--- expected\n{expected}--- got\n{got}"
    code = case.name.split("-")[0]
    assert any(line.startswith(code + " ") for line in got.splitlines()), f"{case.name} does not trigger {code}"
    return got


def check_golden(case: Path, area: str) -> str:
    return compare_golden(case, render_result(run_case(case, area)))
