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
