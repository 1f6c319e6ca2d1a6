"""The `regraft` command: parse, call the library, render, exit.

Each command lives in its own module ``regraft.cli.cmd_<name>`` exposing ``add_parser(subparsers)`` and
``run(args) -> int``. Command modules import heavy libraries (torch, transformers) only inside ``run``, so
``regraft check`` never pays for them.

Exit codes: 0 carries over / success, 1 findings at or above --fail-on (or a failed verification),
2 usage or input error.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pickle
import re
import sys

# Order here is the order in `regraft --help`.
COMMANDS = ["inspect", "check", "port", "verify", "drift", "index", "serve", "ask", "calibrate", "rules", "catalog"]


def _load(name: str):
    try:
        return importlib.import_module(f"regraft.cli.cmd_{name}")
    except ModuleNotFoundError as e:
        if e.name == f"regraft.cli.cmd_{name}":
            return None  # command not built yet in this checkout
        raise


class _Parser(argparse.ArgumentParser):
    """argparse with one error line (``regraft CMD: error: ...``, exit 2) instead of usage + message."""

    def error(self, message: str):
        from regraft.escape import safe_line

        self.exit(2, f"{self.prog}: error: {safe_line(' '.join(message.split())).rstrip('.')}. See '{self.prog} --help'.\n")


def _plain_numbers(parser: argparse.ArgumentParser) -> None:
    """Every ``type=int`` / ``type=float`` flag of every command parses through regraft.numbers (plain bounded
    decimals: '²', '١٢', '1_000', 10**400, 'nan', 'inf' are refused)."""
    from regraft.numbers import float_flag, int_flag

    for a in parser._actions:
        if a.type is int:
            a.type = int_flag()
        elif a.type is float:
            a.type = float_flag()
        for sub in (getattr(a, "choices", None) or {}).values() if isinstance(a, argparse._SubParsersAction) else ():
            _plain_numbers(sub)


def command_in(argv: list[str]) -> str | None:
    """The command ``argv`` names (its first word that is not a flag), when it is one of COMMANDS."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``only``, that command's parser in full and the others as bare names (their modules,
    and what those import, are not loaded: `regraft check` does not build the port parser's 40 flags)."""
    from regraft import __version__

    parser = _Parser(
        prog="regraft",
        description="What carries over when you move LoRA adapters, serving configs and RAG setups between LLMs.",
    )
    parser.add_argument("--version", action="version", version=f"regraft {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (or set REGRAFT_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if only is not None and name != only:
            sub.add_parser(name, add_help=False)
            continue
        module = _load(name)
        if module is not None:
            p = module.add_parser(sub)
            p.set_defaults(_run=module.run)
    _plain_numbers(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from regraft.errors import RegraftError

    for stream in (sys.stdout, sys.stderr):  # names from hostile files may hold lone surrogates ("\ud800")
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser(command_in(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    debug = args.debug or os.environ.get("REGRAFT_DEBUG") == "1"
    try:
        return int(args._run(args) or 0)
    except RegraftError as e:
        if debug:
            raise
        print(f"regraft {args.command}: error: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"regraft {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except pickle.UnpicklingError as e:  # torch's weights_only loader refused a pickle (a malicious .bin)
        if debug:
            raise
        print(f"regraft {args.command}: error: {_one_line(_pickle_error(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # read-only folder, full disk, permission, a name too long: one line, outputs rolled back
        if debug:
            raise
        print(f"regraft {args.command}: error: {_one_line(_os_error(e))}", file=sys.stderr)
        return 2


_OS_HINT = {
    errno.ENOSPC: "free some space or choose another --out", errno.EDQUOT: "free some space or choose another --out",
    errno.EROFS: "the file system is read-only: choose another --out",
    errno.EACCES: "check the permissions, or choose another path", errno.EPERM: "check the permissions",
    errno.ENAMETOOLONG: "use a shorter path", errno.ELOOP: "the path has a loop of links",
}


def _pickle_error(e: Exception) -> str:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return ("Refused to load a pickled checkpoint (.bin/.pt): it holds objects other than tensors, which could run "
            f"code, and regraft never unpickles those ({first}). Use the model's safetensors weights.")


def _os_error(e: OSError) -> str:
    """An OSError as: what failed, on which path, why, what to do. (Writers go through regraft.outputs, which
    removes its temporary files on any error: nothing partial is left.)"""
    where = " -> ".join(f"'{p}'" for p in (e.filename, e.filename2) if p is not None)
    why = e.strerror or str(e) or type(e).__name__
    hint = _OS_HINT.get(e.errno, "check the path")
    return f"{'Cannot use ' + where + ': ' if where else ''}{why}. {hint[0].upper() + hint[1:]}."


_LONG_WORD = re.compile(r"\S{241,}")


def _one_line(msg: str) -> str:
    """One line, escaped, with any name longer than 240 characters (a 5000-character tensor name) cut in the
    middle, and the whole at most 2000 characters."""
    from regraft.escape import safe_line

    text = _LONG_WORD.sub(lambda m: f"{m.group()[:160]}…({len(m.group())} characters)…{m.group()[-40:]}",
                          safe_line(" ".join(msg.split())))
    return text if len(text) <= 2000 else text[:1990] + " …(cut)"


if __name__ == "__main__":
    raise SystemExit(main())
