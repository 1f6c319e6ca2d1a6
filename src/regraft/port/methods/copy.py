"""``copy``: exact moves only (copy, relayout, pad, fold per module; drops only with --allow-lossy, measured).

The per-module plan is :func:`regraft.port.plan.make_plan`; the run is :func:`regraft.port.api.execute_plan`.
"""

from __future__ import annotations

from regraft.port.methods import Method, MethodPlan, register


def plan(request) -> MethodPlan:
    from regraft.port.plan import make_plan

    modules = make_plan(request.adapter, request.target, request.runtime, request.layout, request.allow_lossy,
                        gguf=request.gguf)
    steps = [f"per module: {', '.join(f'{k} {v}' for k, v in modules.counts().items())}",
             f"write a {modules.output_format.upper()} adapter for {modules.runtime}"]
    if request.drift and not request.dry_run:
        steps.append("measure drift between --from and the target when both are local")
    return MethodPlan("copy", steps, modules=modules)


def run(request, plan: MethodPlan):
    from regraft.port.api import execute_plan
    from regraft.port.result import PortResult

    if request.dry_run:
        from regraft.port.api import CopyResult

        return PortResult("copy", plan, copy=CopyResult(plan.modules, None), dry_run=True)
    res = execute_plan(request.adapter, plan.modules, request.target, request.out, force=request.force,
                       source=request.source, revision=request.revision, target_name=request.target_name,
                       drift=request.drift)
    return PortResult("copy", plan, copy=res)


METHOD = register(Method("copy", "exact moves only: copy, relayout, pad, fold (drops need --allow-lossy)",
                         reads=frozenset({"source", "runtime", "layout", "allow_lossy", "revision", "no_drift",
                                          "all_modules"}), plan=plan, run=run))
