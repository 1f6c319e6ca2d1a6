"""Benchmark of porting a LoRA across shapes on the tiny zoo (issue 6; research/lora_transfer.md 7).

Pairs: Pk (exact reparametrisation of S: projection must recover it), S->T1 (base->instruct sibling),
S->T3 (independent, new shapes, Qwen2->Qwen3-like), S->T3p (independent, same shapes), SM->T3 (MoE -> dense);
S->T2 (lineage upgrade) in the standard tier.
Conditions: target base, source+adapter, copy (same shapes only), project, distill (N synthetic prompts from 5 seed
train prompts, logit KD, projection init behind its label-free gate, the side-effect guard on generic text at
weight 1, up to 1500 steps with early stop on synthetic val), lora-5 / lora-100 (fresh target LoRA on 5 / 100 real
examples, the zoo's optimiser, --steps 300), retrained (target LoRA on the full data: the zoo's recipe; upper bound).
Metrics: exact match and gold NLL on Task A test, GR = (X - base) / (retrained - base) on EM (and on NLL),
agreement/KL with the teacher (source+adapter greedy completions of the test prompts), generic-text NLL
(side effects), wall seconds and peak RSS of each method. Seeds vary the distillation / baseline training seed
(and the synthetic prompts); 95% CIs: bootstrap over test items (1 seed) or over seeds x items.

    python bench/port_methods.py --tier smoke                  # the CI tier, 1 seed
    python bench/port_methods.py --tier smoke --seeds 3        # 3 seeds with CIs
    python bench/port_methods.py --tier standard --seeds 3 --jobs 2   # (pair, seed) units, 2 processes at a time
    python bench/port_methods.py --tier smoke --task C --tag _C       # another task (the zoo's task-C adapters)
Writes bench/results/transfer_<tier>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch

PAIRS = {  # name: (source, target, task of the pre-registered targets; --task picks the task run)
    "Pk": ("S", "Pk", "A"),
    "S->T1": ("S", "T1", "A"),
    "S->T2": ("S", "T2", "A"),
    "S->T3": ("S", "T3", "A"),
    "S->T3p": ("S", "T3p", "A"),
    "SM->T3": ("SM", "T3", "A"),
}
TARGETS = {"distill GR >= 0.8 on S->T3 and SM->T3 with <= 1024 prompts, beating lora-100": None,
           "project GR >= 0.95 on Pk": None}


def _zoo():
    import importlib

    from bench.zoo import build_zoo, load_task, zoo_path

    zev = importlib.import_module("bench.zoo.scores")
    ztrain = importlib.import_module("bench.zoo.train")
    world = importlib.import_module("bench.zoo.world")

    return build_zoo, zoo_path, load_task, zev, ztrain, world


def peak_reset():
    from regraft.port.memory import reset_peak_rss

    reset_peak_rss()


def peak():
    from regraft.port.memory import peak_rss_mb

    return peak_rss_mb()


def score(model, zev, task, n_test, teacher_items, n_generic):
    from regraft.port.fidelity import teacher_fidelity

    s = zev.task_scores(model, task, "test", n_test, with_items=True)
    preds_correct = s.pop("_correct")
    out = {"em": s["exact_match"], "gold_nll": s["gold_nll"]}
    f = teacher_fidelity(model, teacher_items) if teacher_items else {}
    out["teacher_agreement"], out["teacher_kl"] = f.get("agreement"), f.get("kl")
    out["generic_nll"] = zev.generic_nll(model, n_generic)
    return out, preds_correct


def train_lora_on(model_dir, examples, steps, lr, batch, seed, r, alpha, ztrain):
    """A fresh LoRA on the target trained on ``examples`` only (the equal-budget baselines)."""
    from regraft.port.models import load_model

    m = load_model(model_dir)
    pm = ztrain.add_lora(m, r=r, alpha=alpha, seed=seed)
    torch.manual_seed(seed)
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    rng = random.Random(seed)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = ztrain.lr_at(step, steps, lr)
        pairs = [(e.prompt, e.gold + e.eos) for e in (rng.choice(examples) for _ in range(batch))]
        ids, labels, mask = ztrain.collate(pairs)
        out = pm(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    pm.eval()
    return pm


def bench_adapter(tier, name, model_dir, cfg, ztrain, seed=0, task="A"):
    """A LoRA on zoo model ``name`` trained exactly as the zoo trains its adapters (r, alpha, steps, lr, batch,
    seed and the generic-text replay: `bench.zoo.steps.lora_mixture`), cached next to the zoo. Used with
    ``--adapters bench``, and when the zoo has no adapter for a model (e.g. Pk's retrained upper bound)."""
    from bench.zoo.build import lora_recipe, member_key, tier_dir
    from bench.zoo.steps import train_lora
    from regraft.port.models import load_model

    lc = lora_recipe(cfg, task)
    d = (tier_dir(tier).with_name(tier_dir(tier).name + "-transfer")  # rebuilt when the base changes
         / f"lora-{task}-{name}-s{seed}-{member_key(tier, f'zoo/{name}')[:8]}-replay{lc.get('replay', 0.0)}")
    if (d / "adapter_config.json").exists():
        return d
    pm, _ = train_lora(load_model(model_dir), {**lc, "task": task}, lc.get("batch", cfg["batch"]), lc["seed"] + seed)
    tmp = d.with_name(d.name + f".tmp{os.getpid()}")
    pm.save_pretrained(tmp)
    p = tmp / "adapter_config.json"
    ac = json.loads(p.read_text())
    ac["base_model_name_or_path"] = str(model_dir)
    p.write_text(json.dumps(ac, indent=2))
    d.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, d)
    except OSError:  # another unit of a --jobs run trained it first: same recipe, same seed
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return d


