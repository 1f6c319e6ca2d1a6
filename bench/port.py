"""Measures for `regraft port lora`, `verify` and `drift` (issue 5). Results: bench/results/port.{json,md}.

    python -m bench.port                 # all sections (zoo smoke tier is built if missing)
    python -m bench.port --only drift    # one section: drift | relayout | copy

Sections
- copy: on the zoo, the adapter trained on S (task A) copied to T1 (S + instruct training: a sibling) and to T3p
  (S's exact shapes, another seed: no lineage). Gap recovered GR = (X - target base) / (retrained - target base),
  with X = target + copied adapter and "retrained" = the same LoRA recipe trained on the target itself. drift(S, T)
  is reported next to it: the copy rule (sigma <= 0.15) should predict which copy works.
- relayout: v4 per-expert -> v5 fused -> v4 on the zoo's MoE member (or a tiny MoE when the zoo has none):
  tensors identical, and PEFT outputs of the three adapters / merged models within 1e-5.
- drift: two ~1 GB bf16 checkpoints in 3 shards (siblings: B = A + 2% noise), drift run in a fresh process;
  time per GB and peak RSS against the shard size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
warnings.filterwarnings("ignore")


# ----------------------------------------------------------------------------------------------- drift
def _write_checkpoint(folder: Path, shards: int, shard_elems: int, seed: int, base_seed: int | None, noise: float):
    """A sharded bf16 checkpoint written shard by shard (one shard in memory at a time)."""
    import numpy as np

    from regraft.inspection.safetensors_header import write_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    wmap = {}
    rows = 4096
    cols = shard_elems // rows // 4
    for s in range(shards):
        tensors = {}
        for t in range(4):  # 4 tensors per shard, like layers.{k}.mlp.*_proj
            name = f"model.layers.{s * 4 + t}.mlp.proj_{t}.weight"
            g = np.random.default_rng((base_seed if base_seed is not None else seed) * 1000 + s * 4 + t)
            x = g.standard_normal((rows, cols), dtype=np.float32) * 0.02
            if base_seed is not None:
                x += np.random.default_rng(seed * 1000 + s * 4 + t).standard_normal((rows, cols), dtype=np.float32) \
                    * 0.02 * noise
            raw = (x.view(np.uint32) >> 16).astype(np.uint16).tobytes()
            tensors[name] = ("BF16", (rows, cols), raw)
            wmap[name] = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            del x
        write_safetensors(folder / f"model-{s + 1:05d}-of-{shards:05d}.safetensors", tensors)
        del tensors
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3"}))


_CHILD = r"""
import json, os, resource, sys, time
from regraft.drift import drift
t = time.perf_counter()
rep = drift(sys.argv[1], sys.argv[2])
s = rep.summary()
hwm = 0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        hwm = int(line.split()[1]) * 1024
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": time.perf_counter() - t, "cpu_seconds": ru.ru_utime + ru.ru_stime, "peak_rss": hwm,
                  "loadavg_1min": os.getloadavg()[0], "sigma": s["sigma"], "verdict": s["verdict"],
                  "bytes_read": s["bytes_read"], "peak_buffer_bytes": s["peak_buffer_bytes"]}))
