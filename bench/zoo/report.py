"""The sanity table: base vs +LoRA scores for every model and task, side effects, drift, build costs."""

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


def _scores(model, t, n):
    r = evaluate.task_scores(model, t, n=n)
    if t == "B":  # held-out template (test) and the three training templates (train split)
        r["train_templates_em"] = evaluate.task_scores(model, t, split="train", n=n)["exact_match"]
    return r


def _model_row(tier: str, m: str, n: int | None) -> dict:
    """Scores of model ``m``: base and +LoRA per task, side effects, S's adapter copied (same shapes)."""
    build._setup_torch()
    cfg = build.tier_config(tier)
    root = build.tier_dir(tier)
    man = build.manifest(tier)
    torch.manual_seed(0)
    mdir = root / "zoo" / m
    base = evaluate.load(mdir)
    row = {"model": m, "params": man["members"][f"zoo/{m}"]["params"], "generic_nll": evaluate.generic_nll(base),
           "tasks": {}}
    for t in cfg["tasks"]:
        r = {"base": _scores(base, t, n)}
        if m in cfg["adapters"].get(t, []):
            lm = evaluate.load(mdir, root / "lora" / t / m)
            r["lora"] = _scores(lm, t, n)
            r["lora_generic_nll"] = evaluate.generic_nll(lm)
            r["lora_role"] = "source adapter" if m in ("S", "SM") else "retrained on target (upper bound)"
        if m in ("T1", "T3p") and "S" in cfg["adapters"].get(t, []):
            r["copy_of_S_adapter"] = _scores(evaluate.load(mdir, root / "lora" / t / "S"), t, n)
        row["tasks"][t] = r
    return row


def sanity(tier: str, n: int | None = None, jobs: int | None = None) -> dict:
    """The sanity table of ``tier`` (built first); models are scored in ``jobs`` 1-thread processes."""
    cfg = build.tier_config(tier)
    root = build.build_zoo(tier)
    man = build.manifest(tier)
    t0 = time.perf_counter()
    jobs = max(1, jobs or build.default_jobs())
    if jobs == 1:
        rows = [_model_row(tier, m, n) for m in cfg["models"]]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
            rows = list(ex.map(_model_row, [tier] * len(cfg["models"]), list(cfg["models"]), [n] * len(cfg["models"])))
    drifts = {f"S~{m}": drift(root / "zoo" / "S", root / "zoo" / m) for m in ("T1", "T3p") if m in cfg["models"]}
    return {"tier": tier, "hash": build.tier_hash(tier), "code_version": build.CODE_VERSION, "dir": str(root),
            "eval_n": n or "full test split", "models": rows, "drift": drifts, "world": cfg.get("world", {}),
            "keys": {k: build.member_key(tier, k) for k in build.member_names(tier)},
            "build_steps": {k: v for k, v in man["members"].items() if k in build.member_names(tier)},
            "builds": man.get("builds", []), "eval_wall_s": round(time.perf_counter() - t0, 1),
            "eval_jobs": jobs, "cost": cost(tier, man), "config": cfg}


def cost(tier: str, man: dict | None = None) -> dict:
    """Load-independent cost of the tier: total member CPU s, critical path (CPU s along the longest
    dependency chain) and the 2-core estimate max(total / 2, critical path)."""
    man = man or build.manifest(tier)
    mem = man.get("members", {})
    names = [n for n in build.member_names(tier) if n in mem]
    memo: dict = {}

    def path(n):
        if n not in memo:
            memo[n] = mem[n].get("cpu_s", 0.0) + max([path(d) for d in build._deps(tier, n) if d in mem] or [0.0])
        return memo[n]

    total = sum(mem[n].get("cpu_s", 0.0) for n in names)
    crit = max((path(n) for n in names), default=0.0)
    return {"cpu_s_total": round(total, 1), "critical_path_cpu_s": round(crit, 1),
            "est_wall_s_2_cores": round(max(total / 2, crit), 1),
            "peak_rss_mb_max": max((mem[n].get("peak_rss_mb", 0.0) for n in names), default=0.0)}


def _f(x, k="exact_match"):
    return "–" if x is None or k not in x else f"{x[k]:.2f}"


