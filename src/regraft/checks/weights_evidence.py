"""Numbers where shapes are blind: decide an adapter's layout from its weights and the local base (torch, lazily)."""

from __future__ import annotations


def evidence_for_context(ctx):
    return None
