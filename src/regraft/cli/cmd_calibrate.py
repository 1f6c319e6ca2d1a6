"""regraft calibrate: fit the escalation policy's thresholds on a labelled dev set for a target master share."""

from __future__ import annotations

from regraft.cli._common import add_format

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    from regraft.cli._hybrid_options import add_hybrid_options

    p = sub.add_parser("calibrate", help="fit the policy's thresholds on a labelled dev set for a target master share",
                       description="Run a labelled dev set (JSONL: {\"question\" or \"messages\", \"answer\"}) through "
                       "the small model and the master, measure each signal's routing curve, and write the policy "
                       "with the signal (or trained classifier) that gives the best quality at the target master "
                       "share.")
    add_hybrid_options(p)
    for a in p._actions:
        if a.dest == "small":
            a.required = False
    p.add_argument("--dev", metavar="FILE.jsonl", help="labelled dev set")
    p.add_argument("--target-share", type=float, required=True, metavar="S",
                   help="the largest share of requests the master may get, e.g. 0.2")
    p.add_argument("--out", required=True, metavar="POLICY.yaml", help="policy file to write")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--match", choices=["exact", "contains"], default="exact",
                   help="how an answer is scored against the gold answer (after lower-casing and punctuation removal)")
    p.add_argument("--records", metavar="FILE.jsonl", help="also write the collected signals and scores here")
    p.add_argument("--from-records", metavar="FILE.jsonl", help="refit from records written by --records "
                   "(no endpoints needed)")
    p.add_argument("--quantile", type=float, default=0.1, help="the per-token quantile for the logprob signals")
    p.add_argument("--share-confidence", type=float, default=0.9, metavar="C",
                   help="a threshold is eligible only when the upper bound of its master share (Wilson, at this "
                   "confidence, from the dev set's size) is within --target-share, so new traffic stays under it; "
                   "0.5 takes the dev share at face value (default 0.9)")
    add_format(p, ("table", "json"))  # "text" is accepted as another name for table
    return p


def _read_jsonl(path: str, what: str) -> list[dict]:
    import json
    from pathlib import Path

    from regraft.errors import InputError

    f = Path(path)
    if not f.is_file():
        raise InputError(f"{what} {f} does not exist; expected a JSONL file")
    out = []
    for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{what} {f} line {i} is not JSON ({e.msg}); expected one JSON object per line") from None
        if not isinstance(d, dict):
            raise InputError(f"{what} {f} line {i}: expected a JSON object")
        out.append(d)
    if not out:
        raise InputError(f"{what} {f} is empty; expected one JSON object per line")
    return out


def dev_items(path: str) -> list[tuple[list[dict], str]]:
    from regraft.errors import InputError

    items = []
    for i, d in enumerate(_read_jsonl(path, "dev set"), 1):
        gold = d.get("answer")
        msgs = d.get("messages") or ([{"role": "user", "content": d["question"]}]
                                     if isinstance(d.get("question"), str) else None)
        if not isinstance(gold, str) or not isinstance(msgs, list):
            raise InputError(f"dev set {path} item {i}: expected {{\"question\": str, \"answer\": str}} or "
                             "{\"messages\": [...], \"answer\": str}")
        items.append((msgs, gold))
    return items


def records_to_jsonl(records) -> str:
    import json
    from dataclasses import asdict

    return "".join(json.dumps({"question": r.question, "small_ok": r.small_ok, "master_ok": r.master_ok,
                               "signals": asdict(r.signals)}) + "\n" for r in records)


def records_from_jsonl(path: str):
    from dataclasses import fields

    from regraft.errors import InputError
    from regraft.hybrid.calibrate import Record
    from regraft.hybrid.policy import Signals

    names = {f.name for f in fields(Signals)}
    out = []
    for i, d in enumerate(_read_jsonl(path, "records"), 1):
        s = d.get("signals")
        if not isinstance(s, dict) or set(s) - names or not all(isinstance(d.get(k), (int, float))
                                                                 for k in ("small_ok", "master_ok")):
            raise InputError(f"records {path} item {i}: expected the fields regraft calibrate --records writes")
        for k in ("token_logprobs", "token_margins", "tool_call_errors"):
            if s.get(k) is not None:
                s[k] = tuple(s[k])
        out.append(Record(Signals(**s), float(d["small_ok"]), float(d["master_ok"]), str(d.get("question", ""))))
    return out


def run(args) -> int:
    import asyncio
    import json
    from pathlib import Path

    from rich.console import Console

    from regraft.cli._hybrid_options import options_from_args
    from regraft.errors import InputError
    from regraft.hybrid.calibrate import calibrate, collect, write_policy
    from regraft.hybrid.policy import load_policy

    if not 0 <= args.target_share <= 1:
        raise InputError(f"--target-share {args.target_share}: expected a share from 0 to 1, e.g. 0.2")
    if not 0.5 <= args.share_confidence < 1:
        raise InputError(f"--share-confidence {args.share_confidence}: expected a confidence from 0.5 (the dev share "
                         "as measured) to below 1, e.g. 0.9")
    from regraft import outputs

    out = Path(args.out)
    if out.exists() and not args.force:
        raise InputError(f"{out} exists; pass --force to overwrite it or choose another --out")
    inputs = [args.policy, args.dev, args.from_records]
    outputs.guard(out, inputs, args.force)  # before the (long) collection; checked again when written
    if args.records:
        outputs.guard(args.records, inputs, args.force, kind="file")
    err = Console(stderr=True)
    base = load_policy(args.policy)
    if args.from_records:
        records = records_from_jsonl(args.from_records)
    else:
        if not args.small or not args.master or not args.dev:
            raise InputError("calibrate needs --dev, --small and --master (or --from-records FILE)")
        items = dev_items(args.dev)
        from regraft.hybrid.assemble import assemble

        opts = options_from_args(args)

        async def go():
            hybrid, _ = await assemble(opts)
            try:
                return await collect(hybrid, items, args.match,
                                     progress=lambda d, n: err.print(f"[dim]calibrate: {d}/{n} dev items[/]")
                                     if d % 25 == 0 or d == n else None)
            finally:
                await hybrid.aclose()

        records = asyncio.run(go())
        if args.records:
            outputs.write_text(args.records, records_to_jsonl(records), inputs, args.force)
    policy, report = calibrate(records, args.target_share, base, q=args.quantile, share_confidence=args.share_confidence)
    write_policy(policy, out, report, inputs=inputs, force=args.force)
    if args.format == "json":
        print(json.dumps(report, indent=1))
        return 0
    con = Console()
    con.print(f"dev items {report['n']}: always small {report['always_small']:.3f}, always master "
              f"{report['always_master']:.3f}, oracle {report['oracle']['quality']:.3f} at "
              f"{report['oracle']['master_share']:.1%} master calls")
    for name, c in report["candidates"].items():
        if not c.get("available"):
            con.print(f"  {name:17s} unavailable")
        else:
            b = c["best"]
            con.print(f"  {name:17s} {b['quality']:.3f} at {b['master_share']:.1%}"
                      + ("  <- written" if name == report["winner"] else ""))
    if report["share_confidence"] > 0.5:
        con.print(f"master share on dev {report['dev_share']:.1%}; upper bound {report['share_upper']:.1%} at "
                  f"{report['share_confidence']:.0%} confidence (target {report['target_share']:.0%})")
    con.print(f"wrote {out} (signal {report['winner']}, threshold {report['threshold']:.4g})", markup=False)
    return 0
