"""What the methods that port across shapes (project, distill, auto) share: what they need before they can run,
the teacher endpoint, the dry-run result, and the label-free checks added to what they wrote."""

from __future__ import annotations

TRAINING_READS = frozenset({"source", "calib", "mlp", "prompts", "template", "n_prompts", "loss", "steps",
                            "keep_generic", "sample_frac", "teacher_url", "teacher_model", "teacher_base_model"})


DISTILL_ONLY = frozenset({"n_prompts", "steps", "loss", "keep_generic", "sample_frac", "teacher_url", "teacher_model",
                          "teacher_base_model"})


def refuse_unused(request, method: str) -> None:
    """Options a training method reads only in some cases: refused when that case does not hold (never ignored)."""
    from regraft.errors import InputError
    from regraft.port.methods import option_name

    if not request.has_prompts:
        unused = sorted(option_name(d) for d in DISTILL_ONLY & request.given)
        if unused:
            raise InputError(f"{', '.join(unused)}: --method {method} distils only with prompts; give --prompts "
                             "seeds.jsonl (or --template), or drop them")
    if "keep_generic" in request.given and request.budgets.keep_generic > 0 and not request.calib:
        raise InputError(f"--keep-generic: the side-effect guard of --method {method} needs generic text; give "
                         "--calib FILE, or drop it")
    if "sample_frac" in request.given and request.teacher is not None and request.budgets.sample_frac > 0:
        raise InputError(f"--sample-frac: --method {method} samples prompts with the in-process teacher only; drop "
                         "--teacher-url or --sample-frac")


def needs(request, method: str, prompts: bool = False) -> list[str]:
    """What is missing before ``method`` can run (the dry run lists it; ``MethodPlan.require`` refuses on it)."""
    out = []
    if request.source is None:
        out.append("--from SOURCE (the model the adapter was trained on)")
    elif request.local("source") is None:
        out.append(f"the source's weights in a local folder (--from {request.source.name} has none here)")
    if request.local("target") is None:
        out.append(f"the target's weights in a local folder (--to {request.target_name} has none here)")
    if prompts and not request.has_prompts:
        out.append("prompts: --prompts seeds.jsonl (a few example prompts) or --template")
    if request.out is None and not request.dry_run:
        out.append("--out PATH (or --dry-run to see the plan)")
    return out


def preflight(request) -> None:
    """Before hours of work: the output can be written (not over an input, not over an existing path without
    --force, its folder exists) -- the same check the writer repeats at the end."""
    from regraft.port.write import check_output

    check_output(request.out, [request.adapter.path, request.local("source"), request.local("target")],
                 request.force)


def teacher(request):
    """The endpoint teacher of --teacher-url, or None (the teacher runs in process)."""
    if request.teacher is None:
        return None
    from regraft.port.models import load_tokenizer
    from regraft.port.teacher import EndpointTeacher

    t = request.teacher
    return EndpointTeacher(t.url, t.model, load_tokenizer(request.local("target")), base_model=t.base_model)


def dry(name: str, plan):
    from regraft.port.result import PortResult

    return PortResult(name, plan, dry_run=True)


def start(name: str, request, plan):
    """The dry-run result, or None after checking that the method can run and write its output."""
    if request.dry_run:
        return dry(name, plan)
    plan.require()
    preflight(request)
    return None


def training_kwargs(request) -> dict:
    """The keyword arguments ``distill_adapter`` and ``auto_port`` share, from the request."""
    b = request.budgets
    return dict(seeds=request.seeds, template=request.template, calib_texts=request.calib, n_prompts=b.n_prompts,
                loss=b.loss, steps=b.steps, teacher=teacher(request), force=request.force,
                keep_generic=b.keep_generic, sample_frac=b.sample_frac, mlp=b.mlp, show_progress=request.show_progress)


def add_checks(request, rep) -> None:
    """The label-free checks on what ``project``/``distill`` wrote, into the report and its regraft_port.json."""
    from regraft.port.fidelity import adapter_checks
    from regraft.port.models import load_tokenizer
    from regraft.port.prompts import generic_seqs
    from regraft.port.result import rewrite_report

    target = request.local("target")
    tok = load_tokenizer(target)
    rep.checks = {**(rep.checks or {}), **adapter_checks(target, request.out, getattr(rep, "items_val", None) or [],
                                                         generic_seqs(request.calib, tok) if tok else [])}
    rewrite_report(request.out, rep)
