"""The sanity table: base vs +LoRA scores for every model, generic NLL, drift, build costs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from . import build, scores as evaluate

RESULTS = build.REPO / "bench" / "results"


def drift(dir_a: Path, dir_b: Path) -> dict:
    """sigma = sum|A-B| / (sum|A|+sum|B|) and relative Frobenius distance over all shared tensors."""
    from safetensors.torch import load_file

    a, b = load_file(str(dir_a / "model.safetensors")), load_file(str(dir_b / "model.safetensors"))
    num = den = fn = fd = 0.0
    for k in a:
        if k in b and a[k].shape == b[k].shape:
            num += float((a[k] - b[k]).abs().sum())
            den += float(a[k].abs().sum() + b[k].abs().sum())
            fn += float(((a[k] - b[k]) ** 2).sum())
            fd += float((a[k] ** 2).sum())
    return {"sigma": num / den, "rel_frobenius": (fn / fd) ** 0.5}


def sanity(tier: str, n: int | None = None) -> dict:
    cfg = build.tier_config(tier)
    root = build.build_zoo(tier)
    man = build.manifest(tier)
    torch.manual_seed(0)
    rows = []
    t0 = time.perf_counter()
    for m in cfg["models"]:
        mdir = root / "zoo" / m
        base = evaluate.load(mdir)
        row = {"model": m, "params": man["members"][f"zoo/{m}"]["params"],
               "generic_nll": evaluate.generic_nll(base), "tasks": {}}
        for t in cfg["tasks"]:
            r = {"base": evaluate.task_scores(base, t, n=n)}
            if m in cfg["adapters"].get(t, []):
                r["lora"] = evaluate.task_scores(evaluate.load(mdir, root / "lora" / t / m), t, n=n)
                r["lora_role"] = "source adapter" if m in ("S", "SM") else "retrained on target (upper bound)"
            if m in ("T1", "T3p") and "S" in cfg["adapters"].get(t, []):
                r["copy_of_S_adapter"] = evaluate.task_scores(evaluate.load(mdir, root / "lora" / t / "S"), t, n=n)
            row["tasks"][t] = r
        rows.append(row)
    drifts = {f"S~{m}": drift(root / "zoo" / "S", root / "zoo" / m) for m in ("T1", "T3p") if m in cfg["models"]}
    return {"tier": tier, "hash": build.tier_hash(tier), "code_version": build.CODE_VERSION,
            "eval_n": n or "full test split", "models": rows, "drift": drifts,
            "build_steps": man["members"], "builds": man.get("builds", []), "eval_wall_s": round(time.perf_counter() - t0, 1),
            "config": cfg}


def _f(x, k="exact_match"):
    return "–" if x is None else (f"{x[k]:.2f}" if k == "exact_match" else f"{x[k]:.2f}")


def to_markdown(res: dict, command: str) -> str:
    L = [f"# Zoo sanity table — tier `{res['tier']}` (hash {res['hash']}, {res['code_version']})", "",
         f"Produced by `{command}`. Test split of each task (n = {res['eval_n']}), greedy exact match (EM) and "
         "gold NLL in nats/token; generic NLL on 400 held-out pretraining-mixture documents.", ""]
    for t in res["config"]["tasks"]:
        L += [f"## Task {t}", "", "| model | params | base EM | base NLL | +LoRA EM | +LoRA NLL | LoRA is | "
              "S's adapter copied EM / NLL | generic NLL |", "|---|---|---|---|---|---|---|---|---|"]
        for r in res["models"]:
            x = r["tasks"][t]
            lo, cp = x.get("lora"), x.get("copy_of_S_adapter")
            L.append(f"| {r['model']} | {r['params']:,} | {_f(x['base'])} | {_f(x['base'], 'gold_nll')} | "
                     f"{_f(lo)} | {_f(lo, 'gold_nll')} | {x.get('lora_role', '–')} | "
                     f"{_f(cp) + ' / ' + _f(cp, 'gold_nll') if cp else '–'} | {r['generic_nll']:.3f} |")
        L.append("")
    L += ["## Weight drift", "", "| pair | σ = Σ|A−B| / (Σ|A|+Σ|B|) | relative Frobenius ‖A−B‖/‖A‖ |", "|---|---|---|"]
    for k, d in res["drift"].items():
        L.append(f"| {k} | {d['sigma']:.4f} | {d['rel_frobenius']:.4f} |")
    L += ["", "## Build steps", "", "| member | kind | wall s | CPU s | peak RSS MB | params | loss start → end | sha256 |",
          "|---|---|---|---|---|---|---|---|"]
    tot = 0.0
    for n, s in res["build_steps"].items():
        tot += s["wall_s"]
        loss = f"{s['loss_start']:.3f} → {s['loss_end']:.3f}" if "loss_end" in s else "–"
        L.append(f"| {n} | {s['kind']} | {s['wall_s']} | {s.get('cpu_s', 'n/a')} | {s['peak_rss_mb']} | "
                 f"{s.get('params', '–')} | {loss} | "
                 f"`{s['sha256'][:12]}` |")
    L += ["", f"Sum of build step wall times: {tot:.1f} s (each step in its own 1-thread process; peak RSS is "
          f"that process's). Evaluation for this table: {res['eval_wall_s']} s."]
    for b in res.get("builds", []):
        L.append(f"Build run: {len(b['members'])} members, {b['jobs']} parallel jobs, {b['wall_s']} s wall "
                 f"(machine load during the run: {b.get('load', 'n/a')}).")
    L.append("")
    return "\n".join(L)


def write(tier: str, n: int | None, command: str) -> Path:
    res = sanity(tier, n)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"zoo_{tier}.json").write_text(json.dumps(res, indent=1, sort_keys=True))
    p = RESULTS / f"zoo_{tier}.md"
    p.write_text(to_markdown(res, command))
    return p
