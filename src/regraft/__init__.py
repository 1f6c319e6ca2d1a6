"""regraft: what carries over when you move LoRA adapters, serving configs and RAG setups between LLMs.

The public API is small and light: nothing here imports torch or numpy.

    >>> import regraft
    >>> src = regraft.resolve_model("Qwen/Qwen3-30B-A3B-Base")
    >>> report = regraft.check(src, [regraft.resolve_model("Qwen/Qwen3-32B")])
"""

__version__ = "0.1.0"

_LAZY = {
    "resolve_model": "regraft.inspection.resolve:resolve_model",
    "read_adapter": "regraft.inspection.adapter:read_adapter",
    "ModelSpec": "regraft.inspection.model:ModelSpec",
    "AdapterSpec": "regraft.inspection.adapter:AdapterSpec",
    "check": "regraft.checks.engine:check",
    "Finding": "regraft.checks.finding:Finding",
    "Report": "regraft.checks.finding:Report",
    "RegraftError": "regraft.errors:RegraftError",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'regraft' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name].split(":")
    return getattr(importlib.import_module(module), attr)
