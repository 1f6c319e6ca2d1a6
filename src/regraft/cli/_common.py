"""Options and output helpers shared by commands."""

from __future__ import annotations

import sys


def add_format(p, choices=("table", "json", "markdown")) -> None:
    p.add_argument("--format", choices=choices, default="table", help="output format (default: table)")


def emit(text: str | None) -> None:
    """Write data to stdout (renderers that print themselves return None)."""
    if text is not None:
        from regraft.escape import safe  # no terminal control from a file's content; JSON has none to lose

        text = safe(text)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)
