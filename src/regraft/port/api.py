"""``port_lora``: carry out a :class:`~regraft.port.plan.Plan` and write the result atomically.

The written adapter is self-consistent by construction: after relayout/pad/fold, :func:`reconcile` checks every
module's rank and scale against the output adapter_config.json (PEFT's own pattern matching) and pads or folds
whatever would otherwise load with another rank or scale.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from regraft.errors import InputError, PortBlocked, RegraftError  # noqa: F401 (PortBlocked re-exported)
from regraft.inspection.adapter import AdapterSpec, _pattern_key, read_adapter
from regraft.inspection.model import ModelSpec
from regraft.port import conversion, fixups, relayout
from regraft.port.items import Item, items_from_spec, load_tensors, tensor_key
from regraft.port.plan import Plan, make_plan

MOE_LEAVES = {"gate_proj", "up_proj", "down_proj", "w1", "w2", "w3"}


@dataclass
class CopyResult:
    plan: Plan
    out: Path | None
    config: dict | None = None
    tensors_written: int = 0
    unchanged: bool = False  # tensors copied byte for byte
    drift: dict | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"out": str(self.out) if self.out else None, "plan": self.plan.to_dict(),
                "tensors_written": self.tensors_written, "tensors_unchanged": self.unchanged,
                "drift": self.drift, "seconds": round(self.seconds, 3), "notes": self.notes}


# -- config -------------------------------------------------------------------------------------------------------

def _num(x: float):
    return int(round(x)) if abs(x - round(x)) < 1e-9 else float(x)


def _alpha_for(scale: float, rank: int, rslora: bool) -> float:
    return scale * math.sqrt(rank) if rslora else scale * rank


def _cfg_rank_alpha(cfg: dict, name: str) -> tuple[int, float]:
    r, alpha = int(cfg.get("r") or 8), float(cfg.get("lora_alpha") or 8)
    k = _pattern_key(cfg.get("rank_pattern") or {}, name)
    if k is not None:
        r = int(cfg["rank_pattern"][k])
    k = _pattern_key(cfg.get("alpha_pattern") or {}, name)
    if k is not None:
        alpha = float(cfg["alpha_pattern"][k])
    return r, alpha


def _cfg_scale(cfg: dict, name: str) -> float:
    r, alpha = _cfg_rank_alpha(cfg, name)
    return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r


def _scale_name(it: Item) -> str:
    return f"{it.module}.{it.param}" if it.kind == "fused_experts" else it.module


def build_config(spec: AdapterSpec, plan: Plan, items: list[Item], target_name: str, revision: str | None,
                 num_experts: int | None = None) -> dict:
    cfg = dict(spec.config)
    cfg["base_model_name_or_path"] = target_name
    cfg["revision"] = revision
    lora = [it for it in items if it.kind in ("lora", "lora_embedding", "fused_experts")]
    if plan.uniform_scale is not None:
        rank = plan.rank_out or Counter(it.rank for it in lora).most_common(1)[0][0] if lora else spec.r
        cfg.update(r=rank, lora_alpha=_num(plan.uniform_scale * rank), use_rslora=False, rank_pattern={},
                   alpha_pattern={})
    elif plan.rank_out:
        rs = bool(cfg.get("use_rslora"))
        cfg["alpha_pattern"] = {k: _num(_alpha_for(_cfg_scale(cfg, k), plan.rank_out, rs))
                                for k in (cfg.get("rank_pattern") or {})}
        cfg["lora_alpha"] = _num(_alpha_for(spec.scale("__default__"), plan.rank_out, rs))
        cfg["r"] = plan.rank_out
        cfg["rank_pattern"] = {k: plan.rank_out for k in (cfg.get("rank_pattern") or {})}
    tm = cfg.get("target_modules")
    fused = [it for it in items if it.kind == "fused_experts"]
    per_expert = [it for it in items if it.kind == "lora" and it.expert is not None]
    dense_mlp = {it.leaf for it in items if it.kind == "lora" and it.expert is None and it.leaf in MOE_LEAVES}
    if plan.layout_out == "moe-v5-fused" and plan.layout_in != "moe-v5-fused":
        if isinstance(tm, list):
            cfg["target_modules"] = [t for t in tm if t not in MOE_LEAVES or t in dense_mlp]
        cfg["target_parameters"] = sorted({it.param for it in fused})
    elif plan.layout_out == "moe-v4-per-expert" and plan.layout_in == "moe-v5-fused":
        tp = [t for t in (cfg.get("target_parameters") or []) if t.rsplit(".", 1)[-1] not in ("gate_up_proj", "down_proj")]
        cfg["target_parameters"] = tp or None
        leaves = sorted({it.leaf for it in per_expert})
        if isinstance(tm, list) or tm is None:
            cfg["target_modules"] = sorted(set(tm or []) | set(leaves))
        for pat in ("rank_pattern", "alpha_pattern"):
            cfg[pat] = {k: v for k, v in (cfg.get(pat) or {}).items()
                        if not re.search(r"(gate_up_proj|down_proj)\W*$", k)}
    if plan.reoriented:
        try:
            import peft

            cfg["peft_version"] = peft.__version__
        except ImportError:
            cfg["peft_version"] = "0.19.0"
    lora_names = [it.module for it in items if it.kind in ("lora", "lora_embedding")]
    tm = cfg.get("target_modules")
    if isinstance(tm, list) and lora_names:
        cfg["target_modules"] = [t for t in tm if any(n == t or n.endswith("." + t) for n in lora_names)]
    if not any(it.magnitude is not None for it in items):
        cfg["use_dora"] = False
    if not any(it.bias is not None for it in items) and cfg.get("lora_bias"):
        cfg["lora_bias"] = False
    full = [it.module for it in items if it.kind == "full_copy"]
    if cfg.get("modules_to_save"):
        cfg["modules_to_save"] = [m for m in cfg["modules_to_save"] if any(f == m or f.endswith("." + m) for f in full)] or None
    if cfg.get("trainable_token_indices") and not any(it.kind == "trainable_tokens" for it in items):
        cfg["trainable_token_indices"] = None
    if plan.output_format == "peft":
        reconcile(cfg, items, num_experts)
    for pat in ("rank_pattern", "alpha_pattern"):
        cfg[pat] = cfg.get(pat) or {}
    return cfg


def reconcile(cfg: dict, items: list[Item], num_experts: int | None = None) -> None:
    """Make items and config agree: each LoRA item's rank and scale equal what PEFT derives from ``cfg``.

    Fused experts get PEFT's own keys (``.*\\.gate_up_proj``); per-expert items are padded to one rank (PEFT's
    on-load conversion fuses them with one rank); other modules get exact-name pattern entries when needed.
    """
    rs = bool(cfg.get("use_rslora"))
    rank_pat, alpha_pat = dict(cfg.get("rank_pattern") or {}), dict(cfg.get("alpha_pattern") or {})
    # fused parameters: one entry per parameter name, as PEFT writes it
    for param in ("gate_up_proj", "down_proj"):
        group = [it for it in items if it.kind == "fused_experts" and it.param == param]
        if not group:
            continue
        name = _scale_name(group[0])
        ranks = {it.a.shape[0] for it in group}
        if not num_experts or len(ranks) != 1:
            raise InputError(f"fused {param} LoRA must have one rank in every layer (got rows {sorted(ranks)})")
        scales = {it.scale for it in group}
        key = rf".*\.{param}"
        r_item = ranks.pop() // num_experts
        cur = {**cfg, "rank_pattern": rank_pat, "alpha_pattern": alpha_pat}
        if _cfg_rank_alpha(cur, name)[0] != r_item:
            rank_pat[key] = r_item
        s = scales.pop() if len(scales) == 1 else None
        cur = {**cfg, "rank_pattern": rank_pat, "alpha_pattern": alpha_pat}
        if s is not None and not math.isclose(_cfg_scale(cur, name), s, rel_tol=1e-12):
            alpha_pat[key] = _num(_alpha_for(s, r_item, rs))
    # per-expert items: one rank for all of them (the largest), pads the rest
    experts = [it for it in items if it.kind == "lora" and it.expert is not None]
    if experts:
        r_e = max(it.rank for it in experts)
        cur = {**cfg, "rank_pattern": rank_pat, "alpha_pattern": alpha_pat}
        if any(_cfg_rank_alpha(cur, it.module)[0] != r_e for it in experts):
            if int(cfg.get("r") or 0) < r_e or not any(it.expert is None for it in items if it.kind == "lora"):
                old_r = int(cfg.get("r") or r_e)
                # raise the global rank; the other modules keep theirs through exact entries below
                for it in items:
                    if it.kind in ("lora", "lora_embedding") and it.expert is None and \
                            _pattern_key(rank_pat, it.module) is None:
                        rank_pat[re.escape(it.module)] = old_r
                        alpha_pat.setdefault(re.escape(it.module), float(cfg.get("lora_alpha") or 8))
                cfg["lora_alpha"] = _num(_alpha_for(_cfg_scale(cfg, "__default__"), r_e, rs))
                cfg["r"] = r_e
        for i, it in enumerate(items):
            if it.kind == "lora" and it.expert is not None and it.rank < r_e:
                items[i] = fixups.pad_rank(it, r_e)
    # everything else: exact-name entries where rank or scale disagree; fold when a shared key fixes the scale
    cur = {**cfg, "rank_pattern": rank_pat, "alpha_pattern": alpha_pat}
    for i, it in enumerate(items):
        if it.kind not in ("lora", "lora_embedding"):
            continue
        r_cfg, _ = _cfg_rank_alpha(cur, it.module)
        if it.expert is None and r_cfg != it.rank:
            rank_pat[re.escape(it.module)] = it.rank
            alpha_pat[re.escape(it.module)] = _num(_alpha_for(it.scale, it.rank, rs))
            cur = {**cfg, "rank_pattern": rank_pat, "alpha_pattern": alpha_pat}
        s_cfg = _cfg_scale(cur, it.module)
        if not math.isclose(s_cfg, it.scale, rel_tol=1e-12):
            items[i] = fixups.fold_scale(it, s_cfg)
    for i, it in enumerate(items):
        if it.kind == "fused_experts":
            s_cfg = _cfg_scale(cur, _scale_name(it))
            if not math.isclose(s_cfg, it.scale, rel_tol=1e-12):
                items[i] = fixups.fold_scale(it, s_cfg)
    cfg["rank_pattern"], cfg["alpha_pattern"] = rank_pat, alpha_pat


# -- the port -------------------------------------------------------------------------------------------------------

def _base_weight_loader(target: ModelSpec):
    """name -> tensor from the target's local safetensors (one tensor at a time), or None."""
    if target.path is None or not target.tensors:
        return None

    def load(name: str):
        from safetensors import safe_open

        for key in (name + ".weight", name):
            t = target.tensors.get(key)
            if t is not None:
                with safe_open(str(Path(target.path) / t.file), "pt") as f:
                    return f.get_tensor(key)
        return None

    return load


