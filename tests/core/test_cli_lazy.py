"""`regraft CMD ...` builds only CMD's parser: the other commands' modules (port's methods, serve's server) are not
imported, which kept `check` over its cold-start budget (bench/results/check_speed.md)."""

from __future__ import annotations

import subprocess
import sys

from regraft.cli.main import COMMANDS, build_parser, command_in


def test_the_command_is_the_first_word_that_is_not_a_flag():
    assert command_in(["--debug", "check", "A", "B"]) == "check"
    assert command_in(["--help"]) is None and command_in([]) is None
    assert command_in(["chek", "check"]) is None  # a typo is argparse's to refuse, with every choice listed


def test_every_command_stays_a_choice_and_only_one_is_built():
    full, one = build_parser(), build_parser("check")
    names = lambda p: set(next(a for a in p._actions if a.dest == "command").choices)  # noqa: E731
    assert names(full) == names(one) == set(COMMANDS)
    assert one.parse_args(["check", "Qwen/Qwen3-8B", "Qwen/Qwen3-8B"])._run.__module__ == "regraft.cli.cmd_check"


def test_check_does_not_import_the_other_commands():
    code = ("import sys, io, contextlib\nfrom regraft.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['check', 'Qwen/Qwen3-8B', 'Qwen/Qwen3-8B', '--format', 'json'])\n"
            "print(sorted(m for m in sys.modules if m.startswith(('regraft.cli.cmd_', 'regraft.port', 'regraft.hybrid'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "regraft.cli.cmd_check" in out and "regraft.cli.cmd_port" not in out and "regraft.cli.cmd_serve" not in out
