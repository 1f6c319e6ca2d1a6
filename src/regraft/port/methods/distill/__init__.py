"""``distill``: carry an adapter to any target by distillation on synthetic prompts (training.py).

The method-table entry: ``plan`` (steps, estimated cost, what is missing) and ``run`` (``distill_adapter`` then the
label-free checks). torch is imported only when it runs.
"""

from __future__ import annotations

from regraft.port.methods import Method, MethodPlan, register
from regraft.port.methods import across


def steps(request, init: str) -> list[str]:
    b = request.budgets
    src = (f"{len(request.seeds)} seeds" if request.seeds else "") + (" + template" if request.template else "")
    teacher = f"endpoint {request.teacher.url}" if request.teacher else "in process (source streamed layer by layer)"
    out = [f"synthetic prompts from {src or 'nothing (refused: give --prompts)'}"
           + (f", {b.sample_frac:.0%} sampled from the source+adapter" if b.sample_frac else ""),
           f"teacher source+adapter, {teacher}: greedy completions and top-k log-probs; keep the top "
           f"{b.keep:.0%} by excess", f"student: LoRA on the target, init {init} ("
           + ("projection on --calib text" if request.calib else "projection by the weight-only fallback")
           + (", MLP skipped" if b.mlp == "skip" else "") + ")",
           f"train ({b.loss} loss) up to {b.steps} steps of {b.batch}, early stop on a synthetic validation split"
           + (f", side-effect guard {b.keep_generic:g} x KL on --calib" if b.keep_generic and request.calib else ""),
           "write a PEFT LoRA, then the label-free checks (teacher agreement/KL, side effects)"]
    return out


def plan(request) -> MethodPlan:
    from regraft.port.cost import estimate

    across.refuse_unused(request, "distill")

    return MethodPlan("distill", steps(request, "from the projection when it passes the label-free gate"),
                      cost=estimate(request, project=True, distill=True),
                      needs=across.needs(request, "distill", prompts=True))


def run(request, plan: MethodPlan):
    from regraft.port.result import PortResult

    done = across.start("distill", request, plan)
    if done is not None:
        return done
    from regraft.port.methods.distill.training import distill_adapter

    rep = distill_adapter(request.adapter.path, request.local("source"), request.local("target"), request.out,
                          **across.training_kwargs(request))
    across.add_checks(request, rep)
    return PortResult("distill", plan, report=rep)


METHOD = register(Method("distill", "synthetic prompts + teacher (source+adapter) -> a LoRA on any target",
                         reads=across.TRAINING_READS, plan=plan, run=run, trains=True))
