"""check(): run every rule area for a source and its targets, and fold findings into verdicts."""

from __future__ import annotations

from typing import Callable, Iterable

from regraft.catalog import runtime_data, runtime_names
from regraft.checks.context import LoraContext
from regraft.checks.finding import AreaResult, Finding, ModuleRow, CheckReport, TargetResult, Verdict, worst
from regraft.checks.lora_map import Match
from regraft.checks.registry import rules_for
from regraft.errors import InputError
from regraft.inspection.adapter import AdapterSpec, _ranges
from regraft.inspection.model import ModelSpec

# Extra areas (config, rag) register a runner: (source, target, options) -> AreaResult.
AREA_RUNNERS: dict[str, Callable[[ModelSpec | None, ModelSpec, dict], AreaResult]] = {}


def area_runner(area: str):
    """The runner of an extra area; its module ``regraft.checks.area_<area>`` registers it on import."""
    if area not in AREA_RUNNERS:
        import importlib

        try:
            importlib.import_module(f"regraft.checks.area_{area}")
        except ModuleNotFoundError as e:
            if e.name != f"regraft.checks.area_{area}":
                raise
        if area not in AREA_RUNNERS:
            raise InputError(f"--{area} checks are not available in this version of regraft.")
    return AREA_RUNNERS[area]


def _selected(f: Finding, select: Iterable[str] | None, ignore: Iterable[str] | None) -> bool:
    if select and not any(f.code.startswith(s.upper()) for s in select):
        return False
    return not (ignore and any(f.code.startswith(s.upper()) for s in ignore))


def fold(findings: list[Finding]) -> Verdict:
    return worst(f.verdict for f in findings if f.verdict is not None)


def run_rules(area: str, ctx, select=None, ignore=None) -> tuple[list[Finding], Verdict]:
    """Every registered rule of ``area`` on ``ctx``, filtered by --select/--ignore code prefixes, and the worst
    verdict among the findings."""
    findings = [f for r in rules_for(area) for f in r.func(ctx) if _selected(f, select, ignore)]
    return findings, fold(findings)


def lora_area(ctx: LoraContext, select=None, ignore=None) -> AreaResult:
    findings, verdict = run_rules("lora", ctx, select, ignore)
    if not ctx.matches and ctx.target.arch is not None and ctx.effective_adapter is None:
        verdict = Verdict.UNKNOWN
    return AreaResult("lora", verdict, findings, rows(ctx), summary(ctx, verdict))


def rows(ctx: LoraContext) -> list[ModuleRow]:
    out = []
    for m in ctx.matches:
        name = f"{m.am.module}.{m.am.param}" if m.am.kind == "fused_experts" else m.am.module
        out.append(ModuleRow(name, m.am.layer, m.target.role if m.target else "-",
                             _shape_text(m, "got"), _shape_text(m, "expected"), _status(m), m.why, len(m.am.tensors)))
    for tmpl, layers in ctx.uncovered.items():
        out.append(ModuleRow(tmpl, None, "-", None, None, "uncovered", f"no adapter tensors in target layers "
                             f"{_ranges(layers)}"))
    return out


def _status(m: Match) -> str:
    return {"experts-on-dense": "dropped", "dense-on-moe": "dropped", "extra-layer": "dropped",
            "expert-count": "mismatch"}.get(m.status, m.status)


def _shape_text(m: Match, which: str) -> tuple | None:
    d = getattr(m, which)
    if not d:
        return None
    return tuple(f"{k}{list(v)}" for k, v in d.items() if k in ("a", "b", "full"))


def summary(ctx: LoraContext, verdict: Verdict) -> str:
    if ctx.target.arch is None:
        return "target architecture unknown"
    if not ctx.matches:
        return "no adapter modules"
    ok = sum(m.status == "ok" for m in ctx.matches)
    tensors = sum(len(m.am.tensors) for m in ctx.matches)
    fit = sum(len(m.am.tensors) for m in ctx.matches if m.status == "ok")
    what = "modules of a LoRA on the usual targets" if ctx.architecture_only else "adapter modules"
    return f"{ok}/{len(ctx.matches)} {what} fit ({fit}/{tensors} tensors)"


# what a serving config's runtime is called among the catalog's runtimes (configs.model.ServingConfig.runtime)
_CONFIG_RUNTIME = {"vllm": "vllm", "sglang": "sglang", "llama.cpp": "llama.cpp", "ollama": "ollama",
                   "transformers": "peft"}


def effective_runtime(runtime: str | None, config: str | None) -> tuple[str, str | None]:
    """The runtime the LoRA is checked for, and a note when --config decided it.

    No --runtime: the --config's runtime (a vLLM command line is checked as vLLM serves it), else PEFT. A --runtime
    of another family than the --config is refused: the flags would be read for one server and the adapter judged
    for another."""
    if config is None:
        return runtime or "peft", None
    from regraft.configs.readers import read_config

    declared = read_config(config).runtime
    mapped = _CONFIG_RUNTIME.get(declared or "")
    if runtime is None:
        if mapped is None:
            return "peft", None
        return mapped, f"runtime {mapped}: the runtime of --config {config}"
    if mapped is not None and runtime.split("-")[0] != mapped.split("-")[0]:
        raise InputError(f"--runtime {runtime} does not match --config {config}, which is a {declared} config: "
                         f"drop --runtime (it follows the config) or give a {mapped} runtime")
    return runtime, None


def check(source: ModelSpec | None, targets: list[ModelSpec], adapter: AdapterSpec | None = None,
          runtime: str | None = None, select=None, ignore=None, options: dict | None = None) -> CheckReport:
    """Check an adapter (or, without one, a LoRA on SOURCE's usual target modules) against each target.

    ``runtime`` None: the runtime of ``options["config"]`` when one is given, else PEFT (:func:`effective_runtime`)."""
    import gc

    paused = gc.isenabled()  # the rules make many short-lived objects and no cycles worth collecting meanwhile
    gc.disable()
    try:
        return _check(source, targets, adapter, runtime, select, ignore, options)
    finally:
        if paused:
            gc.enable()


def _check(source: ModelSpec | None, targets: list[ModelSpec], adapter: AdapterSpec | None, runtime: str, select,
           ignore, options: dict | None) -> CheckReport:
    runtime, why = effective_runtime(runtime, (options or {}).get("config"))
    rd = runtime_data(runtime)
    if rd is None:
        raise InputError(f"Unknown runtime '{runtime}'. Known: {', '.join(runtime_names())}.")
    options = {**(options or {}), "select": select, "ignore": ignore, "adapter": adapter, "runtime": runtime}
    report = CheckReport(source.name if source else "-", source.source if source else "-",
                    str(adapter.path) if adapter else None, runtime)
    report.bytes_read = (source.bytes_read if source else 0) + (adapter.bytes_read if adapter else 0)
    if why:
        report.notes.append(why)
    if adapter is None:
        report.notes.append("no --adapter: answering 'would a LoRA (r=16) on q,k,v,o,gate,up,down of SOURCE fit "
                            "TARGET?' module by module")
    for target in targets:
        report.bytes_read += target.bytes_read
        ctx = LoraContext(source, target, adapter, runtime, rd, options.get("drift") or "auto", options.get("config"))
        result = TargetResult(target.name, target.source)
        result.areas["lora"] = lora_area(ctx, select, ignore)
        for area in ("config", "rag"):
            if options.get(area) is not None:
                result.areas[area] = area_runner(area)(source, target, options)
        report.targets.append(result)
    return report
