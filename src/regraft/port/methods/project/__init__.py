"""``project``: training-free, rank-preserving projection of a LoRA onto a model of other shapes (projection.py).

The method-table entry: ``plan`` (steps, cost, what is missing) and ``run`` (``project_adapter`` then the
label-free checks). torch and numpy are imported only when it runs.
"""

from __future__ import annotations

from regraft.port.methods import Method, MethodPlan, register
from regraft.port.methods import across


def steps(request) -> list[str]:
    mlp = "MLP by ridge maps" if request.budgets.mlp == "map" else "MLP skipped (--mlp skip)"
    calib = f"{len(request.calib)} --calib texts" if request.calib else "no --calib: weight-only fallback (flagged)"
    return [f"match layers (CKA on paired activations of {calib}) and fit maps per module; attention head by head, "
            f"{mlp}", "calibrate each module's scale, search a global gain", "write a PEFT LoRA (an initialiser, "
            "flagged as such)", "label-free checks: loads in PEFT, side effects on generic text"]


def plan(request) -> MethodPlan:
    from regraft.port.cost import estimate

    return MethodPlan("project", steps(request), cost=estimate(request, project=True, distill=False),
                      needs=across.needs(request, "project"))


def run(request, plan: MethodPlan):
    from regraft.port.result import PortResult

    done = across.start("project", request, plan)
    if done is not None:
        return done
    from regraft.port.methods.project.projection import project_adapter

    rep = project_adapter(request.adapter.path, request.local("source"), request.local("target"), request.out,
                          calib_texts=request.calib, mlp=request.budgets.mlp, force=request.force,
                          show_progress=request.show_progress)
    across.add_checks(request, rep)
    return PortResult("project", plan, report=rep)


METHOD = register(Method("project", "training-free initialiser across shapes (flagged unverified)",
                         reads=frozenset({"source", "calib", "mlp"}), plan=plan, run=run, trains=True))
