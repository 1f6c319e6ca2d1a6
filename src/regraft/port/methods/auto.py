"""``auto``: copy when it carries the adapter, else project then distill; always reported with label-free checks.

* every adapter module has an exact move onto the target (same shapes; the copy method's plan, port/plan.py) and the weight drift is
  small (sigma <= 0.15, `regraft.drift`) -> ``copy`` (port/api.py);
* otherwise -> ``project`` as initialiser, then ``distill`` when prompts (seeds or a template) are given; without
  prompts the projection is written and flagged as unverified;
* MoE source -> attention projection + distillation (expert deltas have no dense equivalent).
Checks (no labels): agreement and KL with the teacher on held-out synthetic prompts, side effects (KL and NLL
change) on generic calibration text, for the written adapter and for the bare target.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from regraft.port.memory import peak_rss_mb, reset_peak_rss
from regraft.port.models import load_tokenizer
from regraft.port.prompts import generic_seqs
from regraft.port.result import MethodReport, rewrite_report


def decide(adapter, source, target) -> dict:
    """{"method": "copy"|"project+distill"|"unknown", "why": str, "same_shapes": bool, "sigma": float|None}.

    ``adapter``: a folder or an ``AdapterSpec``; ``source``/``target``: folders or ``ModelSpec`` (read once by the
    caller). Drift needs both weights local; without them a same-shape pair is ``unknown``."""
    from regraft.inspection.adapter import AdapterSpec, read_adapter
    from regraft.inspection.resolve import resolve_model
    from regraft.port.plan import make_plan

    spec = adapter if isinstance(adapter, AdapterSpec) else read_adapter(adapter)
    target = resolve_model(str(target)) if isinstance(target, (str, Path)) else target
    plan = make_plan(spec, target, "peft", "auto", False, gguf=False)
    exact = not plan.blocked
    out = {"same_shapes": exact, "sigma": None, "plan_counts": plan.counts()}
    if not exact:
        out.update(method="project+distill", why="shapes differ (no exact move for some adapter modules)")
        return out
    from regraft.drift import COPY_MAX, drift_once

    src_dir = source if isinstance(source, (str, Path)) else (source.path if source is not None and source.tensors
                                                              else None)
    if src_dir is None or target.path is None or not target.tensors:
        out.update(method="unknown", why="same shapes, but drift needs both weights in local folders (copy if "
                   f"sigma <= {COPY_MAX}, else project+distill)")
        return out
    rep = drift_once(src_dir, target.path)
    out["sigma"] = round(rep.sigma, 5)
    out["drift_verdict"] = rep.verdict
    if rep.copy_ok:
        out.update(method="copy", why=f"same shapes and drift sigma {rep.sigma:.4f} <= {COPY_MAX}")
    else:
        out.update(method="project+distill", why=f"same shapes but drift sigma {rep.sigma:.4f} > {COPY_MAX} "
                   "(unrelated weights: a copy would not carry the adapter)")
    return out


def _check_items(source_dir, adapter_dir, tok, seeds, prompts, template, n, exclude, teacher=None, stream=True,
                 sample_frac: float = 0.0):
    """Teacher-labelled held-out synthetic prompts (another seed than training) for the label-free checks; written
    like the training prompts (seeds, template, and ``sample_frac`` of them sampled from the source+adapter)."""
    from regraft.port import prompts as P
    from regraft.port.teacher import in_process

    own = teacher is None
    if own:
        teacher, _ = in_process(source_dir, adapter_dir, tok, stream)
    if prompts is None:
        sp = P.seed_prompts(seeds)
        ps = []
        if sp and sample_frac > 0 and hasattr(teacher, "generate"):
            ps = P.from_samples(teacher, sp, int(round(n * sample_frac)), seed=98, exclude=exclude)
        ps += (P.from_seeds(sp, n - len(ps), seed=99, exclude=set(exclude) | set(ps)) if sp else []) or \
            P.from_template(template, n - len(ps), seed=99, exclude=exclude)
    else:
        ps = list(prompts)[-n:]
    items = teacher.label(ps)
    if own:  # free the source before the target is loaded for the checks
        if hasattr(teacher, "free"):
            teacher.free()
        del teacher
        import gc

        gc.collect()
    return items


def auto_port(adapter_dir, source_dir, target_dir, out_dir, *, seeds=None, prompts=None, template=None,
              calib_texts=None, n_prompts: int = 256, loss: str = "logit", force: bool = False,
              show_progress: bool = True, teacher=None, check_prompts: int = 64, exclude=(),
              refresh_below: float = 0.9, stream: bool = True, decision: dict | None = None, mlp: str = "map",
              **distill_kw) -> MethodReport:
    """``stream``: project and the in-process teacher read the source/target layer by layer (see
    docs/transfer.md, memory); the label-free checks load the target whole (with the adapter, in PEFT).
    ``decision``: :func:`decide`'s answer when the caller has it already (the method table's plan)."""
    t0 = time.perf_counter()
    reset_peak_rss()
    d = decision or decide(adapter_dir, source_dir, target_dir)
    have_prompts = bool(seeds or prompts or template)
    if d["method"] == "copy":
        import shutil

        from regraft.inspection.resolve import resolve_model
        from regraft.port.api import port_lora
        from regraft.port.write import check_output, replace_into

        out_dir = check_output(out_dir, [adapter_dir, source_dir, target_dir], force)
        tmp = out_dir.with_name(f".{out_dir.name}.copy-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        res = port_lora(str(adapter_dir), resolve_model(str(target_dir)), tmp, force=True,
                        source=resolve_model(str(source_dir)), target_name=str(target_dir), drift=False)
        rep = MethodReport("auto", out=str(out_dir), details={"decision": d, "copy": {"tensors": res.tensors_written}})
        refresh = None
        if have_prompts and refresh_below > 0:
            # the copy rule is about weights; check the behaviour too, and refresh by distillation from the copy
            # when it does not follow the teacher (docs/transfer.md, auto)
            from regraft.port.fidelity import adapter_checks as _ac

            tok = load_tokenizer(target_dir)
            items = _check_items(source_dir, adapter_dir, tok, seeds, prompts, template, check_prompts, exclude,
                                 teacher, stream, distill_kw.get("sample_frac", 0.0))
            f = _ac(target_dir, tmp, items, [])
            refresh = {"copy_agreement": f["agreement"], "threshold": refresh_below}
            rep.details["copy_check"] = refresh
        if refresh and refresh["copy_agreement"] is not None and refresh["copy_agreement"] < refresh_below:
            from regraft.port.methods.distill.training import distill_adapter

            try:
                rep = distill_adapter(adapter_dir, source_dir, target_dir, out_dir, seeds=seeds, prompts=prompts,
                                      template=template, n_prompts=n_prompts, loss=loss, init=tmp,
                                      calib_texts=calib_texts, force=force, show_progress=show_progress,
                                      teacher=teacher, exclude=exclude, stream=stream, mlp=mlp, **distill_kw)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            rep.method = "auto"
            rep.details["decision"] = {**d, "method": "copy + distillation refresh",
                                       "why": d["why"] + f"; but the copy agrees with the teacher on only "
                                       f"{refresh['copy_agreement']:.3f} < {refresh_below} of synthetic tokens"}
            rep.details["copy_check"] = refresh
        else:
            replace_into(tmp, out_dir)
    elif have_prompts:
        from regraft.port.methods.distill.training import distill_adapter

        rep = distill_adapter(adapter_dir, source_dir, target_dir, out_dir, seeds=seeds, prompts=prompts,
                              template=template, n_prompts=n_prompts, loss=loss, init="project",
                              calib_texts=calib_texts, force=force, show_progress=show_progress, teacher=teacher,
                              exclude=exclude, stream=stream, mlp=mlp, **distill_kw)
        rep.method = "auto"
        rep.details["decision"] = {**d, "method": "project+distill"}
    else:
        from regraft.port.methods.project.projection import project_adapter

        rep = project_adapter(adapter_dir, source_dir, target_dir, out_dir, calib_texts=calib_texts, force=force,
                              show_progress=show_progress, stream=stream, mlp=mlp)
        rep.method = "auto"
        d = {**d, "method": "project (no prompts: distillation skipped)"}
        rep.details["decision"] = d
        rep.flags.append("UNVERIFIED: shapes/lineage call for distillation; give --prompts seeds.jsonl")
    # label-free checks, always
    from regraft.port.fidelity import adapter_checks
    from regraft.port.memory import PhaseMemory

    mem = PhaseMemory()
    tok = load_tokenizer(target_dir)
    items = getattr(rep, "items_val", None)
    with mem.phase("checks (teacher labels, streamed source)"):
        if (not items) and have_prompts and tok is not None:
            items = _check_items(source_dir, adapter_dir, tok, seeds, prompts, template, check_prompts, exclude,
                                 teacher, stream, distill_kw.get("sample_frac", 0.0))
    with mem.phase("checks (target + adapter resident)"):
        rep.checks = {**(rep.checks or {}), **adapter_checks(target_dir, out_dir, items or [], generic_seqs(
            calib_texts, tok) if tok or calib_texts else [])}
    m = rep.details.setdefault("memory", {"mode": "streamed" if stream else "whole models",
                                          "peak_rss_mb_by_phase": {}})
    m["peak_rss_mb_by_phase"].update(mem.phases)
    if not items:
        rep.notes.append("teacher agreement/KL not measured (no prompts)")
    rep.seconds = round(time.perf_counter() - t0, 3)
    rep.peak_rss_mb = max(rep.peak_rss_mb, mem.peak(), peak_rss_mb())
    m["peak_rss_mb"] = rep.peak_rss_mb
    rewrite_report(out_dir, rep)
    return rep


# -- the method-table entry ------------------------------------------------------------------------------------------

def plan(request):
    from regraft.port.cost import estimate
    from regraft.port.methods import MethodPlan
    from regraft.port.methods import across
    from regraft.port.methods.distill import steps as distill_steps

    across.refuse_unused(request, "auto")

    d = decide(request.adapter, request.source, request.target) if request.source is not None else \
        {"method": "unknown", "why": "no --from SOURCE: the drift rule cannot be applied"}
    route = d["method"]
    if route == "copy":
        steps = ["copy the adapter unchanged (same shapes, small drift)"]
        if request.has_prompts:
            steps.append("check the copy against the teacher on held-out synthetic prompts; distil from the copy "
                         "when it agrees on < 0.9 of tokens")
    elif request.has_prompts:
        steps = distill_steps(request, "from the projection (project, then the label-free gate)")
    else:
        from regraft.port.methods.project import steps as project_steps

        steps = ["no prompts: project only, distillation skipped (the result is flagged UNVERIFIED)",
                 *project_steps(request)]
    if route == "unknown":
        steps.insert(0, f"decide when it runs: {d['why']}")
    if route == "copy":
        steps.append("label-free checks on what is written")
    trains = route != "copy" or request.has_prompts
    cost = estimate(request, project=route != "copy", distill=request.has_prompts) if trains else None
    return MethodPlan("auto", steps, decision=d, cost=cost, needs=across.needs(request, "auto"))


def run(request, plan):
    from regraft.port.methods import across
    from regraft.port.result import PortResult

    done = across.start("auto", request, plan)
    if done is not None:
        return done
    rep = auto_port(request.adapter.path, request.local("source"), request.local("target"), request.out,
                    **across.training_kwargs(request),
                    decision=plan.decision if plan.decision.get("method") != "unknown" else None)
    return PortResult("auto", plan, report=rep)


def _register():
    from regraft.port.methods import Method, register
    from regraft.port.methods.across import TRAINING_READS

    return register(Method("auto", "copy when shapes match and drift is small, else project then distill",
                           reads=TRAINING_READS, plan=plan, run=run, trains=True))


METHOD = _register()
