"""The layout-conversion interface the port uses (``relayout`` method, and the relayout step of ``copy``).

A conversion turns the adapter's items (:class:`regraft.port.items.Item`) into another MoE expert layout, exactly:

    convert(items, num_experts, intermediate) -> items        # one function per output layout
    blockers(items, num_experts) -> [reason, ...]              # why a conversion to that layout cannot be exact

The defaults are ``regraft.port.relayout`` (per-expert v4 <-> fused v5). ``regraft.port.layouts`` (exact conversions
as pure functions, owned by the layouts work) overrides them when it defines ``CONVERSIONS = {layout: convert}`` and
optionally ``BLOCKERS = {layout: blockers}``; nothing else in the port changes when it does.
"""

from __future__ import annotations

import importlib
from typing import Callable

V4, V5 = "moe-v4-per-expert", "moe-v5-fused"


def _defaults() -> tuple[dict[str, Callable], dict[str, Callable]]:
    from regraft.port import relayout

    return ({V4: lambda items, n, inter: relayout.to_v4(items, n, inter),
             V5: lambda items, n, inter: relayout.to_v5(items, n)},
            {V5: lambda items, n: relayout.v5_blockers(items, n)})


def tables() -> tuple[dict[str, Callable], dict[str, Callable]]:
    conv, block = _defaults()
    try:
        mod = importlib.import_module("regraft.port.layouts")
    except ModuleNotFoundError as e:
        if e.name != "regraft.port.layouts":
            raise
        return conv, block
    conv.update(getattr(mod, "CONVERSIONS", None) or {})
    block.update(getattr(mod, "BLOCKERS", None) or {})
    return conv, block


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
