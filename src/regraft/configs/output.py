"""Atomic text output for `port config` / `port rag` (see ``regraft.outputs``): temp name + rename, never over
(or inside) an input, never over an existing file without --force."""

from __future__ import annotations

from pathlib import Path

from regraft import outputs


def write_text_atomic(out: str | Path, text: str, inputs: list, force: bool = False) -> Path:
    outputs.write_text(out, text, inputs, force)
    return Path(out).expanduser()