def bootstrap_ci(xs, n=1000, seed=0):
    if not xs:
        return None
    rng = random.Random(seed)
    m = len(xs)
    means = sorted(sum(xs[rng.randrange(m)] for _ in range(m)) / m for _ in range(n))
    return [means[int(0.025 * n)], means[int(0.975 * n) - 1]]


def gr(x, base, up):
    d = up - base
    if x is None or abs(d) < 1e-9:
        return None
    return (x - base) / d


def run(args):
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    build_zoo, zoo_path, load_task, zev, ztrain, world = _zoo()
    from bench.zoo.build import tier_config
    from regraft.port.methods.auto import decide
    from regraft.port.models import load_model, load_tokenizer
    from regraft.port.methods.distill.training import distill_adapter
    from regraft.port.methods.project.projection import project_adapter
    from regraft.port.teacher import LocalTeacher

    cfg = tier_config(args.tier)
    members = set(cfg["models"])
    pairs = [p for p in (args.pairs or PAIRS) if PAIRS[p][0] in members and PAIRS[p][1] in members]
    lora_cfg = __import__("bench.zoo.build", fromlist=["lora_recipe"]).lora_recipe(cfg, args.task)
    task = args.task
    seed_list = args.seed_list if args.seed_list is not None else list(range(args.seeds))
    main_proc = 0 in seed_list  # the seed-free conditions (base, source+adapter, copy, project, retrained)
    T = load_task(task)
    test_prompts = [e.prompt for e in T.test]
    seeds5 = [e.prompt for e in T.train[:5]]
    calib = world.generic_texts(args.n_calib, seed=555)  # generic text, not the side-effect set (seed 777)
    work = Path(tempfile.mkdtemp(prefix="regraft-transfer-bench-"))
    res = {"tier": args.tier, "task": task, "seeds": args.seeds, "seed_list": seed_list, "adapters": args.adapters,
           "budgets": args.budgets, "n_test": args.n_test,
           "threads": args.threads, "pairs": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "command": " ".join(["python", "bench/port_methods.py"] + sys.argv[1:]), "torch": torch.__version__}
    from bench.zoo.build import CODE_VERSION, tier_dir

    res["zoo"] = {"dir": str(tier_dir(args.tier)), "code_version": CODE_VERSION}
    tok = None
    teacher_cache = {}
    t_all = time.perf_counter()
    for pname in pairs:
        src, tgt, _ = PAIRS[pname]
        print(f"== {pname}", flush=True)
        S_dir, T_dir = zoo_path(args.tier, src), zoo_path(args.tier, tgt)
        A_dir = adapter_for(args, cfg, src, S_dir, ztrain, zoo_path, task)
        tok = tok or load_tokenizer(S_dir)
        P = {"source": src, "target": tgt, "conditions": {}}
        res["pairs"][pname] = P
        try:
            P["auto_decision"] = decide(A_dir, S_dir, T_dir)
        except Exception as e:  # noqa: BLE001
            P["auto_decision"] = {"error": str(e)}
        if src not in teacher_cache:
            t = LocalTeacher(S_dir, A_dir, tok, stop_ids=[0, 2])
            items = t.label(test_prompts[:args.n_teacher])
            sc, correct = score(t.model, zev, task, args.n_test, items, args.n_generic)
            sc["em_items"] = correct
            teacher_cache[src] = (items, sc)
            del t
        items, src_sc = teacher_cache[src]
        C = P["conditions"]

        def record(name, model, seed=0, extra=None, wall=None, mem=None):
            s, correct = score(model, zev, task, args.n_test, items, args.n_generic)
            s["em_items"] = correct
            s.update(extra or {})
            if wall is not None:
                s["wall_s"] = round(wall, 2)
            if mem is not None:
                s["peak_rss_mb"] = mem
            C.setdefault(name, {"runs": []})["runs"].append({"seed": seed, **s})
            print(f"  {name:14s} seed {seed}: EM {s['em']:.3f} NLL {s['gold_nll']:.3f} agree "
                  f"{s['teacher_agreement']} generic {s['generic_nll']:.3f}"
                  + (f" ({wall:.0f}s)" if wall else ""), flush=True)

        from peft import PeftModel

        if main_proc:
            C["source+adapter"] = {"runs": [{"seed": 0, **src_sc}]}
            record("target base", load_model(T_dir))
            # retrained upper bound: a target LoRA on the full data with the source's recipe (the zoo's, or one per
            # seed with --adapters bench)
            for seed in ([] if "retrained" in args.skip else [0] if args.adapters == "zoo" else range(args.seeds)):
                t0 = time.perf_counter()
                peak_reset()
                up = adapter_for(args, cfg, tgt, T_dir, ztrain, zoo_path, task, seed)
                m = PeftModel.from_pretrained(load_model(T_dir), str(up)).eval()
                record("retrained", m, seed, {"adapter": str(up)}, time.perf_counter() - t0, peak())
        # copy
        if main_proc and P["auto_decision"].get("same_shapes") and "copy" not in args.skip:
            from peft import PeftModel

            record("copy", PeftModel.from_pretrained(load_model(T_dir), str(A_dir)).eval(),
                   extra={"sigma": P["auto_decision"].get("sigma")})
        # project
        if main_proc and "project" not in args.skip:
            t0 = time.perf_counter()
            out = work / f"{pname}-project"
            rep = project_adapter(A_dir, S_dir, T_dir, out, calib_texts=calib, show_progress=False, force=True)
            record("project", PeftModel.from_pretrained(load_model(T_dir), str(out)).eval(), 0,
                   {"gamma": rep.details.get("gamma"), "layer_map": rep.details["layer_map"]["target_to_source"],
                    "notes": rep.notes}, time.perf_counter() - t0, rep.peak_rss_mb)
        if args.no_distill or "distill" in args.skip:
            continue
        for N in args.budgets:
            for seed in seed_list:
                out = work / f"{pname}-distill{N}-{seed}"
                rep = distill_adapter(A_dir, S_dir, T_dir, out, seeds=seeds5, n_prompts=N, loss=args.loss,
                                      init="project" if args.init == "project" else None, calib_texts=calib,
                                      steps=args.distill_steps, seed=seed, patience=args.patience,
                                      token_frac=args.token_frac, gate_min_gain=args.gate_min_gain,
                                      sample_frac=args.sample_frac, exclude=test_prompts, show_progress=False,
                                      lr=lora_cfg["lr"] if args.lr is None else args.lr,
                                      force=True, work_dir=work, keep_generic=args.keep_generic)
                tr = rep.details["training"]
                record(f"distill-{N}", PeftModel.from_pretrained(load_model(T_dir), str(out)).eval(), seed,
                       {"steps_run": tr["steps_run"], "best_step": tr["best_step"],
                        "leakage": rep.details.get("leakage"), "teacher_prompts": rep.details["teacher"]["labelled"],
                        "train_tokens": tr["train_tokens"], "init": rep.details["student"]["init"],
                        "init_gate": rep.details.get("init_gate")},
                       rep.seconds, rep.peak_rss_mb)
        for k in args.baselines:
            for seed in seed_list:
                t0 = time.perf_counter()
                peak_reset()
                m = train_lora_on(T_dir, T.train[:k] if seed == 0 else random.Random(seed).sample(T.train, k),
                                  args.steps, lora_cfg["lr"], lora_cfg.get("batch", cfg["batch"]), 1000 + seed,
                                  lora_cfg["r"],
                                  lora_cfg["alpha"], ztrain)
                record(f"lora-{k}", m, seed, None, time.perf_counter() - t0, peak())
        _save(res, args)  # partial results survive an interrupted run
    res["wall_s"] = round(time.perf_counter() - t_all, 1)
    if args.raw:
        _save(res, args)
        return res
    _summarise(res)
    _save(res, args)
    return res


