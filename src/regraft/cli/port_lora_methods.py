"""``regraft port lora --method project|distill|auto``: the options and the dispatch (called by cli/port_lora.py)."""

from __future__ import annotations

import json
from pathlib import Path

METHODS = ("copy", "project", "distill", "auto")


def add_arguments(p) -> None:
    g = p.add_argument_group("across shapes (--method project|distill|auto; see docs/transfer.md)")
    g.add_argument("--method", choices=METHODS, default="copy",
                   help="copy (default: exact moves only), project (training-free initialiser), distill "
                        "(synthetic prompts + teacher), auto (copy if shapes match and drift is small, else "
                        "project then distill; the decision and label-free checks are printed)")
    g.add_argument("--prompts", metavar="SEEDS.jsonl",
                   help="a few example prompts, one JSON per line with a 'prompt' field: the seeds of the "
                        "synthetic prompts (distill/auto)")
    g.add_argument("--sample-frac", type=float, default=0.0, metavar="F",
                   help="fraction of the synthetic prompts written by the source+adapter itself (sampled after the "
                        "seeds' common prefix, cut at their common suffix); use it when the seeds are words (chat "
                        "turns, several commands), where the default character substitution makes gibberish "
                        "(default 0; needs the in-process teacher)")
    g.add_argument("--template", help="prompt template with {letters:5-10} {digits:1-3} {word} {choice:a|b} slots")
    g.add_argument("--calib", metavar="FILE",
                   help="generic unlabelled text for the projection maps and side-effect checks (.txt: one text "
                        "per line; .jsonl: a 'text' field); without it the projection uses a weight-only fallback")
    g.add_argument("--n-prompts", type=int, default=256, help="synthetic prompts to train on (default 256)")
    g.add_argument("--loss", choices=("logit", "seq", "delta"), default="logit",
                   help="distillation loss: logit KD (same vocabulary), sequence KD, or the delta teacher")
    g.add_argument("--steps", type=int, default=1500, help="max distillation steps (early stop on synthetic val)")
    g.add_argument("--mlp", choices=("map", "skip"), default="map", help="project MLP modules or skip them")
    g.add_argument("--keep-generic", type=float, default=1.0, metavar="W",
                   help="side-effect guard for distill/auto: add W x KL(target || student) on the --calib text to the "
                        "loss, so the student changes the target only where the teacher asks (default 1; needs "
                        "--calib; 0: off). On the zoo it cut the side effect from +5 to +0.1 nats/token")
    g.add_argument("--teacher-url", help="OpenAI-compatible endpoint serving source+adapter (vLLM/SGLang); "
                                         "default: the teacher runs in process")
    g.add_argument("--teacher-model", help="served name of source+adapter at --teacher-url")
    g.add_argument("--teacher-base-model", help="served name of the source base at --teacher-url (for excess)")


def read_calib(path) -> list[str] | None:
    if not path:
        return None
    p = Path(path)
    if p.suffix == ".jsonl":
        return [json.loads(x).get("text", "") for x in p.read_text().splitlines() if x.strip()]
    return [x for x in p.read_text().splitlines() if x.strip()]


def run(args, emit) -> int:
    from regraft.errors import InputError
    from regraft.inspection.resolve import resolve_model

    from regraft.report.port import render_method_report

    target = resolve_model(args.target)
    if target.path is None:
        raise InputError(f"--method {args.method} needs the target's weights in a local folder ({args.target})")
    if not args.source:
        raise InputError(f"--method {args.method} needs --from SOURCE (the model the adapter was trained on)")
    source = resolve_model(args.source)
    if source.path is None:
        raise InputError(f"--method {args.method} needs the source's weights in a local folder ({args.source})")
    if not args.out:
        raise InputError("--out is required")
    calib = read_calib(args.calib)
    teacher = None
    if args.teacher_url:
        from regraft.port.models import load_tokenizer
        from regraft.port.teacher import EndpointTeacher

        teacher = EndpointTeacher(args.teacher_url, args.teacher_model or "default", load_tokenizer(target.path),
                                  base_model=args.teacher_base_model)
    if args.method == "project":
        from regraft.port.methods.project.projection import project_adapter

        rep = project_adapter(args.adapter, source.path, target.path, args.out, calib_texts=calib, mlp=args.mlp,
                              force=args.force)
    elif args.method == "distill":
        from regraft.port.methods.distill.training import distill_adapter

        rep = distill_adapter(args.adapter, source.path, target.path, args.out, seeds=args.prompts,
                              template=args.template, n_prompts=args.n_prompts, loss=args.loss, calib_texts=calib,
                              steps=args.steps, teacher=teacher, force=args.force, keep_generic=args.keep_generic,
                              sample_frac=args.sample_frac)
    else:
        from regraft.port.methods.auto import auto_port

        rep = auto_port(args.adapter, source.path, target.path, args.out, seeds=args.prompts, template=args.template,
                        calib_texts=calib, n_prompts=args.n_prompts, loss=args.loss, force=args.force,
                        teacher=teacher, steps=args.steps, keep_generic=args.keep_generic,
                        sample_frac=args.sample_frac)
    if args.method != "auto":
        from regraft.port.prompts import generic_seqs
        from regraft.port.result import rewrite_report
        from regraft.port.fidelity import adapter_checks
        from regraft.port.models import load_tokenizer

        tok = load_tokenizer(target.path)
        rep.checks = {**(rep.checks or {}), **adapter_checks(target.path, args.out, getattr(rep, "items_val", None) or [],
                                                            generic_seqs(calib, tok) if tok else [])}
        rewrite_report(args.out, rep)
    emit(json.dumps(rep.to_dict(), indent=2, default=str) if args.format == "json" else render_method_report(rep))
    return 0