"""

_BASELINE = r"""
import json, regraft.drift, numpy
hwm = 0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        hwm = int(line.split()[1]) * 1024
print(json.dumps({"peak_rss": hwm}))
"""


def bench_drift(size_gb: float = 1.0, shards: int = 3) -> dict:
    shard_elems = int(size_gb * 1e9 / 2 / shards)
    with tempfile.TemporaryDirectory(dir=os.environ.get("REGRAFT_BENCH_TMP")) as tmp:
        a, b = Path(tmp) / "a", Path(tmp) / "b"
        t0 = time.perf_counter()
        _write_checkpoint(a, shards, shard_elems, seed=1, base_seed=None, noise=0)
        _write_checkpoint(b, shards, shard_elems, seed=2, base_seed=1, noise=0.02)
        gen_s = time.perf_counter() - t0
        size_a = sum(f.stat().st_size for f in a.glob("*.safetensors"))
        shard = max(f.stat().st_size for f in a.glob("*.safetensors"))
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        base = json.loads(subprocess.run([sys.executable, "-c", _BASELINE], capture_output=True, text=True,
                                         env=env, check=True).stdout)
        runs = {}
        for mode in ("cold", "warm"):
            if mode == "cold":  # evict just these files from the page cache (posix_fadvise; touches nothing else)
                for f in list(a.glob("*.safetensors")) + list(b.glob("*.safetensors")):
                    fd = os.open(f, os.O_RDONLY)
                    os.fsync(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    os.close(fd)
            out = subprocess.run([sys.executable, "-c", _CHILD, str(a), str(b)], capture_output=True, text=True,
                                 env=env, check=True)
            runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        r = runs["cold"]
    gb = r["bytes_read"] / 1e9
    return {
        "seconds_per_gb_read_warm_cache": round(runs["warm"]["seconds"] / gb, 2),
        "cpu_seconds_per_gb_read": round(r["cpu_seconds"] / gb, 2),
        "cpu_seconds_per_gb_read_warm_cache": round(runs["warm"]["cpu_seconds"] / gb, 2),
        "loadavg_1min_at_end": r["loadavg_1min"], "cpu_cores": os.cpu_count(),
        "checkpoint_bytes_each": size_a, "shards_each": shards, "largest_shard_bytes": shard,
        "bytes_read_both": r["bytes_read"], "seconds": round(r["seconds"], 2),
        "seconds_per_gb_read": round(r["seconds"] / gb, 2),
        "peak_rss_bytes": r["peak_rss"], "interpreter_baseline_rss_bytes": base["peak_rss"],
        "peak_rss_in_shards": round(r["peak_rss"] / shard, 3),
        "peak_rss_above_baseline_in_shards": round((r["peak_rss"] - base["peak_rss"]) / shard, 3),
        "peak_buffer_bytes": r["peak_buffer_bytes"], "sigma": r["sigma"], "verdict": r["verdict"],
        "under_two_shards": r["peak_rss"] < 2 * shard, "generate_seconds": round(gen_s, 1),
    }


# ----------------------------------------------------------------------------------------------- relayout
def bench_relayout(tier: str) -> dict:
    import torch

    from regraft.inspection.resolve import resolve_model
    from regraft.port.api import port_lora
    from tests import factories as T

    moe_dir, adapter = None, None
    try:
        from bench.zoo import zoo_path

        moe_dir = zoo_path(tier, "SM")
        adapter = None
        for cand in ("lora/A/SM", "SM+A"):
            try:
                adapter = zoo_path(tier, cand)
                break
            except Exception:  # noqa: BLE001 - zoo member names may differ
                continue
    except Exception as e:  # noqa: BLE001
        note = f"zoo MoE member unavailable ({type(e).__name__}: {str(e)[:120]}); tiny MoE built here"
        moe_dir = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        note = "zoo member SM" if moe_dir else note
        if moe_dir is None:
            moe_dir = T.make_model(tmp / "moe", "qwen3_moe", num_hidden_layers=4, num_experts=8)
        if adapter is None or not (Path(adapter) / "adapter_config.json").exists():
            v4 = T.v4_moe_adapter(moe_dir, tmp / "v4", r=4, alpha=8)
        else:  # the zoo adapter is whatever layout PEFT saved (fused on transformers 5): bring it to v4 first
            v4 = tmp / "v4"
            port_lora(adapter, resolve_model(str(moe_dir)), v4, layout="v4", drift=False)
        target = resolve_model(str(moe_dir))
        t0 = time.perf_counter()
        port_lora(v4, target, tmp / "v5", layout="v5", drift=False)
        t1 = time.perf_counter()
        port_lora(tmp / "v5", target, tmp / "v4b", layout="v4", drift=False)
        t2 = time.perf_counter()
        from safetensors.torch import load_file

        a, b = load_file(str(v4 / "adapter_model.safetensors")), load_file(str(tmp / "v4b" / "adapter_model.safetensors"))
        identical = set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
        x = T.ids(vocab=target.config["vocab_size"], n=4, length=24)
        base = T.load(moe_dir)(input_ids=x).logits
        outs = {n: T.peft_logits(moe_dir, p, x) for n, p in (("v4", v4), ("v5", tmp / "v5"), ("v4b", tmp / "v4b"))}
        merged = T.merged_logits(moe_dir, v4, x)
        from peft import PeftModel

        pm = PeftModel.from_pretrained(T.load(moe_dir), str(tmp / "v5")).merge_and_unload()
        with torch.no_grad():
            merged_peft = pm(input_ids=x).logits
        s5 = load_file(str(tmp / "v5" / "adapter_model.safetensors"))
    md = lambda u, v: float((u - v).abs().max())  # noqa: E731
    return {
        "model": note, "adapter_tensors_v4": len(a), "adapter_tensors_v5": len(s5),
        "v4_v5_v4_identical": identical,
        "max_abs_logit_diff": {"peft_v4_vs_peft_v5": md(outs["v4"], outs["v5"]),
                               "peft_v4_vs_peft_v4_roundtrip": md(outs["v4"], outs["v4b"]),
                               "peft_v5_vs_manual_merge_of_v4": md(outs["v5"], merged),
                               "peft_merge_and_unload_v5_vs_manual_merge_of_v4": md(merged_peft, merged)},
        "adapter_effect_max_abs_logit": md(outs["v4"], base),
        "seconds_v4_to_v5": round(t1 - t0, 3), "seconds_v5_to_v4": round(t2 - t1, 3),
    }


# ----------------------------------------------------------------------------------------------- copy
def bench_copy(tier: str, task: str = "A", n: int | None = None) -> dict:
    from bench.zoo import evaluate, zoo_path

    from regraft.drift import drift
    from regraft.inspection.resolve import resolve_model
    from regraft.port.api import port_lora

    S = zoo_path(tier, "S")
    src_adapter = zoo_path(tier, f"lora/{task}/S")
    from bench.zoo import tier_dir

    out = {"task": task, "tier": tier, "tier_dir": tier_dir(tier).name, "pairs": {}}
    s_eval = evaluate(S, src_adapter, task=task, n=n)
    out["source"] = {"S": evaluate(S, None, task=task, n=n), "S+A": s_eval}
    with tempfile.TemporaryDirectory() as tmp:
        for tname in ("T1", "T3p"):
            T_ = zoo_path(tier, tname)
            t0 = time.perf_counter()
            res = port_lora(src_adapter, resolve_model(str(T_)), Path(tmp) / tname, source=resolve_model(str(S)))
            port_s = time.perf_counter() - t0
            d = drift(S, T_).summary()
            base = evaluate(T_, None, task=task, n=n)
            copied = evaluate(T_, Path(tmp) / tname, task=task, n=n)
            row = {"drift_sigma": d["sigma"], "drift_verdict": d["verdict"], "copy_rule": d["copy_rule"],
                   "plan": res.plan.counts(), "port_seconds": round(port_s, 2),
                   "target_base": base, "target_plus_copy": copied}
            try:
                from regraft.verify import verify

                v = verify(Path(tmp) / tname, T_, reference_dir=S)
                row["verify_ok"] = v.ok
                row["reference_top1_agreement"] = v.reference["top1_agreement"]
                row["reference_kl"] = v.reference["kl"]
                row["base_top1_agreement"] = v.reference["base_top1_agreement"]
            except Exception as e:  # noqa: BLE001
                row["verify"] = f"failed: {type(e).__name__}: {str(e)[:160]}"
            try:
                rpath = _retrained(tier, task, tname, Path(tmp))
                row["retrained_from"] = "zoo" if str(rpath).startswith(str(zoo_path(tier, "S").parents[1])) \
                    else "trained here with the tier's LoRA recipe (not a member of this tier)"
                retrained = evaluate(T_, rpath, task=task, n=n)
                row["target_plus_retrained"] = retrained
                for metric in ("exact_match",):
                    den = retrained[metric] - base[metric]
                    row[f"GR_{metric}"] = (copied[metric] - base[metric]) / den if abs(den) > 1e-9 else None
                den = retrained["gold_nll"] - base["gold_nll"]
                row["GR_gold_nll"] = (copied["gold_nll"] - base["gold_nll"]) / den if abs(den) > 1e-9 else None
            except Exception as e:  # noqa: BLE001 - no retrained adapter in this tier
                row["retrained"] = f"unavailable: {type(e).__name__}: {str(e)[:160]}"
            out["pairs"][f"S->{tname}"] = row
    return out


def _retrained(tier: str, task: str, tname: str, tmp: Path) -> Path:
    """The zoo's LoRA for (task, target), or the same recipe trained here when the tier does not include it."""
    from bench.zoo import TIERS, tier_dir, zoo_path

    name = f"lora/{task}/{tname}"
    try:
        return zoo_path(tier, name)
    except Exception:  # noqa: BLE001 - not a member of this tier
        from bench.zoo import steps

        out = tmp / f"retrained-{task}-{tname}"
        out.mkdir(parents=True, exist_ok=True)
        from rich.progress import Progress

        with Progress(transient=True) as prog:
            steps.build_member(tier, TIERS[tier], name, tier_dir(tier), out, prog)
        return out


