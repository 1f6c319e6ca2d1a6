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
  regraft port lora ./lora-30b --from Qwen/Qwen3-30B-A3B --to Qwen/Qwen3-32B --method distill --dry-run
methods (--method): copy (default; the per-module actions above), relayout (MoE expert layout only), project
(training-free initialiser across shapes), distill (synthetic prompts + teacher), auto (copy if it carries over,
else project then distill). --dry-run prints any method's plan, and for project/distill/auto the estimated cost,
and writes nothing. An option the chosen method does not read is refused (exit 2, naming the method).

exit codes: 0 written (or plan printed), 1 blocked (modules with no exact move, no --allow-lossy), 2 input error
"""

from __future__ import annotations


from regraft.cli._common import add_format, add_runtime, emit

# options a method may read (argparse dest names): None/False when the user did not set them, so that a method
# can refuse what it does not read (regraft.port.methods.refuse_unread) and defaults live in PortRequest/Budgets
METHOD_OPTIONS = ("source", "runtime", "layout", "revision", "allow_lossy", "no_drift", "all_modules", "prompts",
                  "template", "calib", "sample_frac", "n_prompts", "loss", "steps", "mlp", "keep_generic",
                  "teacher_url", "teacher_model", "teacher_base_model")


def add_arguments(p) -> None:
    from regraft.port.methods import names

    p.add_argument("adapter", metavar="ADAPTER", help="PEFT adapter folder (or example:NAME for a bundled one)")
    p.add_argument("--to", dest="target", required=True, metavar="TARGET",
                   help="target model: local folder, cached repo id or catalog name")
    p.add_argument("--out", metavar="PATH", help="output adapter folder (or .gguf file)")
    p.add_argument("--method", choices=names(), default=None,
                   help="copy (default: exact moves only), relayout (MoE expert layout only), project "
                        "(training-free initialiser), distill (synthetic prompts + teacher), auto (copy if shapes "
                        "match and drift is small, else project then distill; the decision and label-free checks "
                        "are printed); --layout FROM:TO alone means relayout")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (and for project/distill/auto the estimated cost) and write nothing")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    add_format(p, ("table", "json"))
    g = p.add_argument_group("copy and relayout")
    add_runtime(g, default=None, help_default="peft")
    g.add_argument("--layout", type=_layout_arg,
                   help="MoE expert layout of the output: v4 per-expert, v5 fused (default: what the runtime "
                        "needs); or FROM:TO between producer layouts (relayout; catalog/layouts.json, e.g. "
                        "mlx-lm:peft, unsloth-3d-blockwise:peft-3d-linear, auto:peft-3d-linear)")
    g.add_argument("--from", dest="source", metavar="SOURCE",
                   help="the model the adapter was trained on: for copy, the drift report (default: the adapter's "
                        "base_model_name_or_path when it is a local folder); required by project/distill/auto")
    g.add_argument("--revision", help="revision to record in adapter_config.json")
    g.add_argument("--allow-lossy", action="store_true", help="perform lossy drops (reported with their norm)")
    g.add_argument("--no-drift", action="store_true", help="skip the drift measurement")
    g.add_argument("--all-modules", action="store_true", help="list every module (default: grouped by role)")
    g = p.add_argument_group("across shapes (--method project|distill|auto; see docs/transfer.md)")
    g.add_argument("--prompts", metavar="SEEDS.jsonl",
                   help="a few example prompts, one JSON per line with a 'prompt' field: the seeds of the "
                        "synthetic prompts (distill/auto)")
    g.add_argument("--sample-frac", type=float, metavar="F",
                   help="fraction of the synthetic prompts written by the source+adapter itself (sampled after the "
                        "seeds' common prefix, cut at their common suffix); use it when the seeds are words (chat "
                        "turns, several commands), where the default character substitution makes gibberish "
                        "(default 0; needs the in-process teacher)")
    g.add_argument("--template", help="prompt template with {letters:5-10} {digits:1-3} {word} {choice:a|b} slots")
    g.add_argument("--calib", metavar="FILE",
                   help="generic unlabelled text for the projection maps and side-effect checks (.txt: one text "
                        "per line; .jsonl: a 'text' field); without it the projection uses a weight-only fallback")
    g.add_argument("--n-prompts", type=int, metavar="N", help="synthetic prompts to train on (default 256)")
    g.add_argument("--loss", choices=("logit", "seq", "delta"),
                   help="distillation loss: logit KD (same vocabulary, default), sequence KD, or the delta teacher")
    g.add_argument("--steps", type=int, metavar="N",
                   help="max distillation steps (default 1500; early stop on synthetic val)")
    g.add_argument("--mlp", choices=("map", "skip"), help="project MLP modules (default: map) or skip them")
    g.add_argument("--keep-generic", type=float, metavar="W",
                   help="side-effect guard for distill/auto: add W x KL(target || student) on the --calib text to the "
                        "loss, so the student changes the target only where the teacher asks (default 1; needs "
                        "--calib; 0: off). On the zoo it cut the side effect from +5 to +0.1 nats/token")
    g.add_argument("--teacher-url", help="OpenAI-compatible endpoint serving source+adapter (vLLM/SGLang); "
                                         "default: the teacher runs in process")
    g.add_argument("--teacher-model", help="served name of source+adapter at --teacher-url")
    g.add_argument("--teacher-base-model", help="served name of the source base at --teacher-url (for excess)")


def given_options(args) -> frozenset[str]:
    return frozenset(d for d in METHOD_OPTIONS if getattr(args, d, None) not in (None, False))


def build_request(args):
    """The one PortRequest: the method's options checked, the models resolved and the inputs read, once."""
    from pathlib import Path

    from regraft.errors import InputError
    from regraft.examples import resolve_adapter_arg
    from regraft.inspection.adapter import read_adapter
    from regraft.inspection.resolve import resolve_model
    from regraft.port.methods import get, refuse_unread
    from regraft.port.request import Budgets, PortRequest, TeacherEndpoint, read_calib, read_seeds

    producer = ":" in (args.layout or "")  # FROM:TO between producer layouts: the relayout method
    method = get(args.method or ("relayout" if producer else "copy"))
    if producer and method.name != "relayout":
        raise InputError(f"--layout {args.layout} converts between producer layouts, which is --method relayout, "
                         f"not --method {method.name}")
    given = given_options(args)
    refuse_unread(method, given)
    if (args.teacher_model or args.teacher_base_model) and not args.teacher_url:
        raise InputError("--teacher-model/--teacher-base-model name models served at --teacher-url; give it too")
    calib, seeds = read_calib(args.calib), read_seeds(args.prompts)  # bad paths fail before any model is read
    defaults = Budgets()
    budgets = Budgets(**{k: getattr(args, k) if getattr(args, k) is not None else getattr(defaults, k)
                         for k in ("n_prompts", "steps", "loss", "keep_generic", "sample_frac", "mlp")})
    runtime = args.runtime or "peft"
    out = Path(args.out) if args.out else None
    return PortRequest(
        adapter=None if producer else read_adapter(resolve_adapter_arg(args.adapter)),
        adapter_path=resolve_adapter_arg(args.adapter), target=resolve_model(args.target),
        target_name=args.target, method=method.name, source=resolve_model(args.source) if args.source else None,
        runtime=runtime, layout=args.layout or "auto", out=out, revision=args.revision,
        allow_lossy=args.allow_lossy, force=args.force, dry_run=args.dry_run, drift=not args.no_drift,
        gguf=runtime in ("llama.cpp", "ollama") or str(out or "").endswith(".gguf"), seeds=seeds,
        seeds_path=Path(args.prompts) if args.prompts else None, template=args.template, calib=calib,
        budgets=budgets, given=given,
        teacher=TeacherEndpoint(args.teacher_url, args.teacher_model or "default", args.teacher_base_model)
        if args.teacher_url else None)


def _layout_arg(value: str) -> str:
    import argparse

    if value in ("auto", "keep", "v4", "v5") or (":" in value and all(value.split(":", 1))):
        return value
    raise argparse.ArgumentTypeError(f"invalid layout {value!r}: auto, keep, v4, v5 or FROM:TO")


def run(args) -> int:
    from regraft.errors import need
    from regraft.port.api import PortBlocked
    from regraft.port.methods import get
    from regraft.report.port import render_port

    request = build_request(args)
    method = get(request.method)
    plan = method.plan(request)
    if request.gguf and not request.dry_run and method.name == "copy":
        need("gguf", "regraft port lora --runtime llama.cpp", "gguf")
    try:
        result = _run(method, request, plan)
    except PortBlocked as e:
        emit(render_port(None, args.format, all_modules=args.all_modules, blocked=e.plan))
        raise
    emit(render_port(result, args.format, all_modules=args.all_modules))
    return 0


def _run(method, request, plan):
    if request.dry_run or method.trains or not request.drift:
        return method.run(request, plan)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from regraft.cli._common import stderr_console

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=stderr_console(), transient=True) as prog:
        prog.add_task("porting (drift measured when both weights are local)", total=None)
        return method.run(request, plan)
