"""``relayout``: move an adapter between layouts, exactly, and nothing else.

* ``--layout v4|v5`` (or the other of the adapter's): MoE experts between transformers 4 per-expert keys and
  transformers 5 fused ``target_parameters``, through :mod:`regraft.port.conversion`; a module that would need
  padding, folding or a drop is refused (use ``--method copy`` for those);
* ``--layout FROM:TO`` (``auto:TO`` detects FROM): between producer layouts (MLX-LM, Unsloth, NeMo, Megatron,
  Tinker, PEFT versions; ``catalog/layouts.json``) with the exact conversions of :mod:`regraft.port.layouts`,
  through :func:`regraft.port.relayout.relayout_folder`.
"""

from __future__ import annotations

from regraft.errors import InputError
from regraft.port.methods import Method, MethodPlan, register

_OTHER = {"moe-v4-per-expert": "v5", "moe-v5-fused": "v4"}


def _producer(request, dry_run: bool) -> dict:
    from regraft.errors import InputError
    from regraft.port.relayout import relayout_folder

    if request.out is None and not dry_run:
        raise InputError("--layout FROM:TO writes a new adapter: give --out PATH (or --dry-run).")
    src, dst = request.layout.split(":", 1)
    return relayout_folder(str(request.adapter_path), str(request.out) if request.out else None, src, dst,
                           request.target, request.force, dry_run)


def plan(request) -> MethodPlan:
    from regraft.port import conversion
    from regraft.port.plan import make_plan

    if ":" in request.layout:
        rep = _producer(request, dry_run=True)
        return MethodPlan("relayout", [f"layout {rep['from_layout']} -> {rep['to_layout']} (producer "
                                       f"{rep['producer']}), exact"], layouts=rep)
    spec = request.adapter
    if spec.layout == "standard":
        raise InputError(f"--method relayout: {spec.path} has no MoE expert LoRA (layout 'standard'): there is no "
                         "layout to convert; use --method copy")
    layout = request.layout if request.layout in ("v4", "v5") else _OTHER[spec.layout]
    modules = make_plan(spec, request.target, "peft", layout, False)
    if not conversion.available(modules.layout_out):
        raise InputError(f"--method relayout: no exact conversion to {modules.layout_out} is known")
    other = [r for r in modules.rows if set(r.actions) - {"copy", "relayout"}]
    if other:
        r = other[0]
        raise InputError(f"--method relayout converts the expert layout only, but {len(other)} module(s) need more "
                         f"(e.g. {r.module}: {'+'.join(r.actions)}, {r.reason}); use --method copy")
    n = sum("relayout" in r.actions for r in modules.rows)
    return MethodPlan("relayout", [f"{modules.layout_in} -> {modules.layout_out}: {n} module(s) converted exactly, "
                                   f"{len(modules.rows) - n} copied"], modules=modules)


def run(request, plan: MethodPlan):
    from regraft.port.api import CopyResult, execute_plan
    from regraft.port.result import PortResult

    if plan.layouts is not None:
        rep = plan.layouts if request.dry_run else _producer(request, dry_run=False)
        return PortResult("relayout", plan, layouts=rep, dry_run=request.dry_run)
    if request.dry_run:
        return PortResult("relayout", plan, copy=CopyResult(plan.modules, None), dry_run=True)
    res = execute_plan(request.adapter, plan.modules, request.target, request.out, force=request.force,
                       revision=request.revision, target_name=request.target_name, drift=False)
    return PortResult("relayout", plan, copy=res)


METHOD = register(Method("relayout", "MoE expert layout only (v4 per-expert <-> v5 fused), exact",
                         reads=frozenset({"layout", "revision", "all_modules"}), plan=plan, run=run))
