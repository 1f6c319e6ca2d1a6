"""Atomic output: build the whole adapter folder (or GGUF file) under a temporary name next to the destination,
then commit it into place (``regraft.outputs``). Never over an input; never over an existing output without
``force``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from regraft import outputs

SIDE_GGUF = ".regraft.json"  # the report next to a GGUF output


def check_output(out: str | Path, inputs: list[str | Path], force: bool, gguf: bool | None = None) -> Path:
    """Guard ``out`` (and the GGUF side report) against the inputs; return the path to write. ``gguf``: a single
    GGUF file is written (default: decided by the .gguf suffix)."""
    gguf = str(out).endswith(".gguf") if gguf is None else gguf
    return outputs.guard(out, inputs, force, side=(SIDE_GGUF,) if gguf else (), kind="file" if gguf else "dir")


def _tmp_name(out: Path) -> Path:
    return outputs.tmp_name(Path(out))


def replace_into(tmp: Path, out: Path) -> None:
    """Move a finished temporary file/folder to ``out`` without a window (see ``outputs.commit``)."""
    outputs.commit(Path(tmp), outputs.final_path(out))


def write_peft(out: Path, config: dict, tensors: dict, report: dict | None = None,
               copy_weights_from: Path | None = None) -> Path:
    """Write a PEFT adapter folder atomically. ``tensors``: key -> torch tensor; or ``copy_weights_from`` (an
    unchanged adapter_model.safetensors, copied byte for byte). ``out`` was checked with ``check_output``."""
    final = outputs.final_path(out)
    tmp = _tmp_name(final)
    if os.path.lexists(tmp):
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
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
        outputs.commit(tmp, final)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def write_side_report(out: Path, report: dict) -> Path:
    """The JSON report next to a GGUF output (guarded with it by ``check_output``; one atomic rename)."""
    final = outputs.final_path(out)
    side = final.with_name(final.name + SIDE_GGUF)
    tmp = _tmp_name(side)
    try:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
        outputs.commit(tmp, side)
    finally:
        if os.path.lexists(tmp):
            tmp.unlink()
    return side


def _json_default(o):
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)
