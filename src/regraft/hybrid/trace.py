"""The step-by-step record of one hybrid request (``--trace``): what ran, how long, and why it escalated."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Step:
    name: str
    ms: float
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"step": self.name, "ms": round(self.ms, 2), **self.detail}


class Trace:
    def __init__(self):
        self.steps: list[Step] = []
        self._t0 = time.perf_counter()

    @contextmanager
    def step(self, name: str, **detail):
        t = time.perf_counter()
        d = dict(detail)
        try:
            yield d
        finally:
            self.steps.append(Step(name, (time.perf_counter() - t) * 1000, d))

    def add(self, name: str, ms: float = 0.0, **detail) -> None:
        self.steps.append(Step(name, ms, detail))

    @property
    def total_ms(self) -> float:
        return (time.perf_counter() - self._t0) * 1000

    def to_list(self) -> list[dict]:
        return [s.to_dict() for s in self.steps]

    def render(self, console) -> None:
        from rich.markup import escape
        from rich.table import Table

        t = Table(title="regraft trace", show_lines=False)
        t.add_column("step")
        t.add_column("ms", justify="right")
        t.add_column("detail", overflow="fold")
        for s in self.steps:
            detail = "; ".join(f"{k}={_fmt(v)}" for k, v in s.detail.items())
            t.add_row(escape(s.name), f"{s.ms:.1f}", escape(detail))
        console.print(t)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    s = str(v)
    return s if len(s) <= 160 else s[:159] + "…"