# ----------------------------------------------------------------------------------------------- main
def _md(res: dict) -> str:
    L = ["# port / verify / drift measures (issue 5)", "", f"Generated by `python -m bench.port` on "
         f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; raw numbers in `port.json`.", ""]
    c = res.get("copy")
    if c and "pairs" in c:
        L += ["## Copy onto same-shape targets (zoo, task " + c["task"] + ")", "",
              f"Zoo build: `.zoo/{c.get('tier_dir', '?')}`." + (f" Note: {c['note']}." if c.get("note") else ""), "",
              "| pair | drift sigma | verdict | copy rule | target base EM | + copy EM | + retrained EM | GR (EM) | GR (gold NLL) | top-1 agree S+A vs T+A | KL |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for k, r in c["pairs"].items():
            f = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
            rt = r.get("target_plus_retrained", {})
            L.append(f"| {k} | {r['drift_sigma']:.4f} | {r['drift_verdict']} | {r['copy_rule']} | "
                     f"{f(r['target_base']['exact_match'])} | {f(r['target_plus_copy']['exact_match'])} | "
                     f"{f(rt.get('exact_match'))} | {f(r.get('GR_exact_match'))} | {f(r.get('GR_gold_nll'))} | "
                     f"{f(r.get('reference_top1_agreement'))} | {f(r.get('reference_kl'))} |")
        s = c["source"]
        L += ["", f"Source: S EM {s['S']['exact_match']:.3f} / gold NLL {s['S']['gold_nll']:.3f}; S+A EM "
              f"{s['S+A']['exact_match']:.3f} / gold NLL {s['S+A']['gold_nll']:.3f} (n = {s['S']['n']} test examples).", "",
              "GR = (X - target base) / (retrained - target base), X = target + the copied adapter, 'retrained' = the same "
              "LoRA recipe trained on the target (" + "; ".join(f"{k}: {r.get('retrained_from', 'zoo')}"
                                                                 for k, r in c["pairs"].items()) + "). GR on gold NLL uses the NLL of the gold completion (lower is better; "
              "the ratio is the same). Where the retrained adapter's EM equals the base's, GR on EM is undefined (-).",
              "top-1 agree / KL: `regraft verify COPY --on T --reference S` on 4x32 random-token probes (S+A vs T+A); "
              "the two bases alone agree on " + ", ".join(f"{k}: {r.get('base_top1_agreement', float('nan')):.3f}"
                                                         for k, r in c["pairs"].items()) + ".", ""]
    elif c:
        L += ["## Copy", "", f"not measured: {c.get('error')}", ""]
    r = res.get("relayout")
    if r and "error" not in r:
        L += ["## Relayout round trip (MoE experts)", "", f"Model: {r['model']}. v4 per-expert ({r['adapter_tensors_v4']} "
              f"tensors) -> v5 fused ({r['adapter_tensors_v5']}) -> v4: identical tensors: **{r['v4_v5_v4_identical']}**.", "",
              "| comparison | max abs logit diff |", "|---|---|"]
        for k, v in r["max_abs_logit_diff"].items():
            L.append(f"| {k} | {v:.2e} |")
        L += [f"| (adapter effect, for scale) | {r['adapter_effect_max_abs_logit']:.3f} |", ""]
    elif r:
        L += ["## Relayout", "", f"failed: {r['error']}", ""]
    d = res.get("drift")
    if d and "error" not in d:
        L += ["## drift on two ~1 GB checkpoints", "",
              f"Two bf16 checkpoints of {d['checkpoint_bytes_each'] / 1e9:.2f} GB each in {d['shards_each']} shards "
              f"(largest {d['largest_shard_bytes'] / 1e6:.0f} MB), siblings by construction (B = A + 2% noise).", "",
              f"- time: {d['seconds']} s for {d['bytes_read_both'] / 1e9:.2f} GB read = **{d['seconds_per_gb_read']} s/GB** "
              f"with the files evicted from the page cache first (warm cache: {d.get('seconds_per_gb_read_warm_cache')} s/GB); "
              f"CPU time {d.get('cpu_seconds_per_gb_read')} s/GB (warm {d.get('cpu_seconds_per_gb_read_warm_cache')}). "
              f"The machine had {d.get('cpu_cores')} cores and a 1-min load average of {d.get('loadavg_1min_at_end')} "
              "(other jobs running), so wall times are upper bounds.",
              f"- peak RSS of the drift process: {d['peak_rss_bytes'] / 1e6:.0f} MB = **{d['peak_rss_in_shards']} shards** "
              f"(interpreter + numpy baseline {d['interpreter_baseline_rss_bytes'] / 1e6:.0f} MB; above it "
              f"{d['peak_rss_above_baseline_in_shards']} shards); under 2 shards: **{d['under_two_shards']}**",
              f"- sigma {d['sigma']:.4f} -> {d['verdict']}", ""]
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("copy", "relayout", "drift"), action="append")
    p.add_argument("--tier", default="smoke")
    p.add_argument("--n", type=int, default=None, help="test examples per evaluation (default: all)")
    p.add_argument("--size-gb", type=float, default=1.0)
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    path = RESULTS / "port.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    for sec in args.only or ("relayout", "drift", "copy"):
        t0 = time.perf_counter()
        try:
            if sec == "drift":
                res[sec] = bench_drift(args.size_gb)
            elif sec == "relayout":
                res[sec] = bench_relayout(args.tier)
            else:
                res[sec] = bench_copy(args.tier, n=args.n)
        except Exception as e:  # noqa: BLE001 - record and continue with the other sections
            import traceback

            traceback.print_exc()
            res[sec] = {"error": f"{type(e).__name__}: {e}"}
        res.setdefault("_seconds", {})[sec] = round(time.perf_counter() - t0, 1)
        print(f"{sec}: {json.dumps(res[sec], default=str)[:600]}", file=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1, default=str) + "\n")
    (RESULTS / "port.md").write_text(_md(res))
    print((RESULTS / "port.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
