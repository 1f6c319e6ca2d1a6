"""``PortRequest``: what the user asked ``regraft port lora`` to do, built once (models resolved, adapter and
calibration text read once) and handed to the chosen method's ``plan`` and ``run``.

``given`` names the options the user set (CLI ``dest`` names); a method refuses any it does not read
(:func:`regraft.port.methods.refuse_unread`), so no option is silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from regraft.errors import FileFormatError, InputError
from regraft.inspection.adapter import AdapterSpec
from regraft.inspection.model import ModelSpec


@dataclass(frozen=True)
class Budgets:
    """How much the training methods may spend (the CLI defaults; docs/transfer.md, distill)."""

    n_prompts: int = 256
    steps: int = 1500
    loss: str = "logit"  # logit | seq | delta
    keep_generic: float = 1.0
    sample_frac: float = 0.0
    mlp: str = "map"  # map | skip
    batch: int = 32  # distill batch (not a CLI option: the cost estimate uses it)
    max_new: int = 24  # teacher completion length (idem)
    keep: float = 0.5  # fraction of the labelled pool kept by excess (idem)


@dataclass(frozen=True)
class TeacherEndpoint:
    url: str
    model: str = "default"
    base_model: str | None = None


@dataclass
class PortRequest:
    adapter: AdapterSpec | None  # None only for a producer-layout relayout (--layout FROM:TO reads the folder itself)
    target: ModelSpec
    target_name: str  # what the user typed for --to (recorded as base_model_name_or_path)
    adapter_path: Path | None = None
    method: str = "copy"
    source: ModelSpec | None = None
    runtime: str = "peft"
    layout: str = "auto"
    out: Path | None = None
    revision: str | None = None
    allow_lossy: bool = False
    force: bool = False
    dry_run: bool = False
    drift: bool = True
    gguf: bool = False
    seeds: list[str] | None = None  # --prompts, read once
    seeds_path: Path | None = None
    template: str | None = None
    calib: list[str] | None = None  # --calib, read once
    budgets: Budgets = field(default_factory=Budgets)
    teacher: TeacherEndpoint | None = None
    given: frozenset[str] = frozenset()  # options the user set explicitly (CLI dest names)
    show_progress: bool = True

    @property
    def has_prompts(self) -> bool:
        return bool(self.seeds or self.template)

    def local(self, which: str) -> Path | None:
        """The local weights folder of ``source`` or ``target`` (None when it is a catalog/hub name only)."""
        m = self.source if which == "source" else self.target
        return Path(m.path) if m is not None and m.path is not None and m.tensors else None


def read_calib(path: str | Path | None) -> list[str] | None:
    """--calib FILE: .txt one text per line, .jsonl a 'text' field per line. Bad paths/content -> InputError."""
    if not path:
        return None
    p = Path(path)
    if p.suffix == ".jsonl":
        out = [_field(d, ("text",), p, "--calib", n) for n, d in read_jsonl(p, "--calib")]
    else:
        out = [x for x in read_text(p, "--calib").splitlines() if x.strip()]
    if not out:
        raise InputError(f"--calib {p}: the file holds no text; expected generic unlabelled text, one per line")
    return out


def read_seeds(path: str | Path | None) -> list[str] | None:
    """--prompts SEEDS.jsonl: a 'prompt' (or 'input'/'text') field per line. Bad paths/content -> InputError."""
    if not path:
        return None
    p = Path(path)
    out = [_field(d, ("prompt", "input", "text"), p, "--prompts", n) for n, d in read_jsonl(p, "--prompts")]
    if not out:
        raise InputError(f"--prompts {p}: no prompts in the file; expected a few example prompts, one JSON per line")
    return out


def read_jsonl(p: Path, option: str):
    """(record number, object) of each non-empty line, read by the bounded reader (regraft.inspection.files)."""
    from regraft.inspection.files import read_jsonl as _read_jsonl

    yield from enumerate(_read_jsonl(p, option), 1)


def _field(d, keys: tuple[str, ...], p: Path, option: str, n: int) -> str:
    v = next((d[k] for k in keys if k in d), None) if isinstance(d, dict) else None
    if not isinstance(v, str):
        more = f" (or {'/'.join(repr(k) for k in keys[1:])})" if len(keys) > 1 else ""
        raise FileFormatError(f"{option} {p}: line {n} needs a {keys[0]!r}{more} string field")
    return v


def read_text(p: Path, option: str) -> str:
    """The file's text, bounded like every user file (regular file, size cap, UTF-8: regraft.inspection.files)."""
    from regraft.inspection.files import read_text as _read_text

    return _read_text(p, option)
