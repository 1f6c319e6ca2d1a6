"""Renderers of ``regraft port lora`` results, one per result: ``render_copy`` (the per-module plan and what the
copy/relayout wrote), ``render_method_plan`` (a project/distill/auto dry run: steps, decision, estimated cost),
``render_method_report`` (what project/distill/auto did and measured); ``render_port`` picks one."""

from __future__ import annotations

import json

from regraft.port.result import MethodReport


def render_copy(plan: dict, grouped: list[dict], result, all_modules: bool = False, dry_run: bool = False) -> str:
    """Text report of a copy/relayout port: the per-module plan, drift, and what was written."""
    lines = [f"port lora {plan['adapter']} -> {plan['target']}  (runtime {plan['runtime']}, "
             f"{plan['output_format']}, layout {plan['layout_in']} -> {plan['layout_out']})"]
    rows = ([{**m, "layers": "", "experts": None, "count": 1} for m in plan["modules"]]
            if all_modules else grouped)
    w = max([len(r["module"]) for r in rows] + [6])
    lines.append(f"  {'module':<{w}}  {'n':>4}  {'layers':<8} {'action':<18} {'exact':<5}  reason")
    for r in rows:
        act = "+".join(r["actions"])
        lost = r.get("lost")
        reason = r["reason"] + (f" [lost {lost:.3g}]" if isinstance(lost, float) else "")
        layers = r.get("layers") or ""
        if r.get("experts"):
            layers += f" e{r['experts']}"
        lines.append(f"  {r['module']:<{w}}  {r['count']:>4}  {layers:<8} {act:<18} {'yes' if r['exact'] else 'NO':<5}"
                     f"  {reason}")
    c = plan["counts"]
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in c.items()) +
                 ("  -- exact" if plan["exact"] else "  -- NOT exact"))
    for n in plan.get("notes") or []:
        lines.append(f"  note: {n}")
    if plan.get("runtime_flags") and plan["runtime"] != "peft":
        lines.append(f"  run with: {plan['runtime_flags']}")
    if result is None:
        if plan["modules"] and any("unsupported" in m["actions"] for m in plan["modules"]):
            lines.append("  blocked: modules with no exact move; --allow-lossy drops them (measured)")
        return "\n".join(lines)
    if result.drift:
        dr = result.drift
        if dr.get("measured"):
            lines.append(f"  drift: sigma {dr['sigma']:.4f}, rel. Frobenius {dr['rel_fro']:.4f} -> {dr['verdict']}; "
                         f"{dr['copy_rule']}")
        else:
            lines.append(f"  drift: not measured ({dr.get('why')})")
    if result.out is not None:
        what = "tensors unchanged (copied byte for byte)" if result.unchanged else f"{result.tensors_written} tensors"
        lines.append(f"  wrote {result.out}: {what} in {result.seconds:.2f}s")
        from pathlib import Path

        if plan["output_format"] != "peft":
            lines.append(f"  load it: llama-server -m MODEL.gguf --lora {result.out}")
        elif Path(plan["target"]).is_dir():
            lines.append(f"  check it: regraft verify {result.out} --on {plan['target']}")
    elif dry_run:
        lines.append("  dry run: nothing written")
    return "\n".join(lines)


def render_method_report(rep: MethodReport) -> str:
    """Text report: decision, flags, the label-free checks, cost."""
    L = [f"port lora --method {rep.method} -> {rep.out}"]
    dec = rep.details.get("decision")
    if dec:
        L.append(f"  decision: {dec['method']}  ({dec['why']})")
    for f in rep.flags:
        L.append(f"  flag: {f}")
    for n in rep.notes:
        L.append(f"  note: {n}")
    lm = rep.details.get("layer_map") or {}
    if lm:
        L.append(f"  layers ({lm['how']}): target<-source {lm['target_to_source']}")
    pi = rep.details.get("projection_init")
    if pi:
        L.append(f"  projection init: layers target<-source {pi['layer_map']}, gamma {pi['gamma']}")
    if "gamma" in rep.details:
        L.append(f"  gain gamma {rep.details['gamma']}, modules written {rep.details.get('modules_written')}")
    tr = rep.details.get("training")
    if tr:
        sel = rep.details.get("selection", {})
        L.append(f"  distill: {rep.details['prompts']['pool']} synthetic prompts labelled, {sel.get('kept')} kept by "
                 f"excess; loss {tr['loss']}, {tr['steps_run']} steps (best {tr['best_step']}, "
                 f"{'early-stopped' if tr['early_stopped'] else 'budget reached'} on synthetic val "
                 f"{tr['early_stop_metric']})")
        L.append(f"  student: {rep.details['student']['init']}")
    c = rep.checks or {}
    if c.get("agreement") is not None:
        L.append(f"  check teacher agreement {c['agreement']:.3f} (target base {c['target_base_agreement']:.3f}), "
                 f"KL {c['kl']:.4f} (target base {c['target_base_kl']:.4f})  [synthetic held-out prompts]")
    if c.get("generic_kl") is not None:
        L.append(f"  check side effects on generic text: KL(target||adapted) {c['generic_kl']:.4f}, "
                 f"NLL {c['generic_nll_base']:.4f} -> {c['generic_nll_adapted']:.4f}")
    if "loads_in_peft" in c:
        L.append("  loads in PEFT on the target: yes")
    mem = rep.details.get("memory") or {}
    if mem.get("peak_rss_mb_by_phase"):
        L.append("  peak RSS by phase: " + ", ".join(f"{k} {v['peak_mb']:.0f} MB"
                                                    for k, v in mem["peak_rss_mb_by_phase"].items()))
    L.append(f"  wall {rep.seconds:.1f}s, peak RSS {rep.peak_rss_mb:.0f} MB ({mem.get('mode', 'whole models')}; "
             "see docs/transfer.md)")
    return "\n".join(L)


