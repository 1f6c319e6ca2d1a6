"""Numbers where shapes are blind: decide a fused expert LoRA's layout from its weights and the local base.

Only runs with a local base model (safetensors); torch is imported here, lazily, and nowhere on the plain
`check` path. Two questions the files cannot answer when 2*moe_intermediate == hidden:

- **orientation** (PEFT >= 0.19 nn.Linear vs PEFT 0.18 positional, or an A/B-swapped export such as
  NeMo-Automodel before #3626): per expert the two readings give delta and delta^T;
- **lora_B order** (PEFT interleaved, expert fastest, vs Unsloth block-wise before unsloth-zoo#1269): the two
  readings pair each expert's A with different rank columns of B.

The statistic: expert coupling. The gradient reaching expert e's gate_up output is its own down_proj applied
backwards (delta_up = (W_down_e^T g) * act(gate), delta_gate likewise), so a trained gate_up update of expert e has
its output-side energy along the top right-singular directions of W_down_e: with M_e = W_down_e^T W_down_e,

    q(e, f) = tr(U_e^T M_f U_e) / (||U_e||^2 tr(M_f) / I)      (U_e: the gate and up halves of delta_e, [I, .])
    contrast = mean_e q(e, e) / mean_{e != f} q(e, f)          (1.0 when the update ignores its own expert)

The reading that pairs the right tensors shows contrast > 1; a wrong reading mixes experts or axes and falls back to
~1. For the lora_B order a second, base-free statistic: the rank columns of one expert all receive that expert's
output gradients, so under the right grouping columns of the same expert are more alike than columns of different
experts (grouping contrast = mean |cos| within an expert's r columns / mean |cos| across experts). The order is
decided by the grouping contrast (lead >= ``GROUP_MARGIN``) unless the coupling contrast decides the other way. A reading is decided only when its contrast beats every other by ``MARGIN`` (calibrated by
bench/layout_evidence.py); otherwise the answer is ``unknown``. An adapter that was never trained (random B)
or experts that saw no tokens give no contrast: unknown, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MARGIN = 0.15  # coupling-contrast lead needed to decide: the smallest with no wrong call in the first bench run
GROUP_MARGIN = 0.45  # grouping-contrast lead needed to decide the lora_B order (bench/results/layout_evidence.md)
MAX_LAYERS = 4
READ_BUDGET = 1 << 30  # bytes of base down_proj weights read at most (one layer is always read)


@dataclass
class EvidenceFinding:
    question: str  # orientation | b-order
    text: str
    decided: bool
    answer: str | None = None
    decided_bad: bool = False  # the numbers contradict what the files say
    hint: str = ""
    data: dict = field(default_factory=dict)


@dataclass
class Evidence:
    findings: list[EvidenceFinding] = field(default_factory=list)
    layout: str | None = None  # the layout the numbers decide, when the files left it open


# -- pure statistics (torch tensors in, floats out) ----------------------------------------------------------------
def coupling_contrast(deltas, down_weights) -> float:
    """contrast (see module doc) for per-expert gate_up updates ``deltas`` [E x (2I, X)] and base ``down_weights``
    [E x (H, I)]."""
    import torch

    E = len(deltas)
    I = down_weights[0].shape[1]
    M = [w.float().T @ w.float() for w in down_weights]  # E x [I, I]
    trM = torch.stack([m.trace() for m in M]) / I
    q = torch.zeros(E, E)
    for e, d in enumerate(deltas):
        d = d.float()
        halves = (d[:I], d[I:2 * I])
        energy = sum(float((h * h).sum()) for h in halves)
        if energy == 0:
            return 1.0
        for f in range(E):
            q[e, f] = sum(float((h * (M[f] @ h)).sum()) for h in halves) / (energy * float(trM[f]))
    diag = q.diagonal().mean()
    off = (q.sum() - q.diagonal().sum()) / (E * (E - 1))
    return float(diag / off)


def expert_deltas(a, b, E: int, b_order: str = "interleaved", transpose: bool = False) -> list:
    """Per-expert B_e A_e of a fused pair under a reading (B interleaved or block-wise; optionally transposed)."""
    r = a.shape[0] // E
    a3 = a.float().reshape(E, r, -1)
    if b_order == "interleaved":
        bs = [b.float().reshape(b.shape[0], r, E)[:, :, e] for e in range(E)]
    else:
        bs = [b.float().reshape(b.shape[0], E, r)[:, e, :] for e in range(E)]
    out = [bs[e] @ a3[e] for e in range(E)]
    return [d.T for d in out] if transpose else out


def grouping_contrast(b, E: int, order: str) -> float:
    """Mean |cos| between lora_B columns of the same expert over that across experts, under a B reading."""
    import torch

    out_f, n = b.shape
    r = n // E
    if r < 2:
        return 1.0
    cols = b.float()
    g = cols.reshape(out_f, r, E).permute(2, 0, 1) if order == "interleaved" else \
        cols.reshape(out_f, E, r).permute(1, 0, 2)  # E, out, r
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    flat = g.permute(0, 2, 1).reshape(E * r, out_f)
    c = (flat @ flat.T).abs()
    same = torch.block_diag(*[torch.ones(r, r) for _ in range(E)]).bool()
    eye = torch.eye(E * r).bool()
    between = float(c[~same].mean())
    return float(c[same & ~eye].mean()) / between if between > 0 else 1.0


def judge(scores: dict[str, float], margin: float = MARGIN) -> tuple[str | None, float]:
    """The candidate whose contrast leads the others by ``margin`` (and exceeds 1 + margin), or None."""
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    best, lead = ranked[0], ranked[0][1] - (ranked[1][1] if len(ranked) > 1 else 1.0)
    if lead >= margin and best[1] >= 1.0 + margin:
        return best[0], lead
    return None, lead


def layer_scores(pairs: list[tuple], downs: list[list], E: int, other_bs: list | None = None) -> dict:
    """Mean contrast over layers for every reading: {"orientation": {...}, "b-order": {...}, "b-grouping": {...}}.

    ``pairs``: per layer (A, B) of gate_up; ``downs``: per layer the E base down_proj weights [H, I];
    ``other_bs``: more fused lora_B tensors (down_proj) for the grouping statistic."""
    import math

    orient, order = {"linear": [], "positional": []}, {"interleaved": [], "block": []}
    grouping = {o: [grouping_contrast(b, E, o) for _, b in pairs] + [grouping_contrast(b, E, o)
                                                                     for b in other_bs or []]
                for o in ("interleaved", "block")}
    for (a, b), dw in zip(pairs, downs):
        square = a.shape[1] == b.shape[0]
        orient["linear"].append(coupling_contrast(expert_deltas(a, b, E), dw))
        if square:
            orient["positional"].append(coupling_contrast(expert_deltas(a, b, E, transpose=True), dw))
        order["interleaved"].append(orient["linear"][-1])
        order["block"].append(coupling_contrast(expert_deltas(a, b, E, "block"), dw))
    gm = (lambda xs: math.exp(sum(math.log(max(x, 1e-9)) for x in xs) / len(xs)) if xs else None)
    return {"orientation": {k: gm(v) for k, v in orient.items() if v},
            "b-order": {k: gm(v) for k, v in order.items() if v},
            "b-grouping": {k: gm(v) for k, v in grouping.items() if v}}


def decide(scores: dict, question: str) -> tuple[str | None, float]:
    """The decision both the check and the bench use: orientation by the coupling contrast; the lora_B order by
    the grouping contrast, vetoed when the coupling contrast decides the other order."""
    if question == "orientation":
        return judge(scores["orientation"])
    answer, lead = judge(scores["b-grouping"], GROUP_MARGIN)
    veto, _ = judge(scores["b-order"])
    if answer is not None and veto is not None and veto != answer:
        return None, lead
    return answer, lead


# -- the check path ------------------------------------------------------------------------------------------------
_GU = re.compile(r"^(?:base_model\.model\.)?(?P<pre>.*layers\.(?P<l>\d+)\..*\.experts)\.base_layer\.lora_A\.weight$")


def _local_base(ctx):
    for m in (ctx.source, ctx.target):
        if m is not None and m.path is not None and m.tensors:
            return m
    return None


def evidence_for_context(ctx) -> Evidence | None:
    """Evidence for the fused expert LoRA of ``ctx.adapter`` on the local base (source first), or None when there
    is no local base or nothing the shapes leave open."""
    p, spec = ctx.producer, ctx.adapter
    if not p or not p.fused or 1 not in p.fused:
        return None
    base = _local_base(ctx)
    if base is None:
        return None
    gu = p.fused[1]
    square = gu["a"][1] == gu["b"][0]
    questions = []  # only what the files left open: numbers that do not separate never undo a decided layout
    if square and p.orientation is None:
        questions.append("orientation")
    if "unsloth-3d-blockwise" in p.candidates:
        questions.append("b-order")
    if not questions:
        return None
    return measure(spec, base, questions, p)


def measure(spec, base, questions: list[str], producer_report) -> Evidence:
    from safetensors import safe_open

    from regraft.inspection.files import inside

    E = int(base.arch.values.get("num_experts") or 0) if base.arch else 0
    names = sorted((int(m.group("l")), m.group("pre"), k) for k in spec.tensors if (m := _GU.match(k)))
    if E < 2 or not names:
        return Evidence([EvidenceFinding(q, f"{q}: not measured (experts {E}, fused gate_up layers {len(names)})",
                                         False) for q in questions])
    per_layer = _down_bytes(base, names[0][1], E)
    n_layers = max(1, min(MAX_LAYERS, READ_BUDGET // per_layer)) if per_layer else MAX_LAYERS
    step = max(1, len(names) // n_layers)
    chosen = names[::step][:n_layers]
    pairs, downs, missing, other_bs = [], [], [], []
    with safe_open(str(inside(spec.path, spec.weights_file)), "pt") as f:
        keys = set(f.keys())
        for _layer, pre, ka in chosen:
            w = _down_weights(base, pre, E)
            if w is None:
                missing.append(pre)
                continue
            pairs.append((f.get_tensor(ka), f.get_tensor(ka.replace(".lora_A.", ".lora_B."))))
            downs.append(w)
            kb_down = ka.replace(".base_layer.lora_A.", ".lora_B.")
            if kb_down in keys:
                other_bs.append(f.get_tensor(kb_down))
    if not pairs:
        return Evidence([EvidenceFinding(q, f"{q}: unknown: the base has no down_proj weights for "
                                            f"{missing[0]}.experts (names differ?)", False,
                                         hint="give the base checkpoint the adapter was trained on") for q in questions])
    scores = layer_scores(pairs, downs, E, other_bs)
    return _findings(scores, questions, producer_report, len(pairs))


def _down_bytes(base, pre: str, E: int) -> int:
    t = base.tensors
    per = [f"{pre}.{e}.down_proj.weight" for e in range(E)]
    if all(n in t for n in per):
        return sum(t[n].nbytes for n in per)
    return t[f"{pre}.down_proj"].nbytes if f"{pre}.down_proj" in t else 0


def _down_weights(base, pre: str, E: int):
    from safetensors import safe_open

    from regraft.inspection.files import inside

    tensors = base.tensors
    fused_name = f"{pre}.down_proj"
    per = [f"{pre}.{e}.down_proj.weight" for e in range(E)]
    if all(n in tensors for n in per):
        out = []
        for n in per:
            with safe_open(str(inside(base.path, tensors[n].file)), "pt") as f:
                out.append(f.get_tensor(n))
        return out
    if fused_name in tensors:
        with safe_open(str(inside(base.path, tensors[fused_name].file)), "pt") as f:
            w = f.get_tensor(fused_name)  # [E, H, I] (transformers 5)
        return [w[e] for e in range(E)]
    return None


_FILES_SAY = {"peft-3d-linear": ("linear", "interleaved"), "peft-3d-positional": ("positional", None),
              "nemo-automodel-3d-swapped": ("positional", None), "unsloth-3d-blockwise": (None, "block")}


def _findings(scores: dict, questions: list[str], p, n_layers: int) -> Evidence:
    ev = Evidence()
    said = _FILES_SAY.get(p.layout, (None, None))
    answers = {}
    for q in questions:
        s = scores[q]
        if len(s) < 2:
            continue
        answer, lead = decide(scores, q)
        answers[q] = answer
        margin = MARGIN if q == "orientation" else GROUP_MARGIN
        shown = s if q == "orientation" else {f"grouping {k}": v for k, v in scores["b-grouping"].items()} | {
            f"coupling {k}": v for k, v in s.items()}
        nums = ", ".join(f"{k} {v:.3f}" for k, v in shown.items())
        files = said[0] if q == "orientation" else said[1]
        data = {"question": q, "contrast": shown, "lead": round(lead, 4), "margin": margin, "layers": n_layers}
        if answer is None:
            ev.findings.append(EvidenceFinding(
                q, f"{q}: unknown: contrast {nums} over {n_layers} layers (lead {lead:.3f}, needed {margin}): "
                   "the numbers do not separate the readings", False, data=data,
                hint="an untrained or barely trained adapter gives no contrast; ask the producer which version "
                     "wrote it"))
            continue
        bad = files is not None and files != answer
        what = {"linear": "PEFT >= 0.19 orientation", "positional": "PEFT 0.18 orientation (or A/B swapped on "
                "export)", "interleaved": "lora_B interleaved (PEFT)", "block": "lora_B block-wise (Unsloth "
                "before unsloth-zoo#1269)"}[answer]
        text = f"{q}: the numbers support {what}: contrast {nums} over {n_layers} layers"
        if bad:
            text += f"; the files say {files}"
        ev.findings.append(EvidenceFinding(q, text, True, answer, bad, data=data, hint=(
            f"`regraft port lora --layout {_layout_of(answers, p)}:peft-3d-linear` converts it exactly" if bad
            else "")))
    if p.layout == "unknown":
        if p.orientation and not answers.get("orientation"):
            answers["orientation"] = p.orientation  # the files decided it (chained widths, base widths, version)
        open_q = [q for q in questions if not (q == "orientation" and p.orientation)]
        decided = _layout_of(answers, p)
        if decided and all(answers.get(q) for q in open_q):
            ev.layout = decided
    return ev


def _layout_of(answers: dict, p) -> str | None:
    if answers.get("orientation") == "positional":
        return "nemo-automodel-3d-swapped" if p.producer == "nemo-automodel" else "peft-3d-positional"
    if answers.get("b-order") == "block":
        return "unsloth-3d-blockwise"
    if answers.get("orientation") in ("linear", None) and answers.get("b-order") in ("interleaved", None):
        return "peft-3d-linear" if answers else None
    return None
