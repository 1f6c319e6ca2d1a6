"""Move a LoRA adapter to another model or runtime: copy, relayout, pad, fold, drop (see ``plan.py``)."""

from regraft.port.plan import Plan, Row, make_plan

__all__ = ["Plan", "Row", "make_plan", "port_lora"]


def port_lora(*args, **kwargs):
    from regraft.port.api import port_lora as _port

    return _port(*args, **kwargs)
