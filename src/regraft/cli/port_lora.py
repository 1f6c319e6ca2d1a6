"""Move a PEFT LoRA adapter to TARGET (a sibling checkpoint, another runtime, the other MoE layout), exactly
where possible and with the loss measured where not.

What it does, per module (shown by --dry-run):
  copy        same shapes: tensors unchanged (a sibling copy gets a new base_model_name_or_path + a drift report)
  relayout    MoE experts between transformers 4 per-expert keys and transformers 5 fused target_parameters (exact)
  pad         zero rank padding up to a rank the runtime allows (exact)
  fold        rsLoRA / rank_pattern / alpha_pattern / llama.cpp alpha/rank folded into lora_B (exact)
  drop        DoRA magnitudes, modules_to_save, LoRA bias for runtimes that reject them (lossy; needs
              --allow-lossy, and the relative norm of what is dropped is reported)
  unsupported no exact move (shapes differ, module missing): refused unless --allow-lossy drops it

--runtime llama.cpp (or --out *.gguf) writes a GGUF LoRA (per-expert layout, adapter.lora.alpha, scales folded).
The output is written atomically, never over the input, and not over an existing path without --force.

examples:
  regraft port lora ./my-lora --to Qwen/Qwen3-30B-A3B-Instruct-2507 --out ./my-lora-2507
  regraft port lora ./my-moe-lora --to ./qwen3-30b --runtime llama.cpp --out ./lora.gguf
  regraft port lora ./my-lora --to ./model --runtime vllm --out ./my-lora-vllm
  regraft port lora ./my-lora --to ./target --dry-run
  regraft port lora ./lora-30b --from ./qwen3-30b-a3b --to ./qwen3-32b --method auto --prompts seeds.jsonl \
      --calib generic.txt --out ./lora-32b       (other shapes: project + distill, docs/transfer.md)
exit codes: 0 written (or plan printed), 1 blocked (modules with no exact move, no --allow-lossy), 2 input error
"""

from __future__ import annotations

import json

from regraft.cli._common import emit


def add_arguments(p) -> None:
    p.add_argument("adapter", metavar="ADAPTER", help="PEFT adapter folder (or example:NAME for a bundled one)")
    p.add_argument("--to", dest="target", required=True, metavar="TARGET",
                   help="target model: local folder, cached repo id or catalog name")
    p.add_argument("--out", metavar="PATH", help="output adapter folder (or .gguf file)")
    p.add_argument("--runtime", default="peft", help="peft (default), vllm, sglang, llama.cpp, ollama")
    p.add_argument("--layout", default="auto", type=_layout_arg,
                   help="MoE expert layout of the output: v4 per-expert, v5 fused (default: what the runtime "
                        "needs); or FROM:TO between producer layouts (catalog/layouts.json, e.g. mlx-lm:peft, "
                        "unsloth-3d-blockwise:peft-3d-linear, auto:peft-3d-linear)")
    p.add_argument("--from", dest="source", metavar="SOURCE",
                   help="the model the adapter was trained on, for the drift report (default: the adapter's "
                        "base_model_name_or_path when it is a local folder)")
    p.add_argument("--revision", help="revision to record in adapter_config.json")
    p.add_argument("--allow-lossy", action="store_true", help="perform lossy drops (reported with their norm)")
    p.add_argument("--dry-run", action="store_true", help="print the plan per module and write nothing")
    p.add_argument("--no-drift", action="store_true", help="skip the drift measurement")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--all-modules", action="store_true", help="list every module (default: grouped by role)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    from regraft.cli.port_lora_methods import add_arguments as add_transfer_arguments

    add_transfer_arguments(p)  # --method copy|project|distill|auto, --prompts, --calib, ...


def _layout_arg(value: str) -> str:
    import argparse

    if value in ("auto", "keep", "v4", "v5") or (":" in value and all(value.split(":", 1))):
        return value
    raise argparse.ArgumentTypeError(f"invalid layout {value!r}: auto, keep, v4, v5 or FROM:TO")


def _run_relayout(args) -> int:
    """--layout FROM:TO: an exact conversion between producer layouts (regraft.port.relayout.relayout_folder)."""
    from regraft.errors import InputError
    from regraft.inspection.resolve import resolve_model
    from regraft.port.relayout import relayout_folder

    if not args.out and not args.dry_run:
        raise InputError("--layout FROM:TO writes a new adapter: give --out PATH (or --dry-run).")
    src, dst = args.layout.split(":", 1)
    rep = relayout_folder(args.adapter, args.out, src, dst, resolve_model(args.target), args.force, args.dry_run)
    if args.format == "json":
        emit(json.dumps(rep, indent=2, default=str))
    else:
        lines = [f"port lora {rep['adapter']}: layout {rep['from_layout']} -> {rep['to_layout']} "
                 f"(producer {rep['producer']}, exact)"]
        lines += [f"  note: {n}" for n in rep.get("notes", [])]
        lines.append("  dry run: nothing written" if rep.get("dry_run") else
                     f"  wrote {rep['out']}: {rep['tensors_written']} tensors")
        emit("\n".join(lines))
    return 0


