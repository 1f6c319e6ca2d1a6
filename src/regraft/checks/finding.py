"""Findings, verdicts and reports: the values `check` returns and every renderer reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

SCHEMA_VERSION = 1


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return ["info", "warning", "error"].index(self.value)


class Verdict(str, Enum):
    """Per-target answer, ordered from best to worst."""

    LOADS = "loads"  # loads as is, on the weights it was trained on
    LOADS_DIFFERENT_WEIGHTS = "loads-different-weights"  # shapes fit, trained on a sibling: verify
    NEEDS_RELAYOUT = "needs-relayout"  # exact (or declared lossy) relayout for the runtime
    NEEDS_PORT = "needs-port"  # shapes differ: projection / distillation
    CANNOT = "cannot"  # no weight path at all (e.g. unsupported architecture, other vocabulary)
    UNKNOWN = "unknown"  # facts missing (partial catalog entry): not decidable, never guessed

    @property
    def rank(self) -> int:
        return list(Verdict).index(self)

    @property
    def text(self) -> str:
        return {
            "loads": "loads as is",
            "loads-different-weights": "loads, but trained on different weights: verify",
            "needs-relayout": "needs relayout for this runtime",
            "needs-port": "needs a port across shapes",
            "cannot": "cannot carry over",
            "unknown": "unknown (facts missing)",
        }[self.value]


_AREA_TEXT = {  # config and RAG files are rewritten, not ported across shapes
    "loads": "usable as is", "loads-different-weights": "usable, but the model behaves differently: review",
    "needs-relayout": "needs small changes", "needs-port": "needs rewriting (regraft port {area})",
    "cannot": "cannot carry over", "unknown": "unknown (facts missing)",
}


def verdict_text(verdict: Verdict, area: str = "lora") -> str:
    return verdict.text if area == "lora" else _AREA_TEXT[verdict.value].format(area=area)


def worst(verdicts) -> Verdict:
    verdicts = list(verdicts)
    if not verdicts:
        return Verdict.LOADS
    hard = [v for v in verdicts if v is not Verdict.UNKNOWN]
    top = max(hard, key=lambda v: v.rank) if hard else Verdict.UNKNOWN
    # Unknown facts outrank "loads": we never say it loads when part of it could not be decided.
    if Verdict.UNKNOWN in verdicts and top.rank < Verdict.NEEDS_PORT.rank:
        return Verdict.UNKNOWN
    return top


@dataclass(frozen=True)
class Finding:
    code: str  # stable, e.g. RG101
    name: str  # slug, e.g. lora-shape-mismatch
    severity: Severity
    message: str  # what differs, with both values
    hint: str = ""  # the next step
    verdict: Verdict | None = None  # what this finding does to the target's verdict (None: nothing)
    layer: int | None = None
    module: str | None = None
    area: str = "lora"  # lora | config | rag
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["severity"] = self.severity.value
        d["verdict"] = self.verdict.value if self.verdict else None
        return d


@dataclass(frozen=True)
class ModuleRow:
    """One line of the per-layer, per-module table: source shape -> target shape, status, why."""

    module: str  # template with layer index, e.g. model.layers.3.self_attn.q_proj
    layer: int | None
    role: str
    source_shape: tuple | None  # adapter view: (in, out) of the delta; architecture view: source module shape
    target_shape: tuple | None
    status: str  # ok | mismatch | dropped | missing | unknown | relayout | extra
    why: str = ""
    tensors: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AreaResult:
    """One column (LoRA, Config, RAG) for one target."""

    area: str
    verdict: Verdict
    findings: list[Finding] = field(default_factory=list)
    rows: list[ModuleRow] = field(default_factory=list)
    summary: str = ""

    def to_dict(self, layers: bool = False) -> dict:
        d = {"area": self.area, "verdict": self.verdict.value, "verdict_text": verdict_text(self.verdict, self.area),
             "summary": self.summary, "findings": [f.to_dict() for f in self.findings]}
        if layers:
            d["rows"] = [r.to_dict() for r in self.rows]
        return d


@dataclass
class TargetResult:
    target: str
    target_source: str
    areas: dict[str, AreaResult] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        return worst(a.verdict for a in self.areas.values())

    @property
    def verdict_text(self) -> str:
        """The verdict in the words of the area that set it: a config that needs a flag changed is not a LoRA that
        needs a port across shapes."""
        v = self.verdict
        by = [a for a, r in self.areas.items() if r.verdict is v]
        if not by or "lora" in by:
            return v.text
        return "; ".join(f"{a}: {verdict_text(v, a)}" for a in by)

    @property
    def findings(self) -> list[Finding]:
        return [f for a in self.areas.values() for f in a.findings]

    def to_dict(self, layers: bool = False) -> dict:
        return {"target": self.target, "target_source": self.target_source, "verdict": self.verdict.value,
                "verdict_text": self.verdict_text,
                "areas": {k: a.to_dict(layers) for k, a in self.areas.items()}}


@dataclass
class CheckReport:
    source: str
    source_source: str
    adapter: str | None
    runtime: str
    targets: list[TargetResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bytes_read: int = 0

    def max_severity(self) -> Severity | None:
        sev = [f.severity for t in self.targets for f in t.findings]
        return max(sev, key=lambda s: s.rank) if sev else None

    def fails(self, fail_on: str) -> bool:
        """True when a finding is at or above ``fail_on`` (info | warning | error | never)."""
        if fail_on == "never":
            return False
        threshold = Severity(fail_on).rank
        return any(f.severity.rank >= threshold for t in self.targets for f in t.findings)

    def to_dict(self, layers: bool = False) -> dict:
        return {"schema_version": SCHEMA_VERSION, "tool": "regraft", "source": self.source,
                "source_source": self.source_source, "adapter": self.adapter, "runtime": self.runtime,
                "bytes_read": self.bytes_read, "notes": self.notes,
                "targets": [t.to_dict(layers) for t in self.targets]}
