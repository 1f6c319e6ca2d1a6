"""Options and output helpers shared by commands: one ``--format`` vocabulary, the runtimes from the catalog."""

from __future__ import annotations

import sys

# every --format takes these names; a command offers the subset it renders (table = the human-readable text)
FORMATS = ("table", "json", "markdown")
FORMAT_ALIASES = {"text": "table"}


def _format(value: str) -> str:
    return FORMAT_ALIASES.get(value, value)


def add_format(p, choices=FORMATS, default: str = "table") -> None:
    """--format with the shared names; ``text`` is accepted as another name for ``table``."""
    bad = set(choices) - set(FORMATS)
    if bad:
        raise ValueError(f"unknown formats {sorted(bad)}: use names from FORMATS")
    p.add_argument("--format", type=_format, choices=choices, default=default,
                   help=f"output format: {', '.join(choices)} (default: {default})")


def runtimes() -> list[str]:
    """The runtimes regraft knows (the catalog's src/regraft/catalog/runtimes/*.json)."""
    from regraft.catalog import runtime_names

    return runtime_names()


def add_runtime(p, default: str | None = "peft", help_default: str | None = None) -> None:
    """--runtime, the names listed from the catalog; the library refuses an unknown one in one line, naming them."""
    p.add_argument("--runtime", default=default, metavar="RUNTIME",
                   help=f"{', '.join(runtimes())} (default: {help_default or default})")


def emit(text: str | None) -> None:
    """Write data to stdout (renderers that print themselves return None)."""
    if text is not None:
        from regraft.escape import safe  # no terminal control from a file's content; JSON has none to lose

        text = safe(text)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)
