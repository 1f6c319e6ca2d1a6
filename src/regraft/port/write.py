"""Atomic output: build the whole adapter folder (or GGUF file) under a temporary name next to the destination,
then rename it into place. Never over the input; never over an existing output without ``force``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from regraft.errors import InputError, OutputExistsError


def check_output(out: str | Path, inputs: list[str | Path], force: bool) -> Path:
    out = Path(out).expanduser()
    ro = out.resolve()
    for i in inputs:
        if i is None:
            continue
        ri = Path(i).expanduser().resolve()
        if ro == ri or ri in ro.parents or ro in ri.parents:
            raise InputError(f"Refusing to write '{out}': it is (or contains, or is inside) the input '{i}'. "
                             "Choose another --out.")
    if out.exists() and not force:
        raise OutputExistsError(f"'{out}' exists. Pass --force to replace it, or choose another --out.")
    if not ro.parent.is_dir():
        raise InputError(f"Cannot write '{out}': the folder '{out.parent}' does not exist.")
    return out


def _tmp_name(out: Path) -> Path:
    return out.with_name(f".{out.name}.regraft-tmp-{os.getpid()}")


def replace_into(tmp: Path, out: Path) -> None:
    """Move a finished temporary file/folder to ``out`` (replacing an existing one only after success)."""
    if out.exists():
        old = out.with_name(f".{out.name}.regraft-old-{os.getpid()}")
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old, out)
            raise
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.replace(tmp, out)


def write_peft(out: Path, config: dict, tensors: dict, report: dict | None = None,
               copy_weights_from: Path | None = None) -> Path:
    """Write a PEFT adapter folder atomically. ``tensors``: key -> torch tensor; or ``copy_weights_from`` (an
    unchanged adapter_model.safetensors, copied byte for byte)."""
    tmp = _tmp_name(out)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        if copy_weights_from is not None:
            shutil.copyfile(copy_weights_from, tmp / "adapter_model.safetensors")
        else:
            from safetensors.torch import save_file

            seen: set = set()
            own = {}
            for k, v in tensors.items():  # split views/shared storage (gate and up may share A after a split)
                ptr = v.untyped_storage().data_ptr() if v.numel() else None
                own[k] = v.clone().contiguous() if (ptr in seen or not v.is_contiguous()) else v
                seen.add(ptr)
            save_file(own, str(tmp / "adapter_model.safetensors"),
                      metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if report is not None:
            (tmp / "regraft_port.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        replace_into(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _json_default(o):
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)