def adapter_for(args, cfg, model, model_dir, ztrain, zoo_path, task, seed=0):
    """The LoRA of ``task`` on zoo model ``model``: the zoo's own (source adapters and retrained upper bounds,
    ``--adapters zoo``, the default), else one trained by `bench_adapter` (``--adapters bench``, or when the tier
    does not build that adapter)."""
    from bench.zoo.build import member_names

    if args.adapters == "zoo" and seed == 0 and f"lora/{task}/{model}" in member_names(args.tier):
        return zoo_path(args.tier, f"lora/{task}/{model}")
    return bench_adapter(args.tier, model, model_dir, cfg, ztrain, seed, task)


def run_parallel(args, argv):
    """One child process (1 torch thread) per (pair, seed) unit, ``--jobs`` at a time; the raw results are merged
    in pair and seed order. The seed-0 unit of a pair also measures its seed-free conditions."""
    import subprocess

    cfg = __import__("bench.zoo.build", fromlist=["tier_config"]).tier_config(args.tier)
    pairs = [p for p in (args.pairs or PAIRS) if PAIRS[p][0] in cfg["models"] and PAIRS[p][1] in cfg["models"]]
    units = [(p, s) for s in range(args.seeds) for p in pairs]  # seed 0 of every pair first (the longest units)
    tmp = Path(tempfile.mkdtemp(prefix="regraft-transfer-jobs-"))
    t0 = time.perf_counter()
    running, done = [], []
    while units or running:
        while units and len(running) < args.jobs:
            (p, s), units = units[0], units[1:]
            i = len(done) + len(running)
            cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--jobs", "1", "--raw", "--out-dir",
                   str(tmp / str(i)), "--seed-list", str(s), "--pairs", p]
            log = open(tmp / f"{i}.log", "w")
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO)), log, i, p, s))
            print(f"unit {i}: {p} seed {s} (log {tmp / f'{i}.log'})", flush=True)
        time.sleep(1.0)
        for u in [u for u in running if u[0].poll() is not None]:
            running.remove(u)
            u[1].close()
            if u[0].returncode != 0:
                for v in running:
                    v[0].kill()
                raise SystemExit(f"transfer bench unit {u[3]} seed {u[4]} failed (exit {u[0].returncode}); "
                                 f"see {tmp / f'{u[2]}.log'}")
            done.append(u)
            print(f"  done {u[3]} seed {u[4]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    res = merge_units(tmp)
    res["jobs"] = args.jobs
    res["command"] = " ".join(["python", "bench/port_methods.py"] + argv)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    _summarise(res)
    _save(res, args)
    return res


def merge_units(tmp: Path) -> dict:
    """Merge the raw results of the finished (pair, seed) units under ``tmp`` (a --jobs run's directory, also after
    an interrupted run: ``--merge DIR``), in pair order of the first unit and seed order."""
    parts = {}
    for f in sorted(Path(tmp).glob("*/transfer_*.json")):
        r = json.loads(f.read_text())
        if "wall_s" not in r:  # the unit did not finish
            continue
        for p in r["pairs"]:
            parts[(p, r["seed_list"][0])] = r
    if not parts:
        raise SystemExit(f"no finished units under {tmp}")
    order = list(dict.fromkeys(p for p, _ in sorted(parts, key=lambda k: (k[1], list(PAIRS).index(k[0])))))
    seeds = sorted({s for _, s in parts})
    res = dict(parts[min(parts, key=lambda k: (k[1], list(PAIRS).index(k[0])))])
    res["pairs"] = {}
    for p in order:
        if (p, 0) not in parts:  # the seed-free conditions live in the seed-0 unit
            continue
        for s in seeds:
            if (p, s) not in parts:
                continue
            P = parts[(p, s)]["pairs"][p]
            if p not in res["pairs"]:
                res["pairs"][p] = {k: v for k, v in P.items() if k != "conditions"} | {"conditions": {}}
            C = res["pairs"][p]["conditions"]
            for name, c in P["conditions"].items():
                C.setdefault(name, {"runs": []})["runs"].extend(c["runs"])
    res["seed_list"] = seeds
    res["seeds"] = len(seeds)
    res["units"] = {f"{p} seed {s}": v.get("wall_s") for (p, s), v in sorted(parts.items())}
    # the parents' commands, not the units' (several when units of two runs were put in one folder to merge)
    res["command"] = " ; ".join(dict.fromkeys(v["command"].split(" --jobs 1 --raw")[0]
                                              for _, v in sorted(parts.items(), key=lambda kv: kv[0][1])))
    res["wall_s"] = round(sum(res["units"].values()), 1)  # CPU-side: the sum over units (they ran in parallel)
    return res


def seed_ci(mean, std, n):
    """95% t-interval of a mean over ``n`` seeds (Student t, n - 1 degrees of freedom); None for one seed. Over
    seeds, not items: the spread that retraining with another seed gives."""
    if n < 2 or std is None:
        return None
    from scipy.stats import t

    h = float(t.ppf(0.975, n - 1)) * std / n ** 0.5
    return [mean - h, mean + h]


def _answer_lengths(res) -> list[int] | None:
    """Task A: the gold answer length of each scored test item (the synthetic prompts' length coverage shows
    there); None for the other tasks."""
    if res.get("task") != "A":
        return None
    from bench.zoo import world
    from bench.zoo.build import tier_config

    tier_config(res["tier"])  # sets the tier's world (Task A lengths)
    return [len(e.gold) for e in world.load_task("A").test[:res["n_test"]]]


def _summarise(res):
    lengths = _answer_lengths(res)
    for P in res["pairs"].values():
        C = P["conditions"]
        base = C["target base"]["runs"][0]
        up = C.get("retrained", {}).get("runs", [])
        up_em = sum(r["em"] for r in up) / len(up) if up else None
        up_nll = sum(r["gold_nll"] for r in up) / len(up) if up else None
        P["gr_reference"] = {"base_em": base["em"], "retrained_em": up_em, "base_nll": base["gold_nll"],
                             "retrained_nll": up_nll}
        for name, c in C.items():
            runs = c["runs"]
            ems = [r["em"] for r in runs]
            c["em"] = sum(ems) / len(ems)
            c["em_std"] = (sum((e - c["em"]) ** 2 for e in ems) / (len(ems) - 1)) ** 0.5 if len(ems) > 1 else None
            c["em_seed_ci95"] = seed_ci(c["em"], c["em_std"], len(ems))
            pooled = [x for r in runs for x in r.get("em_items", [])]
            c["em_ci95"] = bootstrap_ci(pooled)
            if lengths and all(len(r.get("em_items", [])) == len(lengths) for r in runs):
                by = {}
                for r in runs:
                    for n, x in zip(lengths, r["em_items"]):
                        by.setdefault(n, []).append(x)
                c["em_by_answer_length"] = {str(n): round(sum(v) / len(v), 3) for n, v in sorted(by.items())}
            c["gold_nll"] = sum(r["gold_nll"] for r in runs) / len(runs)
            c["generic_nll"] = sum(r["generic_nll"] for r in runs) / len(runs)
            ag = [r["teacher_agreement"] for r in runs if r.get("teacher_agreement") is not None]
            kl = [r["teacher_kl"] for r in runs if r.get("teacher_kl") is not None]
            c["teacher_agreement"] = sum(ag) / len(ag) if ag else None
            c["teacher_kl"] = sum(kl) / len(kl) if kl else None
            w = [r["wall_s"] for r in runs if "wall_s" in r]
            c["wall_s"] = sum(w) / len(w) if w else None
            m = [r["peak_rss_mb"] for r in runs if "peak_rss_mb" in r]
            c["peak_rss_mb"] = max(m) if m else None
            if up_em is not None:
                c["gr"] = gr(c["em"], base["em"], up_em)
                c["gr_runs"] = [gr(e, base["em"], up_em) for e in ems]
                c["gr_ci95"] = [gr(x, base["em"], up_em) for x in c["em_ci95"]] if c["em_ci95"] else None
                c["gr_seed_ci95"] = [gr(x, base["em"], up_em) for x in c["em_seed_ci95"]] if c["em_seed_ci95"] else None
                c["gr_nll"] = gr(c["gold_nll"], base["gold_nll"], up_nll)
        for c in C.values():
            for r in c["runs"]:
                r.pop("em_items", None)
    res["targets"] = _targets(res)


def _targets(res):
    out = {}
    for p in ("S->T3", "SM->T3"):
        C = res["pairs"].get(p, {}).get("conditions", {})
        ds = {k: v for k, v in C.items() if k.startswith("distill-") and int(k.split("-")[1]) <= 1024}
        if not ds:
            out[f"distill GR >= 0.8 on {p}, beating lora-100"] = "not measured"
            continue
        best = max(ds, key=lambda k: ds[k].get("gr") or -9)
        g = ds[best].get("gr")
        l100 = C.get("lora-100", {}).get("em")
        if g is None:
            verdict = "GR undefined"
        elif l100 is None:
            verdict = (f"{'GR part met' if g >= 0.8 else 'NOT MET'}: best {best} GR {g:.3f} (EM {ds[best]['em']:.3f});"
                       " lora-100 not measured in this run")
        else:
            met = g >= 0.8 and ds[best]["em"] > l100
            sci = ds[best].get("gr_seed_ci95")
            verdict = (f"{'MET' if met else 'NOT MET'}: best {best} GR {g:.3f} (EM {ds[best]['em']:.3f} vs lora-100 "
                       f"{l100:.3f})" + (f"; seed 95% CI of GR {sci[0]:.2f}–{sci[1]:.2f}"
                                         + (" (lower bound under 0.8)" if sci[0] < 0.8 else "") if sci else ""))
        out[f"distill GR >= 0.8 on {p}, beating lora-100"] = verdict
    C = res["pairs"].get("Pk", {}).get("conditions", {})
    g = C.get("project", {}).get("gr")
    v = "not measured" if g is None else f"{'MET' if g >= 0.95 else 'NOT MET'}: GR {g:.3f}"
    sg = C.get("source+adapter", {}).get("gr")
    if g is not None and sg:  # an exact projection can only recover what the source's adapter itself recovers
        v += (f" (source+adapter's own GR {sg:.3f}: the projection recovers {g / sg:.3f} of it; teacher agreement "
              f"{_fmt(C['project'].get('teacher_agreement'))})")
    out["project GR >= 0.95 on Pk"] = v
    return out


def _fmt(x, nd=3):
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return f"{x:.{nd}f}"


def _save(res, args):
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"transfer_{args.tier}{args.tag}"
    tmp = stem.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1, default=str))
    os.replace(tmp, stem.with_suffix(".json"))
    if "targets" not in res:
        return
    per_pair = {p: len({r["seed"] for c in P["conditions"].values() for r in c["runs"]})
                for p, P in res["pairs"].items()}
    seeds_txt = (f"{res['seeds']} seed(s)" if len(set(per_pair.values())) <= 1 else
                 "seeds: " + ", ".join(f"{p} {n}" for p, n in per_pair.items()))
    L = [f"# Transfer benchmark ({args.tier} tier, task {res['task']}, {seeds_txt})", "",
         f"Command: `{res['command']}` ({res.get('wall_s')} s total, {res['threads']} thread(s), torch "
         f"{res['torch']}). GR = (EM_X - EM_target_base) / (EM_retrained - EM_target_base); "
         "GR_nll the same on gold NLL. EM ± std over seeds. CI: 95% bootstrap over test items (pooled over seeds); "
         "seed CI: 95% Student-t interval of the mean over seeds (the spread of retraining). "
         "Agreement/KL: teacher-forced on source+adapter's greedy completions of test prompts (measurement only).",
         "", "## Pre-registered targets", ""]
    for k, v in res["targets"].items():
        L.append(f"- {k}: **{v}**")
    L += ["", "## Results", "",
          "| pair | condition | EM | EM 95% CI | GR | GR 95% CI | GR seed 95% CI | GR_nll | gold NLL | agree | KL | "
          "generic NLL | wall s | peak MB |", "|" + "---|" * 14]
    for pname, P in res["pairs"].items():
        for name, c in P["conditions"].items():
            ci = c.get("em_ci95")
            gci = c.get("gr_ci95")
            sci = c.get("gr_seed_ci95")
            L.append(f"| {pname} | {name} | {_fmt(c['em'])}{'' if c.get('em_std') is None else ' ± ' + _fmt(c['em_std'])}"
                     f" | {'-' if not ci else _fmt(ci[0]) + '–' + _fmt(ci[1])} | {_fmt(c.get('gr'), 2)} | "
                     f"{'-' if not gci or None in gci else _fmt(gci[0], 2) + '–' + _fmt(gci[1], 2)} | "
                     f"{'-' if not sci or None in sci else _fmt(sci[0], 2) + '–' + _fmt(sci[1], 2)} | "
                     f"{_fmt(c.get('gr_nll'), 2)} | {_fmt(c['gold_nll'])} | {_fmt(c['teacher_agreement'])} | "
                     f"{_fmt(c['teacher_kl'])} | {_fmt(c['generic_nll'])} | {_fmt(c.get('wall_s'), 1)} | "
                     f"{_fmt(c.get('peak_rss_mb'), 0)} |")
    lens = sorted({n for P in res["pairs"].values() for c in P["conditions"].values()
                   for n in c.get("em_by_answer_length", {})}, key=int)
    if lens:
        L += ["", "## EM by answer length (task A; pooled over seeds)", "",
              "| pair | condition | " + " | ".join(f"{n} letters" for n in lens) + " |",
              "|" + "---|" * (2 + len(lens))]
        for pname, P in res["pairs"].items():
            for name, c in P["conditions"].items():
                b = c.get("em_by_answer_length")
                if b and name != "target base":
                    L.append(f"| {pname} | {name} | " + " | ".join(_fmt(b.get(n), 2) for n in lens) + " |")
    L += ["", "## auto decisions", ""]
    for pname, P in res["pairs"].items():
        d = P.get("auto_decision", {})
        L.append(f"- {pname}: {d.get('method')} — {d.get('why', d.get('error'))}")
    stem.with_suffix(".md").write_text("\n".join(L) + "\n")
    _plot(res, stem.with_suffix(".png"))