def apply_plan(spec: AdapterSpec, plan: Plan, target: ModelSpec, tensors: dict | None = None) -> list[Item]:
    """Items of the output adapter (relayout, drops with lost norms, fold, pad), in the output layout."""
    items = items_from_spec(spec, tensors)
    arch = target.arch
    num_e = arch.num_experts
    inter = arch.value("moe_intermediate_size")
    rows = {r.module: r for r in plan.rows}
    weights = _base_weight_loader(target)
    kept = []
    for it in items:
        row = rows.get(_scale_name(it))
        if row is None:
            kept.append(it)
            continue
        if "drop" not in row.actions:
            kept.append(it)
            continue
        if "module" not in row.drop:  # slot drops: DoRA magnitude, lora bias
            lost = []
            if it.magnitude is not None and "magnitude" in row.drop:
                w = weights(it.module) if weights else None
                lost.append(fixups.dropped_norm(it, "magnitude", w))
                it = it.copy(magnitude=None)
            if it.bias is not None and "bias" in row.drop:
                lost.append(fixups.dropped_norm(it, "bias"))
                it = it.copy(bias=None)
            vals = [x for x, _ in lost if x is not None]
            row.lost = max(vals) if vals else None
            row.lost_what = "; ".join(w for _, w in lost)
            kept.append(it)
            continue
        if it.kind in ("full_copy", "trainable_tokens"):
            w = weights(it.module) if weights else None
            row.lost, row.lost_what = fixups.dropped_norm(it, "full" if it.kind == "full_copy" else "trainable_tokens", w)
        elif it.a is not None and it.b is not None and it.kind != "fused_experts":
            row.lost, row.lost_what = fixups.dropped_norm(it, "lora")
        elif it.kind == "fused_experts" and it.a is not None and num_e:
            parts = relayout.split_fused(it, num_e, inter)
            row.lost = 1.0
            norm = math.sqrt(sum(fixups.lora_norm(p) ** 2 for p in parts))
            row.lost_what = f"whole module update, ||sBA||={norm:.4g}"
        else:
            row.lost, row.lost_what = 1.0, "whole module update"
    items = kept
    if plan.reoriented:
        items = [relayout.reorient_fused(it, num_e) if it.kind == "fused_experts" and _scale_name(it) in
                 plan.reoriented else it for it in items]
    if plan.layout_out == conversion.V4 and num_e:
        items = conversion.convert(items, conversion.V4, num_e, inter)
    ranks_now = [it.rank for it in items if it.a is not None and it.kind != "fused_experts"]
    if plan.rank_out and ranks_now and max(ranks_now) > plan.rank_out:
        # a fused gate_up trained as such splits into rank-2r pairs: the plan assumed r
        from regraft.catalog import runtime_data

        allowed = (runtime_data(plan.runtime) or {}).get("allowed_ranks") or []
        fit = [x for x in allowed if x >= max(ranks_now)] or ([] if allowed else [max(ranks_now)])
        if not fit:
            raise InputError(f"after splitting fused experts the rank is {max(ranks_now)}, above {plan.runtime}'s "
                             f"largest rank {allowed[-1]}")
        plan.notes.append(f"fused gate_up split into rank-{max(ranks_now)} pairs (gate and up share A): "
                          f"rank padded to {fit[0]} instead of {plan.rank_out}")
        plan.rank_out = fit[0]
    if plan.uniform_scale is not None and plan.output_format == "peft":
        items = [fixups.fold_scale(it, plan.uniform_scale) if it.b is not None else it for it in items]
    if plan.rank_out:
        items = [(fixups.pad_fused(it, num_e, plan.rank_out) if it.kind == "fused_experts"
                  else fixups.pad_rank(it, plan.rank_out)) if it.a is not None else it for it in items]
    if plan.output_format == "gguf":
        items = [fixups.fold_scale(it, plan.gguf_alpha / it.rank) if it.b is not None else it for it in items]
    if plan.layout_out == conversion.V5 and num_e:
        blockers = conversion.blockers(items, conversion.V5, num_e)
        if blockers:
            raise InputError("Cannot fuse the experts: " + blockers[0])
        items = conversion.convert(items, conversion.V5, num_e, inter)
    return items


