"""Render check reports and inspect cards. Stdout is data; the CLI sends talk to stderr."""

from __future__ import annotations

import json

from regraft.checks.finding import CheckReport, Verdict, verdict_text
from regraft.escape import markup as _m
from regraft.escape import safe as _s

_STYLE = {
    Verdict.LOADS: "bold green", Verdict.LOADS_DIFFERENT_WEIGHTS: "yellow", Verdict.NEEDS_RELAYOUT: "cyan",
    Verdict.NEEDS_PORT: "magenta", Verdict.CANNOT: "bold red", Verdict.UNKNOWN: "dim",
}
_SEV = {"error": "red", "warning": "yellow", "info": "dim"}


def render_check(report: CheckReport, fmt: str = "table", layers: bool = False, console=None) -> str | None:
    if fmt == "json":
        return json.dumps(report.to_dict(layers), indent=2, default=list)
    if fmt == "markdown":
        return _markdown(report, layers)
    _table(report, layers, console)
    return None


def _areas(report: CheckReport) -> list[str]:
    seen = []
    for t in report.targets:
        for a in t.areas:
            if a not in seen:
                seen.append(a)
    return seen


def _table(report: CheckReport, layers: bool, console) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    title = f"regraft check  {_m(report.source)}" + (f"  +  {_m(report.adapter)}" if report.adapter else "") + \
        f"  (runtime: {_m(report.runtime)})"
    table = Table(title=title, title_justify="left", show_lines=True)
    table.add_column("target", style="bold")
    areas = _areas(report)
    for a in areas:
        table.add_column({"lora": "LoRA", "config": "Config", "rag": "RAG"}.get(a, a))
    for t in report.targets:
        cells = [f"{_m(t.target)}\n[dim]{_m(_short(t.target_source))}[/dim]"]
        for a in areas:
            ar = t.areas.get(a)
            if ar is None:
                cells.append("-")
                continue
            cells.append(f"[{_STYLE[ar.verdict]}]{_m(verdict_text(ar.verdict, a))}[/]\n[dim]{_m(ar.summary)}[/dim]")
        table.add_row(*cells)
    console.print(table)
    for note in report.notes:
        console.print(f"[dim]note: {_m(note)}[/dim]")
    for t in report.targets:
        console.print(f"\n[bold]{_m(t.target)}[/bold]: [{_STYLE[t.verdict]}]{_m(t.verdict_text)}[/]")
        for f in sorted(t.findings, key=lambda f: -f.severity.rank):  # errors first, info last
            console.print(f"  [{_SEV[f.severity.value]}]{f.code} {f.severity.value:7}[/] {_m('[' + f.area + ']')} "
                          f"{_m(f.message)}",
                          highlight=False, soft_wrap=True)
            if f.hint and (f.severity.value != "info" or "verify" in f.data):  # RG407: the verify command
                console.print(f"      [dim]-> {_m(f.hint)}[/dim]", highlight=False, soft_wrap=True)
        if layers:
            for a in t.areas.values():
                if a.rows:
                    _rows_table(console, t.target, a)


def _rows_table(console, target: str, area) -> None:
    from rich.table import Table

    table = Table(title=f"{_m(target)}: {_m(area.area)} per layer and module", title_justify="left")
    for c in ("module", "layer", "role", "source", "target", "status", "why"):
        table.add_column(c)
    style = {"ok": "green", "mismatch": "magenta", "dropped": "red", "missing": "red", "unknown": "dim",
             "uncovered": "yellow", "malformed": "red"}
    for r in area.rows:
        table.add_row(_m(r.module), "" if r.layer is None else _m(r.layer), _m(r.role),
                      _m(" ".join(map(str, r.source_shape or ()))), _m(" ".join(map(str, r.target_shape or ()))),
                      f"[{style.get(r.status, '')}]{_m(r.status)}[/]", _m(r.why))
    console.print(table)


_MAX_ITEMS = 50  # a card shows this many entries of a list (a 100k-entry layers_to_transform stays one short cell)


def _head(items, n: int = _MAX_ITEMS):
    items = list(items)
    return items if len(items) <= n else items[:n] + [("...", f"{len(items) - n} more")]


def _list_cell(v: list) -> str:
    if len(v) > _MAX_ITEMS and all(isinstance(x, int) for x in v):
        return f"{len(v)} entries: " + ", ".join(map(str, v[:_MAX_ITEMS])) + ", ..."
    shown = [_clip(x) for x in v[:_MAX_ITEMS]] + ([f"... {len(v) - _MAX_ITEMS} more"] if len(v) > _MAX_ITEMS else [])
    return "\n".join(shown) or "-"


def _clip(x, n: int = 2000) -> str:
    text = x if isinstance(x, str) else str(x)
    return text if len(text) <= n else text[: n - 1] + f"… ({len(text)} characters)"


def _short(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _markdown(report: CheckReport, layers: bool) -> str:
    areas = _areas(report)
    head = {"lora": "LoRA", "config": "Config", "rag": "RAG"}
    out = [f"# regraft check: {report.source}" + (f" + `{report.adapter}`" if report.adapter else ""), "",
           f"Runtime: {report.runtime}. Source: {report.source_source}.", ""]
    out.append("| target | " + " | ".join(head.get(a, a) for a in areas) + " |")
    out.append("|---|" + "---|" * len(areas))
    for t in report.targets:
        cells = [f"{verdict_text(t.areas[a].verdict, a)} ({t.areas[a].summary})" if a in t.areas else "-" for a in areas]
        out.append(f"| {t.target} | " + " | ".join(cells) + " |")
    for note in report.notes:
        out += ["", f"_Note: {note}_"]
    for t in report.targets:
        out += ["", f"## {t.target}: {t.verdict_text}", ""]
        for f in t.findings:
            out.append(f"- **{f.code}** {f.severity.value} [{f.area}]: {f.message}" + (f" — {f.hint}" if f.hint else ""))
        if layers:
            for a in t.areas.values():
                if a.rows:
                    out += ["", "| module | layer | source | target | status | why |", "|---|---|---|---|---|---|"]
                    for r in a.rows:
                        out.append(f"| {r.module} | {'' if r.layer is None else r.layer} | {' '.join(r.source_shape or ())}"
                                   f" | {' '.join(r.target_shape or ())} | {r.status} | {r.why} |")
    return _s("\n".join(out) + "\n")


def render_card(card: dict, fmt: str = "table", console=None) -> str | None:
    """An inspect card (model or adapter)."""
    if fmt == "json":
        return json.dumps(card, indent=2, default=list)
    if fmt == "markdown":
        lines = [f"# {card.get('name') or card.get('path')}", ""]
        for k, v in card.items():
            if isinstance(v, dict):
                lines.append(f"- **{k}**:")
                lines += [f"  - {kk}: {vv}" for kk, vv in v.items()]
            else:
                lines.append(f"- **{k}**: {v}")
        return _s("\n".join(lines) + "\n")
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=_m(card.get("name") or card.get("path")), title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for k, v in card.items():
        if isinstance(v, dict):
            v = "\n".join(f"{kk}: {_clip(vv)}" for kk, vv in _head(v.items())) or "-"
        elif isinstance(v, list):
            v = _list_cell(v)
        table.add_row(_m(_clip(k)), _m(_clip(v, 20_000)))
    console.print(table)
    return None
