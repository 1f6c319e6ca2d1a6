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
class Report:
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