def run(args) -> int:
    if ":" in getattr(args, "layout", ""):
        return _run_relayout(args)
    if getattr(args, "method", "copy") != "copy":  # across shapes: regraft.port.methods (docs/transfer.md)
        from regraft.cli.port_lora_methods import run as run_transfer

        return run_transfer(args, emit)
    from regraft.inspection.adapter import read_adapter
    from regraft.inspection.resolve import resolve_model
    from regraft.port.api import PortBlocked, port_lora

    from regraft.examples import resolve_adapter_arg

    spec = read_adapter(resolve_adapter_arg(args.adapter))
    target = resolve_model(args.target)
    source = resolve_model(args.source) if args.source else None
    gguf = args.runtime in ("llama.cpp", "ollama") or (args.out or "").endswith(".gguf")
    if not args.dry_run:
        from regraft.errors import need

        if gguf:
            need("gguf", "regraft port lora --runtime llama.cpp", "gguf")
    try:
        result = _port(port_lora, spec, target, source, args, gguf)
    except PortBlocked as e:
        emit(render_plan(e.plan.to_dict(), e.plan.grouped(), args, None) if args.format == "table"
             else json.dumps({"blocked": True, "plan": e.plan.to_dict()}, indent=2, default=str))
        raise
    d = result.to_dict()
    if args.format == "json":
        emit(json.dumps(d, indent=2, default=str))
    else:
        emit(render_plan(d["plan"], result.plan.grouped(), args, result))
    return 0


def _port(port_lora, spec, target, source, args, gguf):
    if args.dry_run or args.no_drift:
        return port_lora(spec, target, args.out, runtime=args.runtime, layout=args.layout,
                         allow_lossy=args.allow_lossy, force=args.force, source=source, revision=args.revision,
                         target_name=args.target, dry_run=args.dry_run, drift=False, gguf=gguf)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from regraft.cli._common import stderr_console

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=stderr_console(), transient=True) as prog:
        prog.add_task("porting (drift measured when both weights are local)", total=None)
        return port_lora(spec, target, args.out, runtime=args.runtime, layout=args.layout,
                         allow_lossy=args.allow_lossy, force=args.force, source=source, revision=args.revision,
                         target_name=args.target, drift=True, gguf=gguf)


def render_plan(plan: dict, grouped: list[dict], args, result) -> str:
    lines = [f"port lora {plan['adapter']} -> {plan['target']}  (runtime {plan['runtime']}, "
             f"{plan['output_format']}, layout {plan['layout_in']} -> {plan['layout_out']})"]
    rows = ([{**m, "layers": "", "experts": None, "count": 1} for m in plan["modules"]]
            if getattr(args, "all_modules", False) else grouped)
    w = max([len(r["module"]) for r in rows] + [6])
    lines.append(f"  {'module':<{w}}  {'n':>4}  {'layers':<8} {'action':<18} {'exact':<5}  reason")
    for r in rows:
        act = "+".join(r["actions"])
        lost = r.get("lost")
        reason = r["reason"] + (f" [lost {lost:.3g}]" if isinstance(lost, float) else "")
        layers = r.get("layers") or ""
        if r.get("experts"):
            layers += f" e{r['experts']}"
        lines.append(f"  {r['module']:<{w}}  {r['count']:>4}  {layers:<8} {act:<18} {'yes' if r['exact'] else 'NO':<5}"
                     f"  {reason}")
    c = plan["counts"]
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in c.items()) +
                 ("  -- exact" if plan["exact"] else "  -- NOT exact"))
    for n in plan.get("notes") or []:
        lines.append(f"  note: {n}")
    if plan.get("runtime_flags") and plan["runtime"] != "peft":
        lines.append(f"  run with: {plan['runtime_flags']}")
    if result is None:
        if plan["modules"] and any("unsupported" in m["actions"] for m in plan["modules"]):
            lines.append("  blocked: modules with no exact move; --allow-lossy drops them (measured)")
        return "\n".join(lines)
    if result.drift:
        dr = result.drift
        if dr.get("measured"):
            lines.append(f"  drift: sigma {dr['sigma']:.4f}, rel. Frobenius {dr['rel_fro']:.4f} -> {dr['verdict']}; "
                         f"{dr['copy_rule']}")
        else:
            lines.append(f"  drift: not measured ({dr.get('why')})")
    if result.out is not None:
        what = "tensors unchanged (copied byte for byte)" if result.unchanged else f"{result.tensors_written} tensors"
        lines.append(f"  wrote {result.out}: {what} in {result.seconds:.2f}s")
        from pathlib import Path

        if plan["output_format"] != "peft":
            lines.append(f"  load it: llama-server -m MODEL.gguf --lora {result.out}")
        elif Path(plan["target"]).is_dir():
            lines.append(f"  check it: regraft verify {result.out} --on {plan['target']}")
    elif args.dry_run:
        lines.append("  dry run: nothing written")
    return "\n".join(lines)
