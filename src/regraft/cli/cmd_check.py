"""regraft check SOURCE TARGET [TARGET...]: per target, does the LoRA (config, RAG) carry over, and why."""

from __future__ import annotations

import argparse

from regraft.cli._common import add_format, add_runtime, emit


def add_parser(sub):
    p = sub.add_parser(
        "check", help="will my LoRA / config / RAG for SOURCE work on TARGET(s)?",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Per target: a verdict (loads / loads on different weights / needs relayout / needs a port / "
                    "cannot / unknown) with the reasons, from metadata only.",
        epilog="examples:\n"
               "  regraft check Qwen/Qwen3-30B-A3B-Base Qwen/Qwen3-32B Qwen/Qwen3-235B-A22B-Instruct-2507 --adapter ./my-lora\n"
               "  regraft check ./models/base ./models/other --adapter ./my-lora --format json\n"
               "  regraft check Qwen/Qwen3-30B-A3B Qwen/Qwen3-30B-A3B-Base --adapter example:qwen3-30b-a3b-attn --runtime vllm\n"
               "exit codes: 0 nothing at or above --fail-on, 1 findings at or above --fail-on, 2 usage or input error")
    p.add_argument("source", metavar="SOURCE", help="model the artefacts were built for")
    p.add_argument("targets", metavar="TARGET", nargs="+", help="models to check against")
    p.add_argument("--adapter", metavar="DIR", help="PEFT adapter folder (or example:NAME for a bundled one)")
    p.add_argument("--config", metavar="FILE", help="serving/generation config to check (vLLM/SGLang/llama.cpp/Ollama)")
    p.add_argument("--rag", metavar="FILE", help="RAG setup file to check")
    add_runtime(p, default=None, help_default="the --config's runtime, else peft")
    p.add_argument("--drift", choices=("auto", "always", "never"), default="auto",
                   help="measure lineage on the weights when SOURCE and TARGET are local folders: auto (when both "
                        "together are under 4 GiB), always, never")
    p.add_argument("--layers", action="store_true", help="add the per-layer, per-module table")
    p.add_argument("--select", help="only these rule codes or prefixes, comma-separated (e.g. RG1,RG201)")
    p.add_argument("--ignore", help="skip these rule codes or prefixes, comma-separated")
    p.add_argument("--fail-on", choices=("info", "warning", "error", "never"), default="error",
                   help="exit 1 when a finding is at or above this severity (default: error)")
    p.add_argument("--allow-pickle", action="store_true", help="read adapter_model.bin with torch weights_only")
    add_format(p)
    return p


def run(args) -> int:
    from regraft.checks.engine import check
    from regraft.examples import resolve_adapter_arg
    from regraft.inspection.adapter import read_adapter
    from regraft.inspection.resolve import resolve_model
    from regraft.report import render_check

    source = resolve_model(args.source)
    targets = [resolve_model(t) for t in args.targets]
    adapter = read_adapter(resolve_adapter_arg(args.adapter), allow_pickle=args.allow_pickle) if args.adapter else None
    split = (lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None)
    options = {"config": args.config, "rag": args.rag, "runtime": args.runtime, "drift": args.drift}
    report = check(source, targets, adapter, args.runtime, split(args.select), split(args.ignore), options)
    emit(render_check(report, args.format, args.layers))
    return 1 if report.fails(args.fail_on) else 0
