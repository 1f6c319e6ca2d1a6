"""The layout-conversion interface the port uses (``relayout`` method, and the relayout step of ``copy``).

A conversion turns the adapter's items (:class:`regraft.port.items.Item`) into another MoE expert layout, exactly:

    convert(items, num_experts, intermediate) -> items        # one function per output layout
    blockers(items, num_experts) -> [reason, ...]              # why a conversion to that layout cannot be exact

The conversions are ``regraft.port.relayout``'s (per-expert v4 <-> fused v5), registered in ``CONVERSIONS`` /
``BLOCKERS`` below: another exact conversion between these item layouts is one more entry there. Conversions between
*producer* layouts (MLX-LM, Unsloth, NeMo, ...: other key names and files) work on whole tensor dicts instead and
live in ``regraft.port.layouts`` (``relayout --layout FROM:TO``).
"""

from __future__ import annotations

from typing import Callable

V4, V5 = "moe-v4-per-expert", "moe-v5-fused"


def _to_v4(items, n, inter):
    from regraft.port import relayout

    return relayout.to_v4(items, n, inter)


def _to_v5(items, n, inter):
    from regraft.port import relayout

    return relayout.to_v5(items, n)


def _v5_blockers(items, n):
    from regraft.port import relayout

    return relayout.v5_blockers(items, n)


CONVERSIONS: dict[str, Callable] = {V4: _to_v4, V5: _to_v5}  # output layout -> convert(items, n, inter)
BLOCKERS: dict[str, Callable] = {V5: _v5_blockers}  # output layout -> blockers(items, n)


def tables() -> tuple[dict[str, Callable], dict[str, Callable]]:
    return CONVERSIONS, BLOCKERS


def available(layout_out: str) -> bool:
    return layout_out in tables()[0]


def blockers(items, layout_out: str, num_experts: int) -> list[str]:
    fn = tables()[1].get(layout_out)
    return list(fn(items, num_experts)) if fn else []


def convert(items, layout_out: str, num_experts: int, intermediate: int | None = None):
    fn = tables()[0].get(layout_out)
    if fn is None:
        from regraft.errors import InputError

        raise InputError(f"no exact conversion to the {layout_out} layout is known")
    return fn(items, num_experts, intermediate)