def port_lora(adapter: str | Path | AdapterSpec, target: ModelSpec, out: str | Path | None, *,
              runtime: str = "peft", layout: str = "auto", allow_lossy: bool = False, force: bool = False,
              source: ModelSpec | None = None, revision: str | None = None, target_name: str | None = None,
              dry_run: bool = False, drift: bool = True, gguf: bool | None = None) -> CopyResult:
    t0 = time.perf_counter()
    spec = adapter if isinstance(adapter, AdapterSpec) else read_adapter(adapter)
    if gguf is None:
        gguf = out is not None and str(out).endswith(".gguf")
    plan = make_plan(spec, target, runtime, layout, allow_lossy, gguf=gguf)
    if dry_run:
        return CopyResult(plan, None, seconds=time.perf_counter() - t0)
    return execute_plan(spec, plan, target, out, force=force, source=source, revision=revision,
                        target_name=target_name, drift=drift, t0=t0)


def execute_plan(spec: AdapterSpec, plan: Plan, target: ModelSpec, out: str | Path | None, *, force: bool = False,
                 source: ModelSpec | None = None, revision: str | None = None, target_name: str | None = None,
                 drift: bool = True, t0: float | None = None) -> CopyResult:
    """Carry out ``plan`` (from :func:`make_plan`) and write ``out`` atomically."""
    t0 = time.perf_counter() if t0 is None else t0
    result = CopyResult(plan, None)
    if out is None:
        raise InputError("--out is required (or pass --dry-run to see the plan).")
    from regraft.port.write import check_output, write_peft

    out = check_output(out, [spec.path, target.path, source.path if source else None], force,
                       gguf=plan.output_format == "gguf")
    if plan.blocked:
        raise PortBlocked(plan)
    if drift:
        result.drift = drift_report(spec, target, source)
        if result.drift and result.drift.get("verdict"):
            plan.notes = [n for n in plan.notes if not n.startswith("lineage:")]
            plan.relation = {"same weights": "same", "siblings": "sibling"}.get(result.drift["verdict"], "unrelated")
            if plan.relation == "unrelated":
                plan.notes.append(f"drift: sigma {result.drift['sigma']:.3f} > 0.15 -- the copy rule says no "
                                  "(lineage unrelated); expect the adapter not to carry over")
    name = target_name or target.name
    if _pure_copy(spec, plan):  # tensors unchanged: no torch needed, the weights file is copied byte for byte
        cfg = dict(spec.config, base_model_name_or_path=name, revision=revision)
        if plan.uniform_scale is not None:  # one global scale: every module already has it
            ranks = {am.rank for am in spec.lora_modules if am.kind != "fused_experts"}
            rank = plan.rank_out or (ranks.pop() if len(ranks) == 1 else spec.r)
            cfg.update(r=rank, lora_alpha=_num(plan.uniform_scale * rank), use_rslora=False, rank_pattern={},
                       alpha_pattern={})
        result.config, result.unchanged = cfg, True
        report = {"regraft": "port lora", "source_adapter": str(spec.path), **result.to_dict()}
        write_peft(out, cfg, {}, report, copy_weights_from=spec.path / spec.weights_file)
        result.tensors_written = len(spec.tensors)
        result.out = out
        result.seconds = time.perf_counter() - t0
        return result
    tensors = load_tensors(spec)
    items = apply_plan(spec, plan, target, tensors)
    if not any(it.a is not None or it.full is not None for it in items):
        raise InputError(f"Nothing is left to write: every module of '{spec.path}' is dropped for {plan.runtime} on "
                         f"{target.name}. See --dry-run.")
    report = {"regraft": "port lora", "source_adapter": str(spec.path), **result.to_dict()}
    if plan.output_format == "gguf":
        from regraft.port.gguf_writer import write_gguf

        shapes = write_gguf(out, items, target.model_type, target.arch.num_layers, target.arch.num_experts,
                            plan.gguf_alpha, name=f"{Path(spec.path).name} for {name}")
        result.tensors_written = len(shapes)
        from regraft.port.write import write_side_report

        report["gguf_tensors"] = {k: list(v) for k, v in shapes.items()}
        side = write_side_report(out, report)
        result.notes.append(f"report: {side}")
    else:
        cfg = build_config(spec, plan, items, name, revision, target.arch.num_experts)
        out_tensors = {}
        for it in items:
            for slot in ("a", "b", "bias", "magnitude", "full"):
                t = getattr(it, slot)
                if t is not None:
                    out_tensors[tensor_key(it, slot)] = t
        unchanged = spec.weights_file.endswith(".safetensors") and set(out_tensors) == set(tensors) and all(
            out_tensors[k] is tensors[k] for k in tensors)
        result.config, result.unchanged = cfg, unchanged
        report.update(result.to_dict())
        write_peft(out, cfg, out_tensors, report,
                   copy_weights_from=(spec.path / spec.weights_file) if unchanged else None)
        result.tensors_written = len(out_tensors)
    result.out = out
    result.seconds = time.perf_counter() - t0
    return result


