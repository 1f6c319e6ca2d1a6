"""Runtime fix-ups on items: each exact, or lossy with the size of the loss.

- :func:`pad_rank`: zero rows in A and zero columns in B; B A is unchanged, bit for bit (exact).
- :func:`fold_scale`: multiply B by s_module / s_target so a runtime with one global scale (no rsLoRA, no
  rank/alpha patterns, llama.cpp's alpha/rank) computes the same s * B A (exact up to float32 rounding; folded
  tensors are written in float32).
- :func:`dropped_norm`: how much of the adapter's update a drop removes, as a relative Frobenius norm. Needs the
  base weight for DoRA magnitudes and full copies (``weights``: name -> tensor loader), else reports None.
"""

from __future__ import annotations

import math

from regraft.port.items import Item


def pad_rank(it: Item, rank: int) -> Item:
    import torch

    r = it.rank
    if r is None or r == rank:
        return it
    if r > rank:
        raise ValueError(f"{it.module}: rank {r} is above {rank}; padding cannot lower a rank")
    if it.kind == "fused_experts":  # A (E*r, in) expert-major, B (out, r*E) rank-major: pad per expert
        raise ValueError("pad fused experts after splitting them per expert")
    a = torch.cat([it.a, it.a.new_zeros(rank - r, it.a.shape[1])])
    b = torch.cat([it.b, it.b.new_zeros(it.b.shape[0], rank - r)], dim=1)
    return it.copy(a=a, b=b)


def pad_fused(it: Item, num_experts: int, rank: int) -> Item:
    """Pad each expert of a fused item to ``rank`` (zero rows in each expert's block of A, zero rank columns in B)."""
    import torch

    E = num_experts
    r = it.a.shape[0] // E
    if r == rank:
        return it
    a = it.a.reshape(E, r, -1)
    a = torch.cat([a, a.new_zeros(E, rank - r, a.shape[-1])], dim=1).reshape(E * rank, -1)
    b = it.b.reshape(it.b.shape[0], r, E)
    b = torch.cat([b, b.new_zeros(b.shape[0], rank - r, E)], dim=1).reshape(it.b.shape[0], rank * E)
    return it.copy(a=a, b=b)


def fold_scale(it: Item, target_scale: float) -> Item:
    """Return an item whose B carries s/target_scale, so that target_scale * B' A == s * B A."""
    import torch

    if it.b is None or it.scale == target_scale:
        return it.copy(scale=target_scale) if it.b is not None else it
    factor = it.scale / target_scale
    b = (it.b.to(torch.float32) * factor)
    bias = None if it.bias is None else it.bias.to(torch.float32) * factor
    return it.copy(b=b, bias=bias, a=it.a.to(torch.float32), scale=target_scale)


def scale_for(rank: int, alpha: float, rslora: bool) -> float:
    return alpha / math.sqrt(rank) if rslora else alpha / rank


def lora_norm(it: Item) -> float:
    """||s B A||_F without forming B A (trace identity on the r x r Gram matrices)."""
    a, b = it.a.double(), it.b.double()
    g = (b.T @ b) * (a @ a.T)
    return abs(it.scale) * math.sqrt(max(float(g.sum()), 0.0))


def dropped_norm(it: Item, slot: str, weight=None) -> tuple[float | None, str]:
    """(relative norm lost, what it is relative to) for dropping ``slot`` of ``it``.

    - ``magnitude`` (DoRA): ||W_dora - W_lora|| / ||W_dora - W|| with W the base weight (None without W).
    - ``full`` (modules_to_save copy): ||W_saved - W|| / ||W||.
    - ``trainable_tokens``: ||delta|| / ||W[rows]||.
    - ``bias``: ||s * bias|| (absolute; relative to nothing).
    - ``lora`` (the whole module): 1.0 of that module's update, ||s B A|| given.
    """
    import torch

    if slot == "lora":
        return 1.0, f"whole module update, ||sBA||={lora_norm(it):.4g}"
    if slot == "bias":
        return float(it.bias.double().norm()) * abs(it.scale), "absolute ||s*bias||"
    if weight is None:
        return None, "base weights not local"
    w = weight.double()
    if slot == "magnitude":
        delta = it.scale * (it.b.double() @ it.a.double())
        lora = w + delta
        norm = lora.norm(dim=1, keepdim=True)
        dora = it.magnitude.double().reshape(-1, 1) * lora / norm
        denom = float((dora - w).norm())
        return (float((dora - lora).norm()) / denom if denom else 0.0), "of the DoRA module's update"
    if slot == "full":
        return float((it.full.double() - w).norm() / w.norm()), "of the base weight (the full copy's change)"
    if slot == "trainable_tokens":
        return float(it.full.double().norm() / max(float(w.norm()), 1e-30)), "of the embedding"
    return None, ""
