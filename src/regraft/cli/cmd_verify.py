"""regraft verify ADAPTER --on MODEL [--reference SOURCE]: prove every adapter tensor is applied and matters.

regraft verify --endpoint URL --model NAME [--base-model NAME | --base-endpoint URL] [--adapter DIR --base-dir DIR]
[--reference URL] [--probes N|FILE]: prove a *served* adapter changes the output, and how close to the reference."""

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
               "  regraft verify --endpoint http://127.0.0.1:8000/v1 --model my-lora --base-model Qwen/Qwen3-4B\n"
               "  regraft verify --endpoint http://127.0.0.1:8081/v1 --model qwen3 --base-endpoint http://127.0.0.1:8082/v1 "
               "--adapter ./my-lora --base-dir ./Qwen3-4B\n"
               "exit codes: 0 coverage complete / served adapter applied (and close to the reference), 1 coverage "
               "incomplete / served adapter has no effect or is applied wrong, 2 input error (unreachable URL, unknown "
               "model name, timeout), 3 unknown (no log-probs, or a difference too small to decide)")
    p.add_argument("adapter", metavar="ADAPTER", nargs="?", help="PEFT adapter folder (local mode)")
    p.add_argument("--on", dest="model_dir", metavar="MODEL", help="local model folder to load it on (local mode)")
    p.add_argument("--reference", metavar="SOURCE|URL",
                   help="local mode: the model the adapter was trained on (folder); --endpoint mode: an endpoint "
                        "serving the reference source+adapter under --reference-model (default: --model)")
    p.add_argument("--probes", default=None, metavar="N|FILE",
                   help="probe count (default 4 local, 6 endpoint), or with --endpoint a seeds.jsonl / text file of "
                        "prompts (the adapter's training seeds)")
    p.add_argument("--seq-len", type=int, default=32, help="tokens per probe (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="load the model in this dtype (default float32; bf16 halves memory, tolerance 2e-2)")
    p.add_argument("--merge", action="store_true", help="also merge_and_unload and compare logits with PEFT's")
    p.add_argument("--all-modules", action="store_true", help="list every module, not only problems")
    add_format(p, ("table", "json"))  # "text" is accepted as another name for table
    e = p.add_argument_group("served adapter (--endpoint)")
    e.add_argument("--endpoint", metavar="URL", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    e.add_argument("--model", metavar="NAME", help="the adapter's served name (vLLM: NAME of --lora-modules NAME=PATH)")
    e.add_argument("--base-model", metavar="NAME", help="the base's served name (default: the adapter's parent in "
                   "/v1/models, or the model of --base-endpoint)")
    e.add_argument("--base-endpoint", metavar="URL", help="a second server serving the base without the adapter")
    e.add_argument("--adapter", dest="adapter_dir", metavar="DIR", help="the adapter folder (with --base-dir: local "
                   "transformers + PEFT reference; also what `check` knows about it for a no-effect verdict)")
    e.add_argument("--base-dir", metavar="DIR", help="local copy of the served base (tokenizer + weights)")
    e.add_argument("--reference-model", metavar="NAME", help="the reference's served name (with --reference URL)")
    e.add_argument("--runtime", choices=("vllm", "sglang", "llama.cpp", "ollama", "unknown"),
                   help="the serving runtime, for the likely causes (default: from /v1/models owned_by)")
    e.add_argument("--max-tokens", type=int, default=8, help="greedy tokens per probe (default 8)")
    e.add_argument("--top-k", type=int, default=5, help="log-probs per position (default 5, at most 20)")
    e.add_argument("--tol", type=float, default=None, help="noise floor in nats (default 0.02; the base's own "
                   "repeat noise x3 when larger)")
    e.add_argument("--api", choices=("auto", "completions", "chat"), default="auto",
                   help="auto: /v1/completions with prompts in the chat template, /v1/chat/completions otherwise")
    e.add_argument("--timeout", type=float, default=20.0, help="seconds per request (default 20; 1 retry)")
    e.add_argument("--api-key", help="bearer token (or OPENAI_API_KEY)")
    return p


_LOCAL_ONLY = {"model_dir": "--on", "merge": "--merge", "all_modules": "--all-modules", "seq_len": "--seq-len",
               "dtype": "--dtype"}
_ENDPOINT_ONLY = {"model": "--model", "base_model": "--base-model", "base_endpoint": "--base-endpoint",
                  "adapter_dir": "--adapter", "base_dir": "--base-dir", "reference_model": "--reference-model",
                  "runtime": "--runtime", "tol": "--tol", "api_key": "--api-key"}
_DEFAULTS = {"seq_len": 32, "dtype": "float32", "merge": False, "all_modules": False}


def _given(args, dest):
    v = getattr(args, dest)
    return v not in (None, False) and v != _DEFAULTS.get(dest)


def run(args) -> int:
    from regraft.cli._common import stderr_console
    from regraft.errors import InputError

    if args.endpoint:
        return run_endpoint(args)
    bad = [flag for dest, flag in _ENDPOINT_ONLY.items() if _given(args, dest)]
    if bad:
        raise InputError(f"{', '.join(bad)} only apply with --endpoint URL (verifying a served adapter).")
    if not args.adapter or not args.model_dir:
        raise InputError("verify needs ADAPTER --on MODEL (local), or --endpoint URL --model NAME (served).")
    probes = _count(args.probes, 4)
    if probes is None:
        raise InputError(f"--probes {args.probes!r}: a prompts file applies only with --endpoint; give a number.")
    from regraft.verify import verify

    console = stderr_console()
    with console.status("verifying") as status:
        rep = verify(args.adapter, args.model_dir, args.reference, probes, args.seq_len, args.seed, args.merge,
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


def _count(v, default: int) -> int | None:
    if v is None:
        return default
    try:
        return int(v)
    except ValueError:
        return None


def run_endpoint(args) -> int:
    import os

    from regraft.cli._common import stderr_console
    from regraft.errors import InputError
    from regraft.verify.endpoint import TOL, load_probe_file, verify_endpoint

    bad = [flag for dest, flag in _LOCAL_ONLY.items() if _given(args, dest)]
    if args.adapter:
        bad.append("ADAPTER (positional; use --adapter DIR)")
    if bad:
        raise InputError(f"{', '.join(bad)} do not apply with --endpoint (they are for the local ADAPTER --on MODEL check).")
    if not args.model:
        raise InputError("verify --endpoint needs --model NAME: the adapter's name on the server (see its /v1/models).")
    if args.reference and not args.reference.startswith(("http://", "https://")):
        raise InputError(f"--reference {args.reference!r}: with --endpoint it is the URL of a server serving the "
                         "reference source+adapter; for a local reference give --adapter DIR --base-dir DIR.")
    n = _count(args.probes, 6)
    prompts = None
    if n is None:
        prompts = load_probe_file(args.probes)
        n = len(prompts)
    console = stderr_console()
    with console.status("probing the endpoint") as status:
        rep = verify_endpoint(args.endpoint, args.model, base_model=args.base_model, base_endpoint=args.base_endpoint,
                              adapter_dir=args.adapter_dir, base_dir=args.base_dir, reference=args.reference,
                              reference_model=args.reference_model, prompts=prompts, n_probes=n,
                              max_tokens=args.max_tokens, top_k=args.top_k, tol=TOL if args.tol is None else args.tol,
                              timeout=args.timeout, runtime=args.runtime, api=args.api,
                              api_key=args.api_key or os.environ.get("OPENAI_API_KEY"),
                              progress=lambda msg: status.update(msg))
    emit(json.dumps(rep.to_dict(), indent=2, default=str) if args.format == "json" else render_endpoint(rep))
    return rep.exit_code


VERDICT_TEXT = {"no-effect": "NO EFFECT", "applied": "APPLIED", "applied-wrong": "APPLIED, BUT WRONG",
                "unknown": "UNKNOWN"}


def render_endpoint(rep) -> str:
    lines = [f"verify {rep.model} @ {rep.endpoint} against {rep.base}: {VERDICT_TEXT.get(rep.verdict, rep.verdict)}",
             f"  {rep.reason}",
             (f"  {rep.probes} probes ({rep.prompts_from}), {rep.max_tokens} tokens each, top-{rep.top_k} log-probs "
             f"via /v1/{'completions' if rep.api == 'completions' else 'chat/completions'}; runtime {rep.runtime}; "
             f"{rep.seconds:.1f}s")]
    if rep.effect is not None:
        e, z = rep.effect, rep.noise
        lines.append(f"  adapter vs base: max |diff| {e.max_diff:.3g}, mean {e.mean_diff:.3g} nats, top-1 agreement "
                     f"{e.top1_agree if e.top1_agree is None else round(e.top1_agree, 3)} on {e.positions} positions, "
                     f"identical greedy texts {e.texts_identical}/{e.prompts}; base vs base repeat: max |diff| "
                     f"{z.max_diff:.3g} (noise floor used {rep.floor:.3g})")
    r = rep.reference
    if r and r.get("kind") == "local":
        for key, what in (("served_adapter", "served adapter vs local base+adapter"),
                          ("served_adapter_vs_local_base", "served adapter vs local base"),
                          ("served_base", "served base vs local base")):
            s = r.get(key) or {}
            if s.get("positions"):
                lines.append(f"  {what}: mean |diff| {s['mean_diff']:.3g}, max {s['max_diff']:.3g} nats, top-1 "
                             f"agreement {s['top1_agree'] if s['top1_agree'] is None else round(s['top1_agree'], 3)}, "
                             f"KL {s['kl']:.3g}/token ({s['positions']} positions"
                             + (f", {s['unmapped']} sequences cut at an unmappable token" if s.get("unmapped") else "")
                             + ")")
    elif r and r.get("kind") == "endpoint":
        s = r["vs_served_adapter"]
        lines.append(f"  served adapter vs {r['source']}: max |diff| {s['max_diff']:.3g} nats on {s['positions']} positions")
    if rep.causes:
        lines.append(f"  likely causes on {rep.runtime}:")
        for c in rep.causes:
            lines.append(f"    - {c['cause']} (look: {c['look']}; {c['source']})")
    for f in rep.check_findings[:8]:
        lines.append(f"  check {f['code']} {f['severity']}: {f['message']}" + (f" -> {f['hint']}" if f.get("hint") else ""))
    for n in rep.notes:
        lines.append(f"  note: {n}")
    return "\n".join(lines)
