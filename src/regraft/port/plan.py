"""The port plan (pure, metadata only): for each adapter module, what ``regraft port lora`` will do and why.

Actions, in the order they apply: ``copy`` (tensors unchanged), ``relayout`` (MoE per-expert <-> fused, exact),
``pad`` (zero rank padding, exact), ``fold`` (scale folded into lora_B, exact), ``drop`` (lossy: the port measures
how much), ``unsupported`` (no exact move exists; the port refuses unless ``--allow-lossy`` drops it).
Module matching is :func:`regraft.checks.lora_map.match_adapter`, the same one ``regraft check`` uses.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from regraft.catalog import runtime_data, runtime_names
from regraft.checks.lineage import normalise_base, relation
from regraft.checks.lora_map import match_adapter
from regraft.errors import InputError
from regraft.inspection.adapter import AdapterSpec, _ranges
from regraft.inspection.model import ModelSpec

EXACT = {"copy", "relayout", "pad", "fold"}
_EXP = re.compile(r"\.experts\.\d+\.")
_LAYER = re.compile(r"layers\.\d+\.")
LAYOUTS = ("auto", "keep", "v4", "v5")


@dataclass
class Row:
    module: str
    kind: str
    actions: list[str]
    reason: str
    layer: int | None = None
    expert: int | None = None
    lost: float | None = None  # drop: relative norm lost (filled in when the port runs)
    lost_what: str = ""
    drop: list[str] = field(default_factory=list)  # what a drop removes: module | magnitude | bias

    @property
    def exact(self) -> bool:
        return all(a in EXACT for a in self.actions)

    @property
    def template(self) -> str:
        return _EXP.sub(".experts.{e}.", _LAYER.sub("layers.{i}.", self.module))

    def to_dict(self) -> dict:
        d = {"module": self.module, "kind": self.kind, "actions": self.actions, "exact": self.exact,
             "reason": self.reason}
        if self.lost is not None or "drop" in self.actions:
            d["lost"] = self.lost
            d["lost_relative_to"] = self.lost_what
        return d


@dataclass
class Plan:
    adapter: str
    target: str
    runtime: str
    layout_in: str
    layout_out: str  # standard | moe-v4-per-expert | moe-v5-fused
    output_format: str  # peft | gguf
    rows: list[Row]
    rank_out: int | None = None  # uniform rank after padding (None: ranks kept)
    uniform_scale: float | None = None  # one global scale after folding (None: per-module scales kept)
    gguf_alpha: float | None = None  # GGUF: the one adapter.lora.alpha (llama.cpp scale = alpha / rank of each tensor)
    relation: str = "unknown"  # same | sibling | unrelated | unknown (names; drift refines it)
    notes: list[str] = field(default_factory=list)
    reoriented: list[str] = field(default_factory=list)  # fused modules in PEFT <= 0.18 orientation
    runtime_flags: str | None = None

    @property
    def blocked(self) -> list[Row]:
        return [r for r in self.rows if "unsupported" in r.actions]

    @property
    def lossy(self) -> list[Row]:
        return [r for r in self.rows if "drop" in r.actions]

    @property
    def exact(self) -> bool:
        return not self.blocked and not self.lossy

    def counts(self) -> dict[str, int]:
        c = Counter(a for r in self.rows for a in r.actions)
        return dict(sorted(c.items()))

    def grouped(self) -> list[dict]:
        """Rows collapsed by (module template, actions, reason), with the layers/experts they cover."""
        groups: dict[tuple, dict] = {}
        for r in self.rows:
            key = (r.template, r.kind, tuple(r.actions), r.reason)
            g = groups.setdefault(key, {"module": r.template, "kind": r.kind, "actions": r.actions, "exact": r.exact,
                                        "reason": r.reason, "layers": set(), "experts": set(), "count": 0,
                                        "lost": []})
            g["count"] += 1
            if r.layer is not None:
                g["layers"].add(r.layer)
            if r.expert is not None:
                g["experts"].add(r.expert)
            if r.lost is not None:
                g["lost"].append(r.lost)
        out = []
        for g in groups.values():
            g["layers"] = _ranges(sorted(g["layers"]))
            g["experts"] = _ranges(sorted(g["experts"])) if g["experts"] else None
            g["lost"] = max(g["lost"]) if g["lost"] else None
            out.append(g)
        return out

    def to_dict(self) -> dict:
        return {"adapter": self.adapter, "target": self.target, "runtime": self.runtime,
                "layout_in": self.layout_in, "layout_out": self.layout_out, "output_format": self.output_format,
                "rank_out": self.rank_out, "uniform_scale": self.uniform_scale, "gguf_alpha": self.gguf_alpha, "relation": self.relation,
                "exact": self.exact, "counts": self.counts(), "notes": self.notes,
                "runtime_flags": self.runtime_flags, "modules": [r.to_dict() for r in self.rows]}


def _layout_for(runtime: str, layout: str, spec: AdapterSpec, rd: dict) -> str:
    if spec.layout == "standard":
        return "standard"
    if layout in ("v4", "v5"):
        want = {"v4": "moe-v4-per-expert", "v5": "moe-v5-fused"}[layout]
        if runtime == "llama.cpp" and layout == "v5":
            raise InputError("llama.cpp needs the per-expert (v4) layout; its converter rejects fused experts. "
                             "Drop --layout v5.")
        return want
    if layout == "keep" or runtime == "peft":
        return spec.layout
    moe = rd.get("moe_expert_lora") or {}
    if runtime == "llama.cpp" or "rejected" in str(moe.get("fused_v5", "")) or "silently" in str(moe.get("fused_v5", "")):
        return "moe-v4-per-expert"
    return spec.layout


def _module_ranks(spec: AdapterSpec, layout_out: str, num_experts: int | None) -> dict[str, int]:
    """Rank of each output module (fused gate_up pairs become rank 2r; splitting keeps r when block-diagonal)."""
    ranks = {}
    for am in spec.lora_modules:
        if am.kind == "fused_experts":
            r = am.a.shape[0] // num_experts if num_experts else am.rank
            if layout_out == "moe-v4-per-expert" and am.param == "gate_up_proj":
                r = r // 2  # assumes block-diagonal (a conversion); a trained fused pair keeps 2r: fixed at run time
            ranks[am.module + "." + str(am.param)] = r
        elif am.expert is not None and layout_out == "moe-v5-fused" and am.leaf in ("gate_proj", "up_proj", "w1", "w3"):
            ranks[am.module] = 2 * (am.rank or spec.r)
        else:
            ranks[am.module] = am.rank or spec.r
    return ranks


def make_plan(spec: AdapterSpec, target: ModelSpec, runtime: str = "peft", layout: str = "auto",
              allow_lossy: bool = False, gguf: bool = False) -> Plan:
    rd = runtime_data(runtime)
    if rd is None:
        raise InputError(f"Unknown runtime '{runtime}'. Known: {', '.join(runtime_names())}.")
    if layout not in LAYOUTS:
        raise InputError(f"Unknown --layout '{layout}'. Known: {', '.join(LAYOUTS)}.")
    arch = target.arch
    if arch is None and target.partial:
        raise InputError(f"Cannot plan a port to '{target.name}': the built-in catalog has only a partial entry for "
                         f"it (unknown: {', '.join(target.unknown_fields) or 'model_type'}). Pass a local folder with "
                         "its config.json (weights are not needed for a copy).")
    if arch is None:
        raise InputError(f"Cannot plan a port to '{target.name}': its architecture "
                         f"({target.model_type or 'no model_type'}) is not one regraft knows.")
    gguf = gguf or runtime in ("llama.cpp", "ollama")
    layout_out = _layout_for("llama.cpp" if gguf else runtime, layout, spec, rd)
    plan = Plan(str(spec.path), target.name, runtime, spec.layout, layout_out, "gguf" if gguf else "peft", [],
                relation=relation(spec.base_model, target.name, str(target.path) if target.path else None))
    uniform = gguf or not rd.get("rank_alpha_patterns", True) or (spec.use_rslora and not rd.get("rslora", True))
    has_experts = spec.layout != "standard"
    if has_experts and spec.use_rslora and rd.get("rslora_moe_experts") is False:
        uniform = True
        plan.notes.append(f"{runtime} ignores rsLoRA on MoE experts (vllm#55545): scales folded into lora_B")
    matches = match_adapter(spec, arch)
    ranks = _module_ranks(spec, layout_out, arch.num_experts)
    for m in matches:  # modules that will not be written do not decide the output rank
        am = m.am
        expert = am.kind == "fused_experts" or am.expert is not None
        if m.status != "ok" or (expert and not gguf and _experts_rejected(rd, layout_out)):
            ranks.pop(am.module + ("." + str(am.param) if am.kind == "fused_experts" else ""), None)
    scales = {}
    for m in matches:
        am = m.am
        if am.kind in ("lora", "lora_embedding", "fused_experts"):
            scales[am.module + ("." + str(am.param) if am.kind == "fused_experts" else "")] = \
                spec.scale(f"{am.module}.{am.param}" if am.kind == "fused_experts" else am.module)
    # one global scale (the most common module scale keeps most B tensors unchanged)
    if uniform and scales:
        plan.uniform_scale = Counter(scales.values()).most_common(1)[0][0]
    allowed = rd.get("allowed_ranks")
    if gguf and plan.uniform_scale is not None:
        plan.gguf_alpha = plan.uniform_scale * _mode(ranks)
    max_rank = max(ranks.values(), default=0)
    if allowed and max_rank:
        fit = [x for x in allowed if x >= max_rank]
        plan.rank_out = fit[0] if fit else None
    elif uniform and ranks and len(set(ranks.values())) > 1 and not gguf:
        plan.rank_out = max_rank
    for m in matches:
        am = m.am
        key = am.module + ("." + str(am.param) if am.kind == "fused_experts" else "")
        row = Row(am.module if am.kind != "fused_experts" else f"{am.module}.{am.param}", am.kind, [], "",
                  am.layer, am.expert)
        reasons = []
        if am.kind == "fused_experts" and m.status in ("mismatch", "ok") and _old_orientation(am, arch, spec):
            row.actions.append("relayout")
            reasons.append("PEFT <= 0.18 orientation of 3-D expert LoRA (in/out swapped, peft#2521) -> >= 0.19")
            plan.reoriented.append(row.module)
            m = _ok(m)
        if m.status != "ok":
            row.actions = ["drop" if allow_lossy else "unsupported"]
            row.drop = ["module"]
            row.reason = f"{m.status}: {m.why}" if m.why else m.status
            if allow_lossy:
                row.reason += " (dropped: --allow-lossy)"
            plan.rows.append(row)
            continue
        if am.kind in ("full_copy", "trainable_tokens"):
            what = "modules_to_save" if am.kind == "full_copy" else "trainable_tokens"
            if rd.get(what) is False or gguf:
                row.actions = ["drop"] if allow_lossy else ["unsupported"]
                row.drop = ["module"]
                row.reason = f"{runtime} rejects {what} ({rd.get(what + '_error', 'unsupported')})" + \
                    ("" if allow_lossy else "; --allow-lossy drops it, measured")
            else:
                row.actions, row.reason = ["copy"], "full copy, unchanged"
            plan.rows.append(row)
            continue
        if am.kind == "lora_embedding" and gguf:
            row.actions = ["drop"] if allow_lossy else ["unsupported"]
            row.drop = ["module"]
            row.reason = "embedding LoRA is not written to GGUF by regraft" + ("" if allow_lossy else
                                                                               "; --allow-lossy drops it")
            plan.rows.append(row)
            continue
        is_expert = am.kind == "fused_experts" or am.expert is not None
        if is_expert and not gguf and _experts_rejected(rd, layout_out):
            row.actions = ["drop"] if allow_lossy else ["unsupported"]
            row.drop = ["module"]
            row.reason = (f"{runtime} does not apply routed-expert LoRA "
                          f"({(rd.get('moe_expert_lora') or {}).get(_LAYOUT_KEY[layout_out])})"
                          + ("" if allow_lossy else "; --allow-lossy drops it, measured"))
            plan.rows.append(row)
            continue
        layout_changes = has_experts and ((am.kind == "fused_experts" and layout_out == "moe-v4-per-expert")
                                          or (am.expert is not None and layout_out == "moe-v5-fused"))
        if layout_changes:
            row.actions.append("relayout")
            reasons.append("fused -> per-expert" if am.kind == "fused_experts" else "per-expert -> fused")
        if am.magnitude is not None and (rd.get("dora") is False or gguf):
            row.actions.append("drop")
            row.drop.append("magnitude")
            reasons.append(f"DoRA magnitude: {runtime} rejects DoRA")
        if am.bias is not None and (rd.get("lora_bias") is False or gguf):
            row.actions.append("drop")
            row.drop.append("bias")
            reasons.append(f"lora_B.bias: {runtime} has no LoRA bias")
        r_out = ranks.get(key)
        if plan.rank_out and r_out and r_out != plan.rank_out:
            row.actions.append("pad")
            reasons.append(f"rank {r_out} -> {plan.rank_out} (zeros)")
        elif allowed and r_out and plan.rank_out is None:
            row.actions.append("unsupported")
            reasons.append(f"rank {r_out} is above {runtime}'s largest rank {allowed[-1]} (merge instead)")
        s = scales.get(key)
        if uniform and s is not None:
            if gguf:
                eff = plan.gguf_alpha / (plan.rank_out or r_out)
                if not math.isclose(eff, s, rel_tol=1e-12):
                    row.actions.append("fold")
                    reasons.append(f"scale {s:.4g} vs llama.cpp alpha/rank {eff:.4g}: folded into lora_B")
            elif not math.isclose(s, plan.uniform_scale, rel_tol=1e-12):
                row.actions.append("fold")
                reasons.append(f"scale {s:.4g} -> global {plan.uniform_scale:.4g}: folded into lora_B")
        if "drop" in row.actions and not allow_lossy:
            row.actions = ["unsupported" if a == "drop" else a for a in row.actions]
            reasons.append("--allow-lossy drops it, measured")
        if not row.actions:
            row.actions = ["copy"]
            reasons.append("same shapes, tensors unchanged")
        row.reason = "; ".join(reasons)
        plan.rows.append(row)
    if plan.uniform_scale is not None and any("fold" in r.actions for r in plan.rows):
        plan.notes.append(f"{runtime} uses one scale for all modules: rsLoRA / rank_pattern / alpha_pattern "
                          f"are folded into lora_B (global scale {plan.uniform_scale:.6g})")
    if plan.rank_out and allowed and any("pad" in r.actions for r in plan.rows):
        plan.notes.append(f"ranks padded with zeros to r={plan.rank_out}, one of {runtime}'s allowed ranks")
    if gguf:
        plan.runtime_flags = "llama-server -m MODEL.gguf --lora OUT.gguf (GGUF written by regraft; no converter needed)"
    elif rd.get("flags"):
        plan.runtime_flags = rd["flags"].replace("{rank}", str(plan.rank_out or max_rank))
    if plan.relation == "unrelated":
        plan.notes.append(f"lineage: the adapter was trained on {normalise_base(spec.base_model)}, which is not "
                          f"{target.name} nor a sibling by name; a copy is unlikely to work (see drift)")
    return plan


_LAYOUT_KEY = {"moe-v4-per-expert": "per_expert_v4", "moe-v5-fused": "fused_v5", "standard": "-"}


def _experts_rejected(rd: dict, layout_out: str) -> bool:
    text = str((rd.get("moe_expert_lora") or {}).get(_LAYOUT_KEY.get(layout_out, "-"), "")).lower()
    return "not supported" in text or text.startswith("rejected")


def _old_orientation(am, arch, spec) -> bool:
    from regraft.port.relayout import old_orientation

    t = arch.lookup(f"{am.module}.{am.param}", "v5")
    return bool(t and t.shape and arch.num_experts and
                old_orientation(am, t.shape, arch.num_experts, spec.config.get("peft_version")))


def _ok(m):
    from dataclasses import replace

    return replace(m, status="ok", why="")


def _mode(ranks: dict) -> int:
    return Counter(ranks.values()).most_common(1)[0][0] if ranks else 0
