"""The suite relies on `--dist loadgroup` (pyproject addopts): the zoo's `scores` users and each hybrid module with
module-scoped servers are one xdist_group, so they run on one worker. With pytest 9.2 + xdist 3.8 the grouping
silently stopped (pytest-dev/pytest-xdist#1386): this checks, in a child pytest, that a group stays on one worker."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytest.importorskip("xdist")


def test_a_group_runs_on_one_worker(tmp_path):
    (tmp_path / "test_g.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.xdist_group('g')\n@pytest.mark.parametrize('i', range(6))\ndef test_grouped(i):\n    pass\n\n"
        "@pytest.mark.parametrize('i', range(6))\ndef test_free(i):\n    pass\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider", "--dist",
                        "loadgroup", "--no-loadscope-reorder", str(tmp_path / "test_g.py")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]
    grouped = re.findall(r"\[(gw\d)\].*PASSED .*test_grouped\[\d\]@g", r.stdout)
    assert len(grouped) == 6, r.stdout[-2000:]  # the node ids carry the group
    assert len(set(grouped)) == 1, grouped
