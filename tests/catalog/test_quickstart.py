"""The README's quick start, exactly as written: every `regraft check` in its first bash block answers every row
(no `unknown`) and exits with the code the README documents for it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from regraft.cli.main import main

README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart() -> tuple[list[list[str]], list[int]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quick start"):]
    section = section[:section.index("\n## ", 3)]
    block = re.search(r"```bash\n(.+?)\n```", section, re.S).group(1)
    commands = [shlex.split(part) for part in re.split(r"&&|;", block)]
    checks = [c[2:] for c in commands if c[:2] == ["regraft", "check"]]
    codes = [int(c) for c in re.findall(r"exits (\d)", section)]
    return checks, codes


def test_readme_quickstart_commands_answer_every_row(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checks, codes = quickstart()
    assert len(checks) == 2 and codes == [1, 2]
    seed = checks[0]
    assert seed[0] == "Qwen/Qwen3-30B-A3B-Base"
    assert {"Qwen/Qwen3-30B-A3B-Instruct-2507", "Qwen/Qwen3-32B", "Qwen/Qwen3-235B-A22B-Instruct-2507"} <= set(seed)
    assert "Qwen/Qwen3-70B" in checks[1]
    for argv, want in zip(checks, codes):
        code = main(["check", *argv, "--format", "json"] if want != 2 else ["check", *argv])
        out, err = capsys.readouterr()
        assert code == want, (argv, err)
        assert "unknown" not in out.lower()
        if want == 2:
            assert out == "" and err.count("\n") == 1 and "does not exist" in err and "Qwen/Qwen3-32B" in err
        else:
            import json

            doc = json.loads(out)
            targets = [a for a in argv[1:] if not a.startswith("-") and "/" in a and not a.startswith("example:")]
            assert [t["target"] for t in doc["targets"]] == targets
            assert all(t["verdict"] != "unknown" for t in doc["targets"])


def test_readme_quickstart_table_as_printed(capsys, monkeypatch):
    """The default (table) output of the first command: no row says unknown."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checks, codes = quickstart()
    assert main(["check", *checks[0]]) == codes[0]
    out = capsys.readouterr().out
    assert "unknown" not in out.lower() and "loads, but trained on different" in out
