""".ci/extras.py: the requirement list `.ci/run` installs beside the editable project is the `dev` extra fully
expanded (no self-reference left, every extra it names included, the core dependencies first)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("ci_extras", REPO / ".ci" / "extras.py")
extras = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(extras)


def test_self_references_are_expanded_recursively():
    table = {"a": ["x>=1", "regraft[b, c]"], "b": ["y", "regraft[a]"], "c": ["x>=1", "z[serving]>=2"]}
    assert extras.requirements("a", table) == ["x>=1", "y", "z[serving]>=2"]


def test_an_unknown_extra_is_refused_by_name():
    with pytest.raises(SystemExit, match="no extra 'nope'; it has a"):
        extras.requirements("nope", {"a": []})


def test_dev_is_the_whole_project_without_the_project_itself():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out = subprocess.run([sys.executable, str(REPO / ".ci" / "extras.py"), "dev"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert not [r for r in out if r.startswith("regraft")]
    assert out[: len(project["dependencies"])] == project["dependencies"]
    opt = project["optional-dependencies"]
    for name in ("torch", "gguf", "tokenizers", "rag", "serve", "plot"):
        assert set(r for r in opt[name] if not r.startswith("regraft")) <= set(out), name
    assert {"pytest>=8,<9.2", "pytest-xdist>=3", "ruff>=0.6"} <= set(out)