def to_markdown(res: dict, command: str) -> str:
    L = [f"# Zoo sanity table — tier `{res['tier']}` (tier hash {res['hash']}, {res['code_version']})", "",
         f"Produced by `{command}`. Test split of each task (n = {res['eval_n']}), greedy exact match (EM) and "
         "gold NLL in nats/token; generic NLL on 400 held-out pretraining-mixture documents, for the base model "
         "and with the LoRA loaded (the adapter's side effect). World settings: "
         f"{res.get('world') or 'default (Task A: 5 letters, not reversed)'}.", ""]
    for t in res["config"]["tasks"]:
        extra_h, extra_s = "", ""
        if t == "B":
            extra_h, extra_s = " | train-template EM base / +LoRA", "|---"
        if t == "C":
            extra_h, extra_s = " | format rate base / +LoRA / copied", "|---"
        L += [f"## Task {t}", "", "| model | params | base EM | base NLL | +LoRA EM | +LoRA NLL | LoRA is | "
              f"S's adapter copied EM / NLL | generic NLL base | generic NLL +LoRA{extra_h} |",
              "|---|---|---|---|---|---|---|---|---|---" + extra_s + "|"]
        for r in res["models"]:
            x = r["tasks"][t]
            lo, cp = x.get("lora"), x.get("copy_of_S_adapter")
            line = (f"| {r['model']} | {r['params']:,} | {_f(x['base'])} | {_f(x['base'], 'gold_nll')} | "
                    f"{_f(lo)} | {_f(lo, 'gold_nll')} | {x.get('lora_role', '–')} | "
                    f"{_f(cp) + ' / ' + _f(cp, 'gold_nll') if cp else '–'} | {r['generic_nll']:.3f} | "
                    f"{x['lora_generic_nll']:.3f} |" if "lora_generic_nll" in x else
                    f"| {r['model']} | {r['params']:,} | {_f(x['base'])} | {_f(x['base'], 'gold_nll')} | – | – | – | "
                    f"{_f(cp) + ' / ' + _f(cp, 'gold_nll') if cp else '–'} | {r['generic_nll']:.3f} | – |")
            if t == "B":
                line += f" {_f(x['base'], 'train_templates_em')} / {_f(lo, 'train_templates_em')} |"
            if t == "C":
                line += f" {_f(x['base'], 'format_rate')} / {_f(lo, 'format_rate')} / {_f(cp, 'format_rate')} |"
            L.append(line)
        L.append("")
    L += ["## Weight drift", "", "| pair | σ = Σ|A−B| / (Σ|A|+Σ|B|) | relative Frobenius ‖A−B‖/‖A‖ |", "|---|---|---|"]
    for k, d in res["drift"].items():
        L.append(f"| {k} | {d['sigma']:.4f} | {d['rel_frobenius']:.4f} |")
    L += ["", "## Build steps", "", "| member | kind | key | wall s | CPU s | peak RSS MB | params | loss start → end | sha256 |",
          "|---|---|---|---|---|---|---|---|---|"]
    for n in sorted(res["build_steps"]):
        s = res["build_steps"][n]
        loss = f"{s['loss_start']:.3f} → {s['loss_end']:.3f}" if "loss_end" in s else "–"
        L.append(f"| {n} | {s['kind']} | `{s.get('key', '?')}` | {s['wall_s']} | {s.get('cpu_s', 'n/a')} | "
                 f"{s['peak_rss_mb']} | {s.get('params', '–')} | {loss} | `{s['sha256'][:12]}` |")
    c = res["cost"]
    L += ["", f"Cost (load-independent, from the manifest's `cpu_s`: user+sys CPU of the 1-thread worker process for "
          f"each member; the first member of each worker also carries its ~6 CPU-s of imports): {c['cpu_s_total']} CPU-s in all, critical path {c['critical_path_cpu_s']} CPU-s, "
          f"so ≈ {c['est_wall_s_2_cores']} s wall on 2 idle cores; largest peak RSS {c['peak_rss_mb_max']} MB. "
          f"Evaluation for this table: {res['eval_wall_s']} s wall ({res.get('eval_jobs', 1)} processes).", ""]
    for b in res.get("builds", []):
        L.append(f"* Build run{' ' + b['finished'] if b.get('finished') else ''}: {len(b['members'])} members, "
                 f"{b['jobs']} parallel jobs, {b['wall_s']} s wall (load average during the run: {b.get('load', 'n/a')})"
                 + (f"; {_env(b['env'])}." if b.get("env") else "."))
    L.append("")
    return "\n".join(L)


def write(tier: str, n: int | None, command: str, jobs: int | None = None) -> Path:
    res = sanity(tier, n, jobs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"zoo_{tier}.json").write_text(json.dumps(res, indent=1, sort_keys=True))
    p = RESULTS / f"zoo_{tier}.md"
    p.write_text(to_markdown(res, command))
    return p


def _env(env: dict) -> str:
    libs = ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("cpu", "cpu_capability") and v)
    return f"{libs}; CPU {env.get('cpu') or 'unknown'} ({env.get('cpu_capability') or 'capability unknown'})"

