"""regraft verify ADAPTER --on MODEL [--reference SOURCE]: prove every adapter tensor is applied and matters."""

from __future__ import annotations

import argparse
import json

from regraft.cli._common import add_format, emit


def add_parser(sub):
    p = sub.add_parser(
        "verify", help="load MODEL + ADAPTER (transformers + PEFT) and prove every adapter tensor is applied",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Loads the model with transformers and the adapter with PEFT, then checks, per module (per "
                    "expert for MoE): the update PEFT built equals s*B@A from the files (else 'dropped' or "
                    "'mismatch'), the module runs on probe inputs, and switching the adapter off changes its output. "
                    "With --reference, compares SOURCE+adapter and MODEL+adapter on the probes (top-1 agreement, KL).",
        epilog="examples:\n"
               "  regraft verify ./my-lora --on ./Qwen3-4B-Instruct-2507 --reference ./Qwen3-4B-Base\n"
               "  regraft verify ./my-moe-lora --on ./qwen3-30b --merge --format json\n"
               "exit codes: 0 coverage complete, 1 coverage incomplete (dropped / mismatched / no effect), 2 input error")
    p.add_argument("adapter", metavar="ADAPTER", help="PEFT adapter folder")
    p.add_argument("--on", dest="model", required=True, metavar="MODEL", help="local model folder to load it on")
    p.add_argument("--reference", metavar="SOURCE", help="the model the adapter was trained on (local folder)")
    p.add_argument("--probes", type=int, default=4, help="probe sequences (default 4)")
    p.add_argument("--seq-len", type=int, default=32, help="tokens per probe (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="load the model in this dtype (default float32; bf16 halves memory, tolerance 2e-2)")
    p.add_argument("--merge", action="store_true", help="also merge_and_unload and compare logits with PEFT's")
    p.add_argument("--all-modules", action="store_true", help="list every module, not only problems")
    add_format(p, ("table", "json"))  # "text" is accepted as another name for table
    return p


def run(args) -> int:
    from regraft.cli._common import stderr_console
    from regraft.verify import verify

    console = stderr_console()
    with console.status("verifying") as status:
        rep = verify(args.adapter, args.model, args.reference, args.probes, args.seq_len, args.seed, args.merge,
                     progress=lambda msg: status.update(msg), dtype=args.dtype)
    if args.format == "json":
        emit(json.dumps(rep.to_dict(), indent=2, default=str))
    else:
        emit(render(rep, args.all_modules))
    return 0 if rep.ok else 1


def render(rep, all_modules: bool = False) -> str:
    lines = [f"verify {rep.adapter} on {rep.model}: {'OK' if rep.ok else 'INCOMPLETE'}", f"  {rep.summary()}"]
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in rep.counts.items()) +
                 f"; PEFT layers adapted {rep.layers_adapted}, called on probes {rep.layers_called}")
    show = rep.modules if all_modules else [m for m in rep.modules if m.problem or m.status not in ("applied", "full-copy ok")]
    if show:
        w = max(len(m.module) for m in show)
        lines.append(f"  {'module':<{w}}  {'status':<12} {'rel.err':>9} {'||sBA||':>9} {'effect':>9}  note")
        for m in show[:200]:
            f = (lambda v: f"{v:.2e}" if isinstance(v, float) else "-")
            status = "no effect" if m.problem and m.status == "applied" else m.status
            lines.append(f"  {m.module:<{w}}  {status:<12} {f(m.rel_err):>9} {f(m.norm):>9} {f(m.effect):>9}  {m.note}")
        if len(show) > 200:
            lines.append(f"  ... {len(show) - 200} more (use --format json)")
    for msg in rep.peft_messages[:5]:
        lines.append(f"  PEFT said: {msg[:200]}")
    if rep.experts_routed:
        lines.append("  experts routed on probes: " + ", ".join(f"{k} {v}" for k, v in list(rep.experts_routed.items())[:4]))
    if rep.merged_max_abs is not None:
        lines.append(f"  merge_and_unload vs PEFT forward: max |logit diff| {rep.merged_max_abs:.2e}")
    if rep.reference:
        r = rep.reference
        lines.append(f"  reference {r['source']}: top-1 agreement source+adapter vs target+adapter "
                     f"{r['top1_agreement']:.3f}, KL {r['kl']:.4g} (bases alone: {r['base_top1_agreement']:.3f}, "
                     f"KL {r['base_kl']:.4g}; adapter's own effect on source: KL {r['adapter_effect_on_source_kl']:.4g})")
    return "\n".join(lines)
