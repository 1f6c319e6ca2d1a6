"""The rule registry: one decorator, stable codes, the docstring is the documentation.

A rule is a pure function ``rule(ctx) -> Iterable[Finding]``; ``ctx`` is the area's context object
(:class:`regraft.checks.context.LoraContext` for LoRA rules). Rules never do I/O and never print.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from regraft.checks.finding import Finding, Severity, Verdict


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    area: str
    severity: Severity
    verdict: Verdict | None
    func: Callable

    @property
    def doc(self) -> str:
        return (self.func.__doc__ or "").strip()

    @property
    def summary(self) -> str:
        return self.doc.splitlines()[0] if self.doc else ""

    def finding(self, message: str, *, hint: str = "", layer=None, module=None, severity=None, verdict="default",
                data=None) -> Finding:
        return Finding(self.code, self.name, severity or self.severity, message, hint,
                       self.verdict if verdict == "default" else verdict, layer, module, self.area, data or {})


RULES: dict[str, Rule] = {}


def rule(code: str, name: str, *, area: str, severity: Severity, verdict: Verdict | None = None):
    """Register a rule. Codes are unique and never reused; the docstring has a summary, then why/Bad/Good."""

    def wrap(func: Callable[..., Iterable[Finding]]):
        if code in RULES:
            raise ValueError(f"rule code {code} is registered twice ({RULES[code].func.__module__} and {func.__module__})")
        RULES[code] = Rule(code, name, area, severity, verdict, func)
        func.rule = RULES[code]
        return func

    return wrap


def get_rule(code_or_name: str) -> Rule:
    load_all()
    for r in RULES.values():
        if code_or_name.upper() == r.code or code_or_name == r.name:
            return r
    import difflib

    from regraft.errors import InputError

    near = difflib.get_close_matches(code_or_name, [r.code for r in RULES.values()] + [r.name for r in RULES.values()], 3)
    raise InputError(f"Unknown rule '{code_or_name}'." + (f" Did you mean: {', '.join(near)}?" if near else "")
                     + " See `regraft rules list`.")


def load_all() -> dict[str, Rule]:
    import regraft.checks.rules  # noqa: F401  (imports every rule module explicitly)

    return RULES


def rules_for(area: str) -> list[Rule]:
    return [r for r in load_all().values() if r.area == area]
