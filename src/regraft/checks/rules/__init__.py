"""Every rule module, imported explicitly (a test checks none is forgotten)."""

from regraft.checks.rules import lora_lineage, lora_runtime, lora_scale, lora_shapes, model_consistency  # noqa: F401,E501
from regraft.checks.rules import config_context, config_keys, config_moe, config_sampling, config_serving  # noqa: F401,E501
from regraft.checks.rules import config_thinking  # noqa: F401
from regraft.checks.rules import lora_namespace  # noqa: F401
from regraft.checks.rules import lora_layout  # noqa: F401
from regraft.checks.rules import rag_prompt, rag_tokens  # noqa: F401
