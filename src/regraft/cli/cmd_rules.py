"""regraft rules list | explain CODE: the rule catalogue, generated from the rules' docstrings."""

from __future__ import annotations

from regraft.cli._common import add_format, emit


def add_parser(sub):
    p = sub.add_parser("rules", help="list the check rules or explain one")
    p.add_argument("action", choices=("list", "explain"))
    p.add_argument("code", nargs="?", help="rule code or name, for explain")
    add_format(p, ("table", "json", "markdown"))
    return p


def run(args) -> int:
    from regraft.checks.registry import get_rule, load_all
    from regraft.errors import InputError

    if args.action == "explain":
        if not args.code:
            raise InputError("`regraft rules explain` needs a rule code, e.g. RG101.")
        r = get_rule(args.code)
        emit(f"{r.code} {r.name} ({r.area}, {r.severity.value}"
             + (f", verdict: {r.verdict.value}" if r.verdict else "") + ")\n\n" + r.doc)
        return 0
    rules = sorted(load_all().values(), key=lambda r: r.code)
    if args.format == "json":
        import json

        emit(json.dumps([{"code": r.code, "name": r.name, "area": r.area, "severity": r.severity.value,
                          "verdict": r.verdict.value if r.verdict else None, "doc": r.doc} for r in rules], indent=2))
    else:
        emit(rules_markdown(rules) if args.format == "markdown" else
             "\n".join(f"{r.code}  {r.name:28} {r.area:6} {r.severity.value:7} {r.summary}" for r in rules))
    return 0


def rules_markdown(rules) -> str:
    out = ["| code | name | area | severity | verdict | what |", "|---|---|---|---|---|---|"]
    out += [f"| {r.code} | {r.name} | {r.area} | {r.severity.value} | {r.verdict.value if r.verdict else '-'} | "
            f"{r.summary} |" for r in rules]
    return "\n".join(out)
