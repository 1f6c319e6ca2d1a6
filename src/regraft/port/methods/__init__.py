"""Port a LoRA across shapes: ``project`` (training-free, rank-preserving, an initialiser), ``distill`` (synthetic
prompts + a teacher = source+adapter) and ``auto`` (copy when shapes match and drift is small, else project then
distill; label-free checks always printed). See docs/transfer.md and research/lora_transfer.md 6.3-6.5."""

from __future__ import annotations


def project_adapter(*a, **k):
    from regraft.port.methods.project.projection import project_adapter as f

    return f(*a, **k)


def distill_adapter(*a, **k):
    from regraft.port.methods.distill.training import distill_adapter as f

    return f(*a, **k)


def auto_port(*a, **k):
    from regraft.port.methods.auto import auto_port as f

    return f(*a, **k)
