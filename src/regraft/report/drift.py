"""Renderers of a ``regraft.drift.DriftReport``: the text summary, and the plot (PNG with matplotlib, or HTML).

The plot draws what a reader asks of two checkpoints: which kinds of module moved, and where in depth. One row per
module role (``q_proj``, ``experts.down_proj``, ...; routed experts pooled), one column per layer (integer ticks),
the colour the relative Frobenius change ||A-B||/||A|| (log scale when it spans more than a decade); above it, one
line for each layer as a whole. No legend to read: the rows are labelled.
"""

from __future__ import annotations

import html
import math
from pathlib import Path


def render_drift(rep, top: int = 10) -> str:
    s = rep.summary()
    lines = [f"drift {rep.a} -> {rep.b}: {s['verdict']} (sigma {s['sigma']:.4f}, rel. Frobenius {s['rel_fro']:.4f})",
             f"  {s['copy_rule']}; {s['modules']} modules, {s['bytes_read'] / 1e9:.3f} GB read in {s['seconds']:.2f}s"
             + (f" ({s['seconds_per_gb']:.2f} s/GB)" if s['seconds_per_gb'] else "")]
    if rep.shape_mismatch:
        lines.append(f"  {len(rep.shape_mismatch)} tensors differ in shape, e.g. {rep.shape_mismatch[0]}")
    if rep.only_a or rep.only_b:
        lines.append(f"  tensors only in A: {len(rep.only_a)}, only in B: {len(rep.only_b)}")
    worst = sorted(rep.modules, key=lambda m: -m.rel_fro)[:top]
    if worst:
        w = max(len(m.name) for m in worst)
        lines.append(f"  {'module':<{w}}  {'rel.fro':>9} {'sigma':>9}")
        for m in worst:
            lines.append(f"  {m.name:<{w}}  {m.rel_fro:>9.4f} {m.sigma:>9.4f}")
    return "\n".join(lines)


def _grid(rep):
    per = rep.per_role()
    layers = sorted({i for d in per.values() for i in d})
    rows = list(per)
    vals = [[per[r].get(i, math.nan) for i in layers] for r in rows]
    return rows, layers, vals


def _title(rep) -> str:
    return f"drift {Path(rep.a).name} -> {Path(rep.b).name}: sigma {rep.sigma:.4f} ({rep.verdict})"


def plot(rep, out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() == ".png":
        return _png(rep, out)
    if out.suffix.lower() in (".html", ".htm"):
        return _html(rep, out)
    from regraft.errors import InputError

    raise InputError(f"--plot {out}: unknown plot format '{out.suffix}'; expected a .png or .html file name")


def _png(rep, out: Path) -> Path:
    from regraft.errors import need

    mpl = need("matplotlib", "regraft drift --plot PNG", "plot")
    mpl.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import MaxNLocator

    rows, layers, vals = _grid(rep)
    z = np.array(vals, dtype=float) if rows else np.zeros((1, 1))
    finite = z[np.isfinite(z) & (z > 0)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (1e-6, 1.0)
    norm = LogNorm(lo, hi) if hi / max(lo, 1e-30) > 10 else Normalize(0.0, hi)
    n_l = max(len(layers), 1)
    fig_w = min(14.0, 4.5 + 0.32 * n_l)
    fig_h = 2.0 + 0.28 * max(len(rows), 1)
    fig, (ax_t, ax) = plt.subplots(2, 1, figsize=(fig_w, fig_h), dpi=110, sharex=True,
                                   gridspec_kw={"height_ratios": [1.0, max(1.2, 0.28 * len(rows))]})
    tot = rep.per_layer_total()
    ax_t.plot(list(tot), list(tot.values()), marker="o", ms=3, lw=1.3, color="#333")
    ax_t.set_ylabel("whole layer", fontsize=8)
    ax_t.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_t.grid(alpha=0.3)
    ax_t.tick_params(labelsize=7)
    ax_t.set_title(_title(rep), fontsize=10)
    z = np.ma.masked_invalid(z)
    im = ax.imshow(z, aspect="auto", cmap="viridis", norm=norm, interpolation="nearest",
                   extent=(layers[0] - 0.5 if layers else -0.5, (layers[-1] if layers else 0) + 0.5,
                           len(rows) - 0.5, -0.5))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(n_l, 24)))
    ax.set_xlabel("layer")
    ax.tick_params(axis="x", labelsize=7)
    cb = fig.colorbar(im, ax=[ax_t, ax], fraction=0.03, pad=0.02)
    cb.set_label("relative change ‖A − B‖F / ‖A‖F", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(out)
    return out


def _colour(v: float, lo: float, hi: float, log: bool) -> str:
    if not math.isfinite(v):
        return "#eee"
    t = (math.log(max(v, lo)) - math.log(lo)) / (math.log(hi) - math.log(lo)) if log else v / hi if hi else 0.0
    t = min(max(t, 0.0), 1.0)
    # viridis endpoints and midpoint, interpolated
    stops = [(68, 1, 84), (33, 145, 140), (253, 231, 37)]
    a, b, u = (stops[0], stops[1], t * 2) if t < 0.5 else (stops[1], stops[2], t * 2 - 1)
    return "#%02x%02x%02x" % tuple(round(x + (y - x) * u) for x, y in zip(a, b))


def _html(rep, out: Path) -> Path:
    rows, layers, vals = _grid(rep)
    finite = [v for r in vals for v in r if math.isfinite(v) and v > 0]
    lo, hi = (min(finite), max(finite)) if finite else (1e-6, 1.0)
    log = hi / lo > 10
    head = "".join(f"<th>{i}</th>" for i in layers)
    body = []
    for r, vs in zip(rows, vals):
        cells = "".join(f'<td style="background:{_colour(v, lo, hi, log)}" title="{html.escape(r)} layer {i}: '
                        f'{v:.4g}"></td>' for i, v in zip(layers, vs))
        body.append(f"<tr><th class=r>{html.escape(r)}</th>{cells}</tr>")
    tot = rep.per_layer_total()
    total = "".join(f"<td class=n>{tot.get(i, math.nan):.3g}</td>" for i in layers)
    doc = (f"<!doctype html><meta charset=utf-8><title>regraft drift</title>"
           "<style>table{border-collapse:collapse;font:11px sans-serif}td{width:18px;height:14px}"
           "th.r{text-align:right;padding-right:6px;font-weight:normal}td.n{font-size:9px;width:auto}</style>"
           f"<h3>{html.escape(_title(rep))}</h3><p>{html.escape(rep.summary()['copy_rule'])}; colour: relative "
           f"Frobenius change per module role and layer, {lo:.3g} (dark) to {hi:.3g} (bright)"
           f"{', log scale' if log else ''}; routed experts pooled per role.</p>"
           f"<table><tr><th class=r>layer</th>{head}</tr>{''.join(body)}"
           f"<tr><th class=r>whole layer</th>{total}</tr></table>")
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(doc)
    tmp.replace(out)
    return out
