"""Every rule module, imported explicitly (a test checks none is forgotten)."""

from regraft.checks.rules import lora_lineage, lora_runtime, lora_scale, lora_shapes  # noqa: F401
