"""How much a zoo LoRA's quality depends on its seed and its step budget, on the zoo's own base (issue 17: the
standard S Task-A teacher was EM 0.87 on one build and 0.448 on another with the same member key).

    python bench/lora_seed_spread.py --tier standard --member lora/A/S --seeds 100 101 102 103 --steps 500 1000

Trains the member's recipe (`bench.zoo.steps.train_lora`, its r, alpha, lr, batch, replay) with each seed and step
count on the tier's built base (building it if needed), scores the whole test split (`bench.zoo.scores.evaluate`)
and writes bench/results/lora_seed_spread_<tier>.{json,md}. Adapters are cached beside the tier
(`<zoo>/<tier>-seed-spread/`), so a rerun only scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/lora_seed_spread.py`: the repo root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.zoo import build  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def adapter(tier: str, member: str, seed: int, steps: int) -> Path:
    """The member's recipe with ``seed`` and ``steps``, trained once and cached."""
    from bench.zoo import steps as zsteps

    cfg = build.tier_config(tier)
    _, task, base = member.split("/")
    d = build.tier_dir(tier).with_name(f"{tier}-seed-spread") / f"{task}-{base}-s{seed}-n{steps}"
    if (d / "adapter_config.json").is_file():
        return d
    spec = {**build.member_spec(cfg, member), "steps": steps}
    model = zsteps._fast(zsteps._load(build.zoo_path(tier, base)))
    pm, _ = zsteps.train_lora(model, spec, spec["batch"], seed=seed)
    tmp = d.with_name(d.name + ".tmp")
    pm.save_pretrained(tmp)
    tmp.rename(d)
    return d


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tier", default="standard")
    ap.add_argument("--member", default="lora/A/S", help="a LoRA member of the tier: lora/<task>/<base>")
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    ap.add_argument("--steps", type=int, nargs="+", default=[500, 1000])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import torch

    from bench.zoo import scores

    torch.set_num_threads(a.threads)
    if a.member not in build.member_names(a.tier):
        from regraft.errors import InputError

        raise InputError(f"{a.member} is not a member of tier {a.tier}: expected one of "
                         f"{', '.join(n for n in build.member_names(a.tier) if n.startswith('lora/'))}")
    _, task, base = a.member.split("/")
    base_dir = build.zoo_path(a.tier, base)  # built if missing or stale (no lock taken when it is fresh)
    rows = []
    for steps in a.steps:
        for seed in a.seeds:
            t = time.perf_counter()
            d = adapter(a.tier, a.member, seed, steps)
            r = scores.evaluate(base_dir, d, task=task)
            rows.append({"steps": steps, "seed": seed, "em": r["exact_match"], "gold_nll": round(r["gold_nll"], 4),
                         "n": r["n"], "wall_s": round(time.perf_counter() - t, 1)})
            print(f"{a.member} steps {steps} seed {seed}: EM {r['exact_match']:.3f}, gold NLL {r['gold_nll']:.3f}",
                  flush=True)
    man = build.manifest(a.tier)["members"]
    res = {"tier": a.tier, "member": a.member, "tier_hash": build.tier_hash(a.tier), "base_key": man[f"zoo/{base}"]["key"],
           "base_sha256": man[f"zoo/{base}"]["sha256"], "recipe": build.member_spec(build.tier_config(a.tier), a.member),
           "env": build.environment(), "rows": rows,
           "command": " ".join(["python", "bench/lora_seed_spread.py"] + (argv or sys.argv[1:]))}
    OUT.mkdir(exist_ok=True)
    (OUT / f"lora_seed_spread_{a.tier}.json").write_text(json.dumps(res, indent=1))
    lines = [f"# LoRA seed and step spread: {a.member}, tier `{a.tier}`", "",
             f"Produced by `{res['command']}`. Base `zoo/{base}` key `{res['base_key']}`, sha256 "
             f"`{res['base_sha256'][:12]}`; recipe as the zoo's except seed and steps (lr {res['recipe']['lr']}, batch "
             f"{res['recipe']['batch']}, replay {res['recipe'].get('replay', 0)}); task {task} test split, n = "
             f"{rows[0]['n'] if rows else 0}, greedy EM. Environment: {res['env']}.", "",
             "| steps | " + " | ".join(f"seed {s}" for s in a.seeds) + " |", "|---|" + "---|" * len(a.seeds)]
    for steps in a.steps:
        cells = {r["seed"]: r["em"] for r in rows if r["steps"] == steps}
        lines.append(f"| {steps} | " + " | ".join(f"{cells[s]:.3f}" for s in a.seeds) + " |")
    (OUT / f"lora_seed_spread_{a.tier}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-(len(a.steps) + 2):]))
    return res


if __name__ == "__main__":
    from regraft.errors import RegraftError

    try:
        main()
    except RegraftError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