def _pure_copy(spec: AdapterSpec, plan: Plan) -> bool:
    return (plan.output_format == "peft" and spec.weights_file.endswith(".safetensors") and plan.rows
            and all(r.actions == ["copy"] for r in plan.rows)
            and len({am.rank for am in spec.lora_modules if am.kind != "fused_experts"}) <= 1
            and plan.layout_out == plan.layout_in and not plan.reoriented)


def drift_report(spec: AdapterSpec, target: ModelSpec, source: ModelSpec | None) -> dict | None:
    """Drift between the adapter's base (SOURCE, or base_model_name_or_path when it is a local folder) and the
    target, when both have local weights; else a note saying why not."""
    if source is None and spec.base_model:
        p = Path(spec.base_model).expanduser()
        if p.is_dir() and (p / "config.json").is_file():
            from regraft.inspection.resolve import read_model_folder

            try:
                source = read_model_folder(p)
            except RegraftError:
                source = None
    if source is None or source.path is None or target.path is None or not source.tensors or not target.tensors:
        return {"measured": False, "why": "the adapter's base and the target are not both local folders with "
                "weights (pass --from SOURCE)"}
    if Path(source.path).resolve() == Path(target.path).resolve():
        return {"measured": False, "why": "the target is the adapter's base"}
    from regraft.drift import drift_once

    rep = drift_once(source.path, target.path)
    return {"measured": True, **rep.summary()}
