"""What a method that ports across shapes did and measured."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


def kl_rows(logp_p, logp_q):
    """KL(p || q) per row from log-probabilities (torch)."""
    return (logp_p.exp() * (logp_p - logp_q)).sum(-1)


def to_jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    return str(o)


def dumps(d) -> str:
    return json.dumps(d, indent=2, default=to_jsonable)


@dataclass
class MethodReport:
    """What a transfer method did and measured. ``to_dict`` is what goes into regraft_transfer.json."""

    method: str
    out: str | None = None
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    def to_dict(self) -> dict:
        return json.loads(dumps(asdict(self)))


def rewrite_report(out_dir, rep: MethodReport) -> None:
    """Add the checks to the report file inside the (already atomically written) output folder."""
    import os

    p = Path(out_dir) / "regraft_port.json"
    try:
        d = json.loads(p.read_text()) if p.exists() else {}
    except ValueError:
        d = {}
    d.update({"regraft": f"port lora --method {rep.method}", **rep.to_dict()})
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(d, indent=2, default=str) + "\n")
    os.replace(tmp, p)