YMAX = 1.3  # GR axis limit of the plot; larger values (a weak upper bound) are clipped and printed


def _plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(res["pairs"])
    conds = []
    for P in res["pairs"].values():
        for c in P["conditions"]:
            if c not in conds and c not in ("target base",):
                conds.append(c)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(pairs) * 1.2), 4.5))
    w = 0.8 / max(len(conds), 1)
    for k, c in enumerate(conds):
        xs, ys, es = [], [], []
        for i, p in enumerate(pairs):
            cc = res["pairs"][p]["conditions"].get(c)
            if cc is None or cc.get("gr") is None:
                continue
            xs.append(i + k * w - 0.4 + w / 2)
            ys.append(cc["gr"])
            ci = cc.get("gr_seed_ci95") or cc.get("gr_ci95")
            es.append([max(0.0, cc["gr"] - ci[0]), max(0.0, ci[1] - cc["gr"])] if ci and None not in ci else [0, 0])
        if xs:
            ax.bar(xs, [min(y, YMAX) for y in ys], w, label=c, capsize=2,
                   yerr=[[min(e[0], max(0.0, YMAX - 0.02)) if y > YMAX else e[0] for e, y in zip(es, ys)],
                         [0.0 if y > YMAX else e[1] for e, y in zip(es, ys)]] if es else None)
            for x, y in zip(xs, ys):
                if y > YMAX:  # a weak upper bound (e.g. T3p's retrained LoRA): clip, print the value
                    ax.text(x, YMAX, f"{y:.1f}", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), YMAX + 0.15)
    ax.set_xticks(range(len(pairs)))
    ax.set_xticklabels(pairs)
    ax.set_ylabel("gap recovered (EM)")
    ax.set_title(f"LoRA transfer, {res['tier']} tier, task {res['task']}: GR by pair and condition (95% CI: over "
                 f"{'seeds' if res.get('seeds', 1) > 1 else 'test items'})")
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tier", default="smoke")
    ap.add_argument("--pairs", nargs="*", choices=list(PAIRS))
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--budgets", type=int, nargs="*", default=[64, 256, 1024])
    ap.add_argument("--baselines", type=int, nargs="*", default=[5, 100])
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps for the lora-k baselines")
    ap.add_argument("--distill-steps", type=int, default=1500,
                    help="max optimiser steps for distill (early stop on its synthetic val; the library's default)")
    ap.add_argument("--patience", type=int, default=10, help="distill early-stop patience (evaluations, every 25 steps)")
    ap.add_argument("--token-frac", type=float, default=0.7, help="distill: top fraction of tokens by excess in the loss")
    ap.add_argument("--gate-min-gain", type=float, default=0.2,
                    help="distill: keep the projection init only if it closes this fraction of the teacher KL")
    ap.add_argument("--sample-frac", type=float, default=0.0,
                    help="distill: fraction of the synthetic prompts sampled from the source+adapter (rest: seeds)")
    ap.add_argument("--loss", default="logit", choices=("logit", "seq", "delta"))
    ap.add_argument("--init", default="project", choices=("project", "none"))
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--n-teacher", type=int, default=200)
    ap.add_argument("--n-generic", type=int, default=200)
    ap.add_argument("--n-calib", type=int, default=200)
    ap.add_argument("--lr", type=float, help="distillation lr (default: the zoo's LoRA lr, as for lora-k)")
    ap.add_argument("--no-distill", action="store_true")
    ap.add_argument("--skip", nargs="*", default=[], choices=("retrained", "copy", "project", "distill"),
                    help="conditions not to run (the CI test skips what it does not assert; GR needs retrained)")
    ap.add_argument("--keep-generic", type=float, default=1.0,
                    help="distill's side-effect guard weight (0: off; 1, the CLI's default with --calib)")
    ap.add_argument("--task", default="A", choices=("A", "B", "C"))
    ap.add_argument("--adapters", default="zoo", choices=("zoo", "bench"),
                    help="source adapters and retrained upper bounds: the zoo's (default) or trained here by "
                         "bench_adapter with the zoo's recipe (one retrained bound per seed)")
    ap.add_argument("--jobs", type=int, default=1, help="run the (pair, seed) units in N child processes at a time")
    ap.add_argument("--seed-list", type=int, nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="", help="suffix of the result files (transfer_<tier><tag>.*)")
    ap.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    ap.add_argument("--merge", metavar="DIR", help="merge the finished units of an interrupted --jobs run's DIR "
                    "(regraft-transfer-jobs-*) and write the results")
    args = ap.parse_args(argv)
    if args.merge:
        res = merge_units(Path(args.merge))
        res["command"] += f" # merged with --merge from the finished units: {', '.join(res['units'])}; total s = sum over units"
        _summarise(res)
        _save(res, args)
    elif args.jobs > 1 and args.seed_list is None:
        res = run_parallel(args, list(sys.argv[1:] if argv is None else argv))
    else:
        res = run(args)
    if "targets" in res:
        print(json.dumps(res["targets"], indent=1))


if __name__ == "__main__":
    main()
