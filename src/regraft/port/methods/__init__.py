"""The port method table: every way ``regraft port lora`` can move an adapter, one entry per method.

Built in: ``copy`` (exact moves: copy, relayout, pad, fold; drops only with --allow-lossy), ``relayout`` (MoE expert
layout conversion only), ``project`` (training-free initialiser across shapes), ``distill`` (synthetic prompts + a
teacher) and ``auto`` (copy when shapes match and drift is small, else project then distill). In the spirit of
PEFT's one folder per tuner and mergekit's merge-method registry: a method is data (:class:`Method`) plus two
functions, and the CLI knows nothing about any particular one.

How a method registers (the ``transport`` package under this folder does exactly this)::

    # src/regraft/port/methods/mymethod/__init__.py  -- keep torch out of module level
    from regraft.port.methods import Method, MethodPlan, register

    def plan(request) -> MethodPlan:        # pure: reads request, writes nothing, no training
        return MethodPlan("mymethod", steps=["..."], cost=..., needs=[...])

    def run(request, plan) -> PortResult:   # does the work; writes request.out atomically (regraft.port.write)
        ...

    register(Method("mymethod", "one line for --help", reads=frozenset({"source", "calib"}), plan=plan, run=run,
                    trains=False))

and its module name goes into ``BUILTIN`` below (or it is a sub-package of ``regraft.port.methods.transport``,
which is imported when present). ``reads`` lists the CLI options (argparse ``dest`` names) the method honours
beyond ``COMMON``; any other option the user sets is refused with an error naming the method
(:func:`refuse_unread`). ``plan`` must work for ``--dry-run`` with catalog names (no local weights): it lists what
is missing in ``needs`` and ``run`` refuses while ``needs`` is not empty.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from regraft.errors import InputError

COMMON = frozenset({"method", "out", "force", "dry_run", "format"})
BUILTIN = ("regraft.port.methods.copy", "regraft.port.methods.relayout", "regraft.port.methods.project",
           "regraft.port.methods.distill", "regraft.port.methods.auto")
OPTIONAL = ("regraft.port.methods.transport",)  # registered when present (closed-form transport variants)
_OPTION = {"source": "--from", "target": "--to", "prompts": "--prompts"}


def option_name(dest: str) -> str:
    """The command-line spelling of an option ``dest`` (source -> --from)."""
    return _OPTION.get(dest, "--" + dest.replace("_", "-"))


@dataclass
class MethodPlan:
    """What a method will do (the --dry-run output), before it does it."""

    method: str
    steps: list[str] = field(default_factory=list)
    modules: object | None = None  # regraft.port.plan.Plan: the per-module plan, when the method has one
    decision: dict | None = None  # auto: which route and why
    cost: dict | None = None  # regraft.port.cost: estimated prompts/steps/tokens/memory/time (training methods)
    needs: list[str] = field(default_factory=list)  # what is missing before it can run (empty: it can)
    notes: list[str] = field(default_factory=list)
    layouts: dict | None = None  # relayout between producer layouts: {from_layout, to_layout, producer, ...}

    def to_dict(self) -> dict:
        return {"method": self.method, "steps": self.steps, "decision": self.decision, "cost": self.cost,
                "needs": self.needs, "notes": self.notes, "layouts": self.layouts,
                "modules": self.modules.to_dict() if self.modules is not None else None}

    def require(self) -> None:
        if self.needs:
            raise InputError(f"--method {self.method} cannot run: {self.needs[0]}"
                             + (f" (and {len(self.needs) - 1} more; see --dry-run)" if len(self.needs) > 1 else ""))


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    reads: frozenset[str]  # CLI options honoured beyond COMMON
    plan: Callable  # (PortRequest) -> MethodPlan
    run: Callable  # (PortRequest, MethodPlan) -> PortResult
    trains: bool = False  # runs models (the dry run estimates the cost)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS and METHODS[method.name] is not method:
        raise ValueError(f"port method '{method.name}' is registered twice")
    METHODS[method.name] = method
    return method


def _load() -> dict[str, Method]:
    for mod in BUILTIN:
        importlib.import_module(mod)
    for mod in OPTIONAL:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    return METHODS


def names() -> list[str]:
    return list(_load())


def get(name: str) -> Method:
    table = _load()
    if name not in table:
        raise InputError(f"Unknown --method '{name}'. Known: {', '.join(table)}.")
    return table[name]


def refuse_unread(method: Method, given) -> None:
    """A set option the method does not read is an error naming the method, never silently ignored."""
    extra = sorted(set(given) - COMMON - method.reads)
    if extra:
        opts = ", ".join(sorted(option_name(d) for d in extra))
        takes = ", ".join(sorted(option_name(d) for d in method.reads)) or "none"
        raise InputError(f"{opts} {'does' if len(extra) == 1 else 'do'} not apply to --method {method.name} "
                         f"(it reads: {takes}); drop {'it' if len(extra) == 1 else 'them'} or pick another --method")


def project_adapter(*a, **k):
    """Library entry points (kept for callers of regraft.port.methods.*_adapter)."""
    from regraft.port.methods.project.projection import project_adapter as f

    return f(*a, **k)


def distill_adapter(*a, **k):
    from regraft.port.methods.distill.training import distill_adapter as f

    return f(*a, **k)


def auto_port(*a, **k):
    from regraft.port.methods.auto import auto_port as f

    return f(*a, **k)
