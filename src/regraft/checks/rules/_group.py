"""Fold per-layer matches into one finding per (module template, reason), naming the layers."""

from __future__ import annotations

from regraft.checks.lora_map import Match
from regraft.inspection.adapter import _ranges


def grouped(matches: list[Match]) -> list[tuple[str, str, list[Match]]]:
    groups: dict[tuple[str, str], list[Match]] = {}
    for m in matches:
        groups.setdefault((m.template, m.why), []).append(m)
    return [(t, why, ms) for (t, why), ms in groups.items()]


def layers_text(ms: list[Match]) -> str:
    layers = sorted({m.am.layer for m in ms if m.am.layer is not None})
    return f"layers {_ranges(layers)}" if layers else "global"


def tensor_count(ms: list[Match]) -> int:
    return sum(len(m.am.tensors) for m in ms)