def render_port(result, fmt: str = "table", all_modules: bool = False, blocked=None) -> str:
    """Any ``PortResult`` (or a blocked copy plan) in ``fmt`` (table | json)."""
    if blocked is not None:
        if fmt == "json":
            return json.dumps({"blocked": True, "plan": blocked.to_dict()}, indent=2, default=str)
        return render_copy(blocked.to_dict(), blocked.grouped(), None, all_modules)
    if fmt == "json":
        return json.dumps(result.to_dict(), indent=2, default=str)
    if result.copy is not None:
        c = result.copy
        return render_copy(c.plan.to_dict(), c.plan.grouped(), c, all_modules, result.dry_run)
    if result.report is not None:
        return render_method_report(result.report)
    if result.layouts is not None:
        return render_layouts(result.layouts)
    return render_method_plan(result.plan)


def render_layouts(rep: dict) -> str:
    """A relayout between producer layouts (``regraft.port.relayout.relayout_folder``'s report)."""
    lines = [f"port lora {rep['adapter']}: layout {rep['from_layout']} -> {rep['to_layout']} "
             f"(producer {rep['producer']}, exact)"]
    lines += [f"  note: {n}" for n in rep.get("notes", [])]
    lines.append("  dry run: nothing written" if rep.get("dry_run") else
                 f"  wrote {rep['out']}: {rep['tensors_written']} tensors")
    return "\n".join(lines)


def render_method_plan(plan) -> str:
    """A dry run of a method that fits or trains: its steps, auto's decision, what is missing, the estimated cost."""
    from regraft.port.cost import human_seconds

    L = [f"port lora --method {plan.method}: plan (dry run, nothing written)"]
    if plan.decision:
        L.append(f"  decision: {plan.decision['method']}  ({plan.decision['why']})")
    for i, s in enumerate(plan.steps, 1):
        L.append(f"  {i}. {s}")
    for n in plan.needs:
        L.append(f"  needs: {n}")
    for n in plan.notes:
        L.append(f"  note: {n}")
    c = plan.cost
    if c:
        m = c["models"]
        L.append("  cost (estimated): source " + _params(m["source"]) + ", target " + _params(m["target"]))
        if c.get("unknown"):
            L.append(f"    {c['unknown']}")
        else:
            if c.get("prompts"):
                L.append(f"    prompts: {c['prompts']['labelled']} labelled by the teacher, {c['prompts']['trained']} "
                         f"trained on (~{c['prompts']['mean_prompt_tokens']} tokens each)")
                L.append(f"    steps: up to {c['steps']}; tokens: {c['tokens']['teacher_generated']:,} generated by "
                         f"the teacher, {c['tokens']['train']:,} trained on")
            L.append(f"    compute {c['flops'] / 1e12:,.1f} TFLOP, disk read {c['disk_read_gb']:,.1f} GB")
            pm, w = c["peak_memory_gb"], c["wall_s"]
            L.append(f"    peak memory: CPU run {pm['cpu']:,.1f} GB" +
                     (f", GPU run {pm['gpu']:,.1f} GB on the GPU" if pm.get("gpu") is not None else ""))
            L.append(f"    wall time: CPU ~{human_seconds(w['cpu'])}, GPU ~{human_seconds(w['gpu'])}")
            for x in c.get("warnings") or []:
                L.append(f"    warning: {x}")
        L.append("    assumptions: " + "; ".join(c["assumptions"]))
    L.append("  dry run: nothing written")
    return "\n".join(L)


def _params(m: dict) -> str:
    n = m.get("params")
    return f"{m.get('name')} ({n / 1e9:.2f}B params)" if n and n >= 1e8 else \
        f"{m.get('name')} ({n:,} params)" if n else f"{m.get('name')} (size unknown)"
