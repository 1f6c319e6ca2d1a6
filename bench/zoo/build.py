"""Tiers, the cache and the build steps of the zoo.

Layout of the cache (default ``<repo>/.zoo``, override with ``REGRAFT_ZOO_DIR``)::

    <root>/<tier>-<hash12>/            one directory per (tier config, CODE_VERSION)
        manifest.json                  per member: kind, sha256 of the weights, wall s, peak RSS, losses
        zoo/S/ zoo/T1/ ...             Hugging Face model dirs (config, safetensors, tokenizer, template)
        lora/A/S/ ...                  PEFT adapter dirs; base_model_name_or_path = "zoo/S"
        maps/Pk.json                   Pk's permutation maps (also copied into zoo/Pk/reparam_maps.json)

Each member is built in a temporary directory and renamed into place, under an exclusive file
lock on ``<root>/<tier>-<hash12>.lock``, so parallel builders (pytest-xdist workers) never race.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import resource
import shutil
import time
from pathlib import Path

CODE_VERSION = "zoo-3"
REPO = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------- shapes and tiers
TIERS: dict[str, dict] = {}  # filled below


def _tier(name, batch, tasks, models, adapters):
    TIERS[name] = {"batch": batch, "tasks": tasks, "models": models, "adapters": adapters}


def _pre(shape, seed, steps, lr):
    return {"kind": "pretrain", "shape": shape, "seed": seed, "steps": steps, "lr": lr}


LORA = {"r": 8, "alpha": 16, "seed": 100}

# smoke: everything the tests need, <= 5 min on 2 idle cores.
SMOKE_S = {"arch": "qwen2", "hidden": 48, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 128}
_tier("smoke", batch=32, tasks=["A"], models={
    "S": _pre(SMOKE_S, 0, 1000, 3e-3),
    "T1": {"kind": "continue", "from": "S", "mixture": "chat", "seed": 10, "steps": 150, "lr": 1e-3},
    "T3": _pre({"arch": "qwen3", "hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 16,
                "ffn": 128}, 1, 800, 3e-3),
    "T3p": _pre(SMOKE_S, 2, 1000, 3e-3),
    "SM": _pre({"arch": "qwen3_moe", "hidden": 48, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 128,
                "experts": 8, "top_k": 2, "moe_ffn": 32}, 3, 600, 3e-3),
    "master": {"kind": "grow", "from": "S", "seed": 11, "pad_hidden": 16, "pad_ffn": 64,
               "extra_heads_per_group": 1, "insert_identity_after": [1], "noise": 0.01,
               "mixture": "pretrain+tasks", "steps": 600, "lr": 3e-3},
    "Pk": {"kind": "reparam", "from": "S", "seed": 12, "pad_hidden": 16, "pad_ffn": 32,
           "extra_heads_per_group": 1, "insert_identity_after": [0], "steps": 0},
}, adapters={"A": ["S", "SM", "T1", "T3"]})
TIERS["smoke"]["lora"] = {**LORA, "steps": 800, "lr": 1e-2}

# standard: the table of lora_transfer.md section 7.2, tasks A-C (runs on demand; ~1 h on 2 cores).
STD_S = {"arch": "qwen2", "hidden": 64, "layers": 4, "heads": 4, "kv_heads": 2, "ffn": 192}
_tier("standard", batch=64, tasks=["A", "B", "C"], models={
    "S": _pre(STD_S, 0, 2500, 3e-3),
    "T1": {"kind": "continue", "from": "S", "mixture": "chat", "seed": 10, "steps": 375, "lr": 1e-3},
    "T2": {"kind": "grow", "from": "S", "seed": 13, "pad_hidden": 32, "pad_ffn": 96,
           "extra_heads_per_group": 1, "insert_identity_after": [1, 3], "noise": 0.01,
           "mixture": "pretrain", "steps": 1000, "lr": 2e-3},
    "T3": _pre({"arch": "qwen3", "hidden": 96, "layers": 6, "heads": 6, "kv_heads": 2, "head_dim": 16,
                "ffn": 256}, 1, 2500, 3e-3),
    "T3p": _pre(STD_S, 2, 2500, 3e-3),
    "SM": _pre({"arch": "qwen3_moe", "hidden": 64, "layers": 4, "heads": 4, "kv_heads": 2, "ffn": 192,
                "experts": 8, "top_k": 2, "moe_ffn": 48}, 3, 2500, 3e-3),
    "master": {"kind": "grow", "from": "S", "seed": 11, "pad_hidden": 32, "pad_ffn": 96,
               "extra_heads_per_group": 1, "insert_identity_after": [1, 3], "noise": 0.01,
               "mixture": "pretrain+tasks", "steps": 2000, "lr": 3e-3},
    "Pk": {"kind": "reparam", "from": "S", "seed": 12, "pad_hidden": 16, "pad_ffn": 64,
           "extra_heads_per_group": 1, "insert_identity_after": [0], "steps": 0},
}, adapters={t: ["S", "SM", "T1", "T2", "T3", "T3p"] for t in ("A", "B", "C")})
TIERS["standard"]["lora"] = {**LORA, "steps": 600, "lr": 2e-3}


def tier_config(tier: str) -> dict:
    if tier not in TIERS:
        from regraft.errors import InputError

        raise InputError(f"unknown zoo tier {tier!r}: expected one of {', '.join(TIERS)}")
    return TIERS[tier]


def tier_hash(tier: str) -> str:
    blob = json.dumps({"tier": tier_config(tier), "code": CODE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def zoo_root() -> Path:
    return Path(os.environ.get("REGRAFT_ZOO_DIR") or REPO / ".zoo")


def tier_dir(tier: str) -> Path:
    return zoo_root() / f"{tier}-{tier_hash(tier)}"


def member_names(tier: str) -> list[str]:
    cfg = tier_config(tier)
    return [f"zoo/{m}" for m in cfg["models"]] + [f"lora/{t}/{m}" for t, ms in cfg["adapters"].items() for m in ms]


def _norm(name: str) -> str:
    """'S' -> 'zoo/S'; 'lora/A/S' stays; 'S+A' -> 'lora/A/S'."""
    if name.startswith(("zoo/", "lora/")):
        return name
    if "+" in name:
        m, t = name.split("+", 1)
        return f"lora/{t}/{m}"
    return f"zoo/{name}"


def _deps(tier: str, name: str) -> list[str]:
    cfg = tier_config(tier)
    if name.startswith("lora/"):
        return [f"zoo/{name.split('/')[2]}"]
    spec = cfg["models"][name[4:]]
    return [f"zoo/{spec['from']}"] if "from" in spec else []


# ----------------------------------------------------------------- locking and measuring
@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def weights_hash(path: Path) -> str:
    """sha256 over the safetensors weight file(s) of a model or adapter dir."""
    h = hashlib.sha256()
    files = sorted(Path(path).glob("*.safetensors"))
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


# ----------------------------------------------------------------- build
def _setup_torch():
    import torch

    torch.set_num_threads(int(os.environ.get("REGRAFT_ZOO_THREADS", "1")))
    torch.use_deterministic_algorithms(True, warn_only=True)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import huggingface_hub

        huggingface_hub.utils.disable_progress_bars()
    except Exception:
        pass


def _console():
    from rich.console import Console

    return Console(stderr=True)


def build_zoo(tier: str = "smoke", only: list[str] | None = None, quiet: bool = False,
              jobs: int | None = None) -> Path:
    """Build (or reuse) every member of ``tier`` (or just ``only`` and their dependencies).

    Members are built in up to ``jobs`` child processes (default ``REGRAFT_ZOO_JOBS`` or min(4, cores)),
    one torch thread each, independent members in parallel; the weights do not depend on ``jobs``.
    Returns the tier directory. Safe to call from many processes at once.
    """
    cfg = tier_config(tier)
    root = tier_dir(tier)
    wanted = [_norm(n) for n in (only or member_names(tier))]
    order: list[str] = []

    def visit(n):
        if n in order:
            return
        if n not in member_names(tier):
            from regraft.errors import InputError

            raise InputError(f"zoo tier {tier!r} has no member {n!r}; members: {', '.join(member_names(tier))}")
        for d in _deps(tier, n):
            visit(d)
        order.append(n)

    for n in wanted:
        visit(n)
    if all((root / n).is_dir() for n in order):
        return root
    with _locked(root.with_suffix(".lock")):
        todo = [n for n in order if not (root / n).is_dir()]
        if not todo:
            return root
        console = _console()
        manifest_path = root / "manifest.json"
        man = json.loads(manifest_path.read_text()) if manifest_path.exists() else {
            "tier": tier, "hash": tier_hash(tier), "code_version": CODE_VERSION, "config": cfg, "members": {}}
        jobs = max(1, jobs or default_jobs())
        t_all = time.perf_counter()
        if not quiet:
            console.print(f"building {len(todo)} member(s) of tier {tier} into {root} ({jobs} job(s), 1 thread each)")
        done: set = set()
        running: dict = {}
        while len(done) < len(todo):
            ready = [n for n in todo if n not in done and n not in running
                     and all(d in done or (root / d).is_dir() for d in _deps(tier, n))]
            while ready and len(running) < jobs:
                n = ready.pop(0)
                running[n] = _spawn(tier, n, root, quiet)
            time.sleep(0.2)
            for n, (proc, tmp, out) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[n]
                if proc.returncode != 0:
                    for p_, _, _ in running.values():
                        p_.kill()
                    raise RuntimeError(f"building zoo member {n} failed (exit {proc.returncode}); see output above")
                info = json.loads(out.read_text())
                (root / n).parent.mkdir(parents=True, exist_ok=True)
                os.rename(tmp, root / n)
                man["members"][n] = info
                tmpm = manifest_path.with_suffix(".tmp")
                tmpm.write_text(json.dumps(man, indent=1, sort_keys=True))
                os.replace(tmpm, manifest_path)
                done.add(n)
                if not quiet:
                    console.print(f"[green]built[/] {n}: {info['wall_s']} s, peak RSS {info['peak_rss_mb']} MB, "
                                  f"sha256 {info['sha256'][:12]}  ({len(done)}/{len(todo)}, "
                                  f"{time.perf_counter() - t_all:.0f} s so far)")
        shutil.rmtree(root / ".tmp", ignore_errors=True)
        man.setdefault("builds", []).append({"members": todo, "jobs": jobs,
                                             "wall_s": round(time.perf_counter() - t_all, 1),
                                             "load": _loadavg(), "cores": os.cpu_count()})
        manifest_path.write_text(json.dumps(man, indent=1, sort_keys=True))
    return root


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def default_jobs() -> int:
    return int(os.environ.get("REGRAFT_ZOO_JOBS", "0")) or min(4, os.cpu_count() or 1)


def _spawn(tier: str, name: str, root: Path, quiet: bool):
    """Build one member in a child process (1 torch thread) into a temp dir; returns (proc, tmp, info path)."""
    import subprocess
    import sys

    tmp = root / ".tmp" / f"{name.replace('/', '_')}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    out = root / ".tmp" / f"{name.replace('/', '_')}-{os.getpid()}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep
           + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "bench.zoo._member", tier, name, str(root), str(tmp), str(out), "1" if quiet else "0"]
    return subprocess.Popen(cmd, env=env, cwd=str(REPO)), tmp, out


def _build_one(tier: str, name: str, root: Path, tmp: Path, out: Path, quiet: bool) -> None:
    """Child-process entry: build ``name`` into ``tmp`` and write its info JSON to ``out``."""
    _setup_torch()
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from . import steps

    _reset_peak_rss()
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=_console(), disable=quiet, transient=True) as progress:
        info = steps.build_member(tier, tier_config(tier), name, root, tmp, progress)
    info["wall_s"] = round(time.perf_counter() - t0, 2)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    info["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 1)  # load-independent cost (whole child incl. imports)
    info["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    info["sha256"] = weights_hash(tmp)
    out.write_text(json.dumps(info))


def zoo_path(tier: str, name: str, build: bool = True) -> Path:
    """Directory of zoo member ``name`` ("S", "T1", "zoo/S", "lora/A/S" or "S+A"), built if needed."""
    n = _norm(name)
    p = tier_dir(tier) / n
    if not p.is_dir():
        if not build:
            from regraft.errors import InputError

            raise InputError(f"zoo member {n} of tier {tier} is not built; run: python -m bench.zoo build --tier {tier}")
        build_zoo(tier, only=[n])
    return p


def manifest(tier: str) -> dict:
    p = tier_dir(tier) / "manifest.json"
    return json.loads(p.read_text()) if p.exists() else {}

