"""The closed-form transport frontier (issue 17): transport variants beside project, distill and lora-N on zoo pairs.

Rows per pair: target base, source+adapter, retrained (upper bound), project, transport:{theseus,ariadne,bico} at
two calibration draws (seed 0 and 1: the noise floor of the closed form), distill-N from the standard init (the
projection behind its gate, as shipped) and distill-N initialised from the best closed-form variant on the
calibration seed 0 (`--init-from`), lora-k baselines. Metrics: EM, GR = (EM - base) / (retrained - base), the
negative-flip rate (test items the source+adapter gets right and the ported adapter gets wrong, over the items the
source+adapter gets right), gold NLL, generic-text NLL (side effect vs the target base), wall seconds.

    python bench/transfer_frontier.py --tier smoke --pairs S->T3 --budgets 64 256 --seeds 1
    python bench/transfer_frontier.py --tier standard --pairs S->T3 SM->T3 S->T2 --seeds 3
    python bench/transfer_frontier.py --merge a.json b.json --tag _standard   # one table from per-pair runs
Writes bench/results/transfer_frontier[<tag>].{json,md,png}; partial results are saved after every pair.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: `python bench/transfer_frontier.py`
    sys.path.insert(0, str(REPO))

import torch

from bench import port_methods as PM

VARIANTS = ("theseus", "ariadne", "bico")
MACHINE = "2-core machine shared with other jobs"


def neg_flip(src_items, items):
    """Fraction of the items the source+adapter gets right that ``items`` gets wrong (None without any right)."""
    right = [i for i, x in enumerate(src_items) if x]
    if not right:
        return None
    return sum(1 for i in right if not items[i]) / len(right)


def run(args):
    torch.set_num_threads(args.threads)
    import transformers
    from peft import PeftModel

    transformers.logging.set_verbosity_error()
    _, zoo_path, load_task, zev, ztrain, world = PM._zoo()
    from bench.zoo.build import lora_recipe, tier_config
    from regraft.port.methods.distill.training import distill_adapter
    from regraft.port.methods.project.projection import project_adapter
    from regraft.port.methods.transport import transport_adapter
    from regraft.port.models import load_model, load_tokenizer
    from regraft.port.teacher import LocalTeacher

    cfg = tier_config(args.tier)
    lora_cfg = lora_recipe(cfg, "A")
    T = load_task("A")
    test_prompts = [e.prompt for e in T.test]
    seeds5 = [e.prompt for e in T.train[:5]]
    calib = world.generic_texts(args.n_calib, seed=555)
    work = Path(tempfile.mkdtemp(prefix="regraft-frontier-"))
    res = {"tier": args.tier, "pairs": {}, "budgets": args.budgets, "seeds": args.seeds, "n_test": args.n_test,
           "command": " ".join(["python", "bench/transfer_frontier.py"] + sys.argv[1:]), "torch": torch.__version__,
           "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "threads": args.threads,
           "machine": args.machine, "load_average_at_start": [round(x, 1) for x in os.getloadavg()]}
    t_all = time.perf_counter()
    for pname in args.pairs:
        src, tgt, _ = PM.PAIRS[pname]
        S_dir, T_dir = zoo_path(args.tier, src), zoo_path(args.tier, tgt)
        A_dir = PM.adapter_for(args, cfg, src, S_dir, ztrain, zoo_path, "A")
        tok = load_tokenizer(S_dir)
        print(f"== {pname}", flush=True)
        t = LocalTeacher(S_dir, A_dir, tok, stop_ids=[0, 2])
        items = t.label(test_prompts[:args.n_teacher])
        src_sc, src_ok = PM.score(t.model, zev, "A", args.n_test, items, args.n_generic)
        del t
        C: dict = {}
        res["pairs"][pname] = {"source": src, "target": tgt, "conditions": C}

        def record(name, model, seed=0, extra=None, wall=None, C=C, items=items, src_ok=src_ok):
            s, ok = PM.score(model, zev, "A", args.n_test, items, args.n_generic)
            s["neg_flip"] = neg_flip(src_ok, ok)
            s.update(extra or {})
            if wall is not None:
                s["wall_s"] = round(wall, 1)
            C.setdefault(name, {"runs": []})["runs"].append({"seed": seed, **s})
            print(f"  {name:24s} seed {seed}: EM {s['em']:.3f} NLL {s['gold_nll']:.3f} NF {s['neg_flip']} generic "
                  f"{s['generic_nll']:.3f}" + (f" ({wall:.0f}s)" if wall else ""), flush=True)
            if "retrained" in C:  # partial results survive an interrupted run
                summarise(res)
                save(res, args)

        C["source+adapter"] = {"runs": [{"seed": 0, **src_sc, "neg_flip": 0.0}]}
        record("target base", load_model(T_dir))
        up = PM.adapter_for(args, cfg, tgt, T_dir, ztrain, zoo_path, "A")
        record("retrained", PeftModel.from_pretrained(load_model(T_dir), str(up)).eval())
        t0 = time.perf_counter()
        out = work / f"{pname}-project"
        project_adapter(A_dir, S_dir, T_dir, out, calib_texts=calib, show_progress=False, force=True)
        record("project", PeftModel.from_pretrained(load_model(T_dir), str(out)).eval(), 0, None,
               time.perf_counter() - t0)
        closed = {}
        for v in args.variants:
            for cs in args.calib_seeds:
                t0 = time.perf_counter()
                out = work / f"{pname}-{v}-c{cs}"
                rep = transport_adapter(A_dir, S_dir, T_dir, out, variant=v, seeds=seeds5, calib_texts=calib,
                                        n_task=args.n_task, seed=cs, exclude=test_prompts, force=True)
                record(f"transport:{v}", PeftModel.from_pretrained(load_model(T_dir), str(out)).eval(), cs,
                       {"calib_seed": cs, "gamma": rep.details.get("gamma"), "notes": rep.notes,
                        "source_pass": rep.details.get("source_pass")}, time.perf_counter() - t0)
                if cs == args.calib_seeds[0]:
                    closed[v] = (out, C[f"transport:{v}"]["runs"][-1]["em"], C[f"transport:{v}"]["runs"][-1]["gold_nll"])
        # best closed form: EM on calibration seed 0, ties (e.g. all 0) broken by the lower gold NLL
        best = max(closed, key=lambda k: (closed[k][1], -closed[k][2])) if closed else None
        res["pairs"][pname]["best_closed_form"] = best
        for N in args.budgets:
            for seed in (args.seed_list if args.seed_list is not None else range(args.seeds)):
                inits = [("distill", "project")] + ([(f"distill<-{best}", closed[best][0])] if best else [])
                for label, init in inits:
                    if args.only_init and label == "distill":
                        continue
                    t0 = time.perf_counter()
                    out = work / f"{pname}-{label.replace('<-', '-')}{N}-{seed}"
                    rep = distill_adapter(A_dir, S_dir, T_dir, out, seeds=seeds5, n_prompts=N, init=init,
                                          calib_texts=calib, steps=args.distill_steps, seed=seed,
                                          patience=args.patience, exclude=test_prompts, show_progress=False,
                                          lr=lora_cfg["lr"], force=True, work_dir=work, keep_generic=1.0,
                                          gate_init=label == "distill")
                    tr = rep.details["training"]
                    record(f"{label}-{N}", PeftModel.from_pretrained(load_model(T_dir), str(out)).eval(), seed,
                           {"steps_run": tr["steps_run"], "best_step": tr["best_step"],
                            "init": rep.details["student"]["init"]}, time.perf_counter() - t0)
        for k in args.baselines:
            t0 = time.perf_counter()
            m = PM.train_lora_on(T_dir, T.train[:k], args.steps, lora_cfg["lr"], lora_cfg.get("batch", cfg["batch"]),
                                 1000, lora_cfg["r"], lora_cfg["alpha"], ztrain)
            record(f"lora-{k}", m, 0, None, time.perf_counter() - t0)
        summarise(res)
        save(res, args)
    res["wall_s"] = round(time.perf_counter() - t_all, 1)
    summarise(res)
    save(res, args)
    return res


def merge(args):
    """One result from several runs (e.g. one process per pair, seed and budget): pairs and commands joined.

    Runs of the same pair are pooled per condition; a run (condition, seed) already present is kept once (the
    seed-free rows every process recomputes: base, retrained, project, transport on the same calibration draw).
    The best closed form must agree across the runs of a pair (it is chosen on calibration seed 0, deterministic).
    """
    runs = [json.loads(Path(f).read_text()) for f in args.merge]
    res = {**runs[0], **({"machine": args.machine} if args.machine != MACHINE else {}), "pairs": {}, "command": " ; ".join(r["command"] for r in runs),
           "wall_s": (f"{len(runs)} processes, longest {max(r['wall_s'] for r in runs)}"
                      if all(isinstance(r.get("wall_s"), (int, float)) for r in runs)
                      else " + ".join(str(r.get("wall_s", "partial")) for r in runs))}
    for r in runs:
        for name, P in r["pairs"].items():
            if name not in res["pairs"]:
                res["pairs"][name] = json.loads(json.dumps(P))
                continue
            M = res["pairs"][name]
            if None not in (P.get("best_closed_form"), M.get("best_closed_form")) and \
                    P["best_closed_form"] != M["best_closed_form"]:
                raise SystemExit(f"--merge: {name}: best closed form {P.get('best_closed_form')} in one run, "
                                 f"{M.get('best_closed_form')} in another: the runs are not of the same zoo")
            M["best_closed_form"] = M.get("best_closed_form") or P.get("best_closed_form")  # None: a partial run
            for cname, c in P["conditions"].items():
                have = M["conditions"].setdefault(cname, {"runs": []})["runs"]
                seen = {x.get("calib_seed", x.get("seed")) for x in have}
                have += [x for x in c["runs"] if x.get("calib_seed", x.get("seed")) not in seen]
    summarise(res)
    save(res, args)
    return res


def summarise(res):
    for P in res["pairs"].values():
        C = P["conditions"]
        if "target base" not in C or "retrained" not in C:
            continue
        base = C["target base"]["runs"][0]
        up = C["retrained"]["runs"][0]
        for c in C.values():
            ems = [r["em"] for r in c["runs"]]
            c["em"] = sum(ems) / len(ems)
            c["gr_runs"] = [PM.gr(e, base["em"], up["em"]) for e in ems]
            c["gr"] = PM.gr(c["em"], base["em"], up["em"])
            g = [x for x in c["gr_runs"] if x is not None]
            c["gr_spread"] = (max(g) - min(g)) if len(g) > 1 else None
            nf = [r.get("neg_flip") for r in c["runs"] if r.get("neg_flip") is not None]
            c["neg_flip"] = sum(nf) / len(nf) if nf else None
            c["generic_nll"] = sum(r["generic_nll"] for r in c["runs"]) / len(c["runs"])
            c["generic_delta"] = c["generic_nll"] - base["generic_nll"]
            c["gold_nll"] = sum(r["gold_nll"] for r in c["runs"]) / len(c["runs"])
            w = [r["wall_s"] for r in c["runs"] if "wall_s" in r]
            c["wall_s"] = sum(w) / len(w) if w else None
    res["targets"] = targets(res)


def targets(res):
    out = {}
    for p in ("S->T3", "SM->T3"):
        C = res["pairs"].get(p, {}).get("conditions")
        if not C or "retrained" not in C or "gr" not in C["retrained"]:
            continue
        best = res["pairs"][p].get("best_closed_form")
        cf = C.get(f"transport:{best}", {}).get("gr") if best else None
        out[f"{p}: closed-form alone GR >= 0.5"] = ("not measured" if cf is None else
                                                   f"{'MET' if cf >= 0.5 else 'NOT MET'}: {best} GR {cf:.3f}")
        for N, goal in ((256, 0.85), (1024, 0.95)):
            c = C.get(f"distill<-{best}-{N}") if best else None
            if c is None:
                out[f"{p}: distill-{N} GR >= {goal}"] = "not measured"
                continue
            side = c["generic_delta"]
            met = c["gr"] is not None and c["gr"] >= goal and side <= 0.1
            out[f"{p}: distill-{N} GR >= {goal}, side effect <= +0.1"] = (
                f"{'MET' if met else 'NOT MET'}: GR {PM._fmt(c['gr'])} over {len(c['runs'])} seed(s) "
                f"(runs {', '.join(PM._fmt(x, 2) for x in c['gr_runs'])}), generic NLL {side:+.3f}")
    return out


def save(res, args):
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"transfer_frontier{args.tag}"
    tmp = stem.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1, default=str))
    os.replace(tmp, stem.with_suffix(".json"))
    f = PM._fmt
    L = [f"# Closed-form transport frontier ({res['tier']} tier, task A)", "",
         (f"Command: `{res['command']}` (started {res['started']}, {res.get('wall_s', 'partial')} s wall, "
          f"{res['threads']} torch thread(s), torch {res['torch']}, {res.get('machine', '2-core machine shared with other jobs')}, load average "
          f"at start {res.get('load_average_at_start', '?')}; EM and GR do not depend on the load, wall s does)."), "",
         ("GR = (EM - EM_target_base) / (EM_retrained - EM_target_base). GR spread: max - min over runs (calibration "
         "draws for transport:*, training seeds for distill/lora): the noise floor. Neg. flip: items the "
         "source+adapter gets right and the ported adapter wrong, over those it gets right. Generic Δ: generic-text "
         "NLL minus the target base's (nats/token). distill<-V: distillation initialised from transport:V "
         "(calibration seed 0), no gate."), "", "## Targets", ""]
    for k, v in res.get("targets", {}).items():
        L.append(f"- {k}: **{v}**")
    L += ["", "## Results", "", ("| pair | condition | runs | EM | GR | GR runs | GR spread | neg. flip | gold NLL | "
                                 "generic Δ | wall s |"), "|" + "---|" * 11]
    for p, P in res["pairs"].items():
        for name, c in P["conditions"].items():
            if "gr_runs" not in c:
                continue
            L.append(f"| {p} | {name} | {len(c['runs'])} | {f(c['em'])} | {f(c.get('gr'), 2)} | "
                     f"{', '.join(f(x, 2) for x in c.get('gr_runs', []))} | {f(c.get('gr_spread'), 2)} | "
                     f"{f(c.get('neg_flip'), 2)} | {f(c.get('gold_nll'))} | {c['generic_delta']:+.3f} | "
                     f"{f(c.get('wall_s'), 1)} |")
        if P.get("best_closed_form"):
            L.append(f"| {p} | best closed form (calib seed 0) | | {P['best_closed_form']} | | | | | | | |")
    stem.with_suffix(".md").write_text("\n".join(L) + "\n")
    plot(res, stem.with_suffix(".png"))


def plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(res["pairs"])
    conds = [c for c in dict.fromkeys(k for P in res["pairs"].values() for k in P["conditions"])
             if c not in ("target base",)]
    fig, ax = plt.subplots(figsize=(max(8, 2.2 * len(pairs)), 4.5))
    w = 0.8 / max(len(conds), 1)
    for k, c in enumerate(conds):
        xs, ys, lo, hi = [], [], [], []
        for i, p in enumerate(pairs):
            cc = res["pairs"][p]["conditions"].get(c)
            if not cc or cc.get("gr") is None or not cc.get("gr_runs"):
                continue
            g = [x for x in cc["gr_runs"] if x is not None]
            xs.append(i - 0.4 + w * (k + 0.5))
            ys.append(cc["gr"])
            lo.append(cc["gr"] - min(g))
            hi.append(max(g) - cc["gr"])
        if xs:
            ax.bar(xs, ys, w, yerr=[lo, hi], capsize=2, label=c)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(range(len(pairs)))
    ax.set_xticklabels(pairs)
    ax.set_ylabel("gap recovered (EM)")
    ax.set_title(f"closed-form transport vs project/distill/lora, {res['tier']} tier (bars: min-max over runs)")
    ax.legend(fontsize=6, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tier", default="smoke")
    ap.add_argument("--pairs", nargs="*", default=["S->T3"], choices=list(PM.PAIRS))
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--calib-seeds", type=int, nargs="*", default=[0, 1])
    ap.add_argument("--n-task", type=int, default=64, help="task prompts (seeds + synthetic) in the calibration")
    ap.add_argument("--seeds", type=int, default=1, help="distillation seeds")
    ap.add_argument("--seed-list", type=int, nargs="*", help="these distillation seeds instead of 0..seeds-1 "
                    "(one process per seed, joined with --merge)")
    ap.add_argument("--budgets", type=int, nargs="*", default=[256])
    ap.add_argument("--baselines", type=int, nargs="*", default=[100])
    ap.add_argument("--only-init", action="store_true", help="skip the standard-init distill rows")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--distill-steps", type=int, default=1500)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--n-teacher", type=int, default=200)
    ap.add_argument("--n-generic", type=int, default=200)
    ap.add_argument("--n-calib", type=int, default=200)
    ap.add_argument("--adapters", default="zoo", choices=("zoo", "bench"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="")
    ap.add_argument("--machine", default=MACHINE, help="recorded in the table header")
    ap.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    ap.add_argument("--merge", nargs="*", metavar="RUN.json", help="merge finished runs (e.g. one process per pair) "
                    "into one table instead of running")
    args = ap.parse_args(argv)
    res = merge(args) if args.merge else run(args)
    print(json.dumps(res.get("targets", {}), indent=1))


if __name__ == "__main__":
    main()
