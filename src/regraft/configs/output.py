"""Atomic text output for `port config` / `port rag`: temp name + rename, never over an input, never over an
existing file without --force."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from regraft.errors import InputError, OutputExistsError


def write_text_atomic(out: str | Path, text: str, inputs: list, force: bool = False) -> Path:
    out = Path(out).expanduser()
    ro = out.resolve()
    for i in inputs:
        if i is None:
            continue
        if Path(i).expanduser().resolve() == ro:
            raise InputError(f"Refusing to write '{out}': it is the input '{i}'. Choose another --out.")
    if ro.is_dir():
        raise InputError(f"Cannot write '{out}': it is a folder; expected a file name for --out.")
    if out.exists() and not force:
        raise OutputExistsError(f"'{out}' exists. Pass --force to replace it, or choose another --out.")
    if not ro.parent.is_dir():
        raise InputError(f"Cannot write '{out}': the folder '{out.parent}' does not exist.")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".regraft-tmp", dir=ro.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, ro)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out
