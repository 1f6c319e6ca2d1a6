"""What a port method did and measured: ``MethodReport`` (project, distill, auto), ``PortResult`` (any method)."""

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
    """What a method that trains or fits (project, distill, auto) did and measured. ``to_dict`` is what goes into
    the output's regraft_port.json."""

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


@dataclass
class PortResult:
    """What ``regraft port lora`` did, whichever method: ``copy`` (copy/relayout: the per-module result) or
    ``report`` (project/distill/auto: what the method measured). ``to_dict`` keeps schema version 1 of each
    (the copy result's keys, or the method report's) and adds ``method`` and ``dry_run``."""

    method: str
    plan: object  # regraft.port.methods.MethodPlan
    copy: object | None = None  # regraft.port.api.CopyResult
    report: MethodReport | None = None
    dry_run: bool = False
    layouts: dict | None = None  # relayout between producer layouts: regraft.port.relayout.relayout_folder's report

    @property
    def out(self):
        if self.copy is not None:
            return self.copy.out
        if self.layouts is not None:
            return self.layouts.get("out")
        return self.report.out if self.report is not None else None

    def to_dict(self) -> dict:
        if self.copy is not None:
            d = self.copy.to_dict()
        elif self.report is not None:
            d = self.report.to_dict()
        elif self.layouts is not None:
            d = dict(self.layouts)
        else:
            d = {"out": None}
        d.update(method=self.method, dry_run=self.dry_run)
        if self.dry_run and self.copy is None and self.layouts is None:
            d["plan"] = self.plan.to_dict()
        return d
