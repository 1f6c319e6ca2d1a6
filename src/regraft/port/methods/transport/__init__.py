"""Closed-form transport of a LoRA's task update across shapes (issue 17): training-free, calibrated on a few
activations (and gradients) of task prompts and generic text, one decoder layer in memory at a time.

Variants (`transport_adapter(variant=...)`):
* ``ariadne``: no parameter is moved; per target layer a closed-form ridge fit of the target's ``down_proj``
  (``o_proj`` for MoE targets) update reproduces the source's residual displacement (source+adapter minus
  source), read through a Procrustes alignment of the two residual streams at the same relative depth, fitted
  sequentially on the target's already-corrected states; rank r by reduced-rank regression.
* ``bico``: the same fit, the alignment fitted on activations AND gradients (of the next-token loss, one
  streamed forward-backward pass per model), stacked.
* ``theseus``: the adapter's own factors transported by orthogonal Procrustes maps fitted on task activations
  (the `project` machinery, calibrated on task prompts + the source+adapter's completions instead of generic
  text only).
Pure cores in `cores`, the streamed passes in `passes`, the method in `method`.
"""

from __future__ import annotations

VARIANTS = ("ariadne", "bico", "theseus")


def transport_adapter(*a, **k):
    from regraft.port.methods.transport.method import transport_adapter as f

    return f(*a, **k)


# --------------------------------------------------------------------------- method-table entries (issue 15's table)
def _entry(variant: str):
    from regraft.port.methods import Method, MethodPlan, across, register

    def plan(request) -> MethodPlan:
        steps = [(f"calibration: --prompts seeds + synthetic prompts with the source+adapter's completions, "
                  f"{len(request.calib or [])} --calib texts"),
                 {"ariadne": "fit each target layer's down_proj (o_proj in MoE layers) update to the source's aligned "
                             "residual displacement (last layer: its logit change), one layer at a time",
                  "bico": "the same fit, alignment on activations and gradients (one streamed forward-backward)",
                  "theseus": "move the adapter's factors by Procrustes maps fitted on task activations"}[variant],
                 "search one global strength, write a PEFT LoRA (closed-form, flagged)",
                 "label-free checks: loads in PEFT, side effects on generic text"]
        needs = across.needs(request, f"transport-{variant}")
        if not request.seeds and not request.calib:
            needs.append("--prompts seeds.jsonl and/or --calib generic.txt (the calibration)")
        return MethodPlan(f"transport-{variant}", steps, needs=needs)

    def run(request, plan: MethodPlan):
        from regraft.port.result import PortResult

        done = across.start(f"transport-{variant}", request, plan)
        if done is not None:
            return done
        rep = transport_adapter(request.adapter.path, request.local("source"), request.local("target"), request.out,
                                variant=variant, seeds=request.seeds, calib_texts=request.calib, force=request.force,
                                show_progress=request.show_progress)
        across.add_checks(request, rep)
        return PortResult(f"transport-{variant}", plan, report=rep)

    return register(Method(f"transport-{variant}", f"closed-form transport ({variant}; issue 17), no training",
                           reads=frozenset({"source", "calib", "prompts"}), plan=plan, run=run, trains=True))


METHODS = {v: _entry(v) for v in VARIANTS}
