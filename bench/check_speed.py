"""How fast is `regraft check`, and how many bytes does it read, against the naive route?

Naive route (what people do today to find out whether an adapter fits): build the target with transformers on
the meta device and attach the adapter's LoRA config with PEFT (research/feasibility.md: ~6 s, 550 MB on the
235B shape). regraft reads config.json and safetensors headers only.

Cases: catalog pairs, and local model folders whose safetensors are real-sized but sparse on disk (real tensor
names and shapes, 61-438 GiB declared), so "reading only headers" is measured on files of the real size.

    python bench/check_speed.py            # writes bench/results/check_speed.{md,json}
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from regraft.inspection.resolve import resolve_model  # noqa: E402
from regraft.inspection.safetensors_header import DTYPE_BYTES  # noqa: E402

SHAPES = {"Qwen3-32B": "Qwen/Qwen3-32B", "Qwen3-30B-A3B": "Qwen/Qwen3-30B-A3B",
          "Qwen3-235B-A22B": "Qwen/Qwen3-235B-A22B-Instruct-2507"}
SHARD_BYTES = 5 * 2**30  # shard like the Hub does (~5 GB)


def sparse_model(folder: Path, model_id: str) -> int:
    """A local model folder with the real config and sparse, real-sized, sharded safetensors; returns bytes declared."""
    import struct

    spec = resolve_model(model_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(spec.config))
    tensors = []
    for m in spec.arch.modules("disk", expand_experts=True):
        if m.tied_to:
            continue
        for name in m.param_names():
            shape = m.shape if not name.endswith(".bias") else (m.shape[0],)
            n = 2
            for d in shape:
                n *= d
            tensors.append((name, shape, n))
    shards, cur, size = [], [], 0
    for t in tensors:
        if cur and size + t[2] > SHARD_BYTES:
            shards.append(cur)
            cur, size = [], 0
        cur.append(t)
        size += t[2]
    shards.append(cur)
    wmap, total = {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, off = {}, 0
        for name, shape, n in shard:
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
            off += n
            wmap[name] = fname
        blob = json.dumps(header).encode()
        with open(folder / fname, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            f.truncate(8 + len(blob) + off)  # sparse: declared size without using the disk
        total += off
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                      "weight_map": wmap}))
    return total


# As on a user's machine: bytecode caching on (this sandbox sets PYTHONDONTWRITEBYTECODE=1, which would make
# every cold run recompile regraft from source), and one warm-up run that writes the .pyc files.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"HF_HUB_OFFLINE": "1"}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_cmd(cmd: list[str], reps: int) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds user+sys) of each run. CPU time is what to compare when other jobs load the
    machine: wall time then includes waiting for a core."""
    subprocess.run(cmd, check=False, capture_output=True, env=ENV)  # warm-up: .pyc files, page cache
    wall, cpu = [], []
    for _ in range(reps):
        c, t = _cpu(), time.perf_counter()
        subprocess.run(cmd, check=False, capture_output=True, env=ENV)
        wall.append(time.perf_counter() - t)
        cpu.append(_cpu() - c)
    return wall, cpu


NAIVE = """
import json, sys, resource, warnings
warnings.filterwarnings("ignore")
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from peft import LoraConfig, get_peft_model
cfg = json.load(open(sys.argv[1]))
acfg = json.load(open(sys.argv[2]))
config = AutoConfig.for_model(**cfg)
with torch.device("meta"):
    model = AutoModelForCausalLM.from_config(config)
lc = LoraConfig(r=acfg["r"], lora_alpha=acfg["lora_alpha"], target_modules=acfg["target_modules"])
with torch.device("meta"):
    pm = get_peft_model(model, lc)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def main() -> None:
    from regraft.examples import materialise

    adapter = materialise("qwen3-30b-a3b-attn")
    reps = int(os.environ.get("REPS", "7"))
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        local = {}
        for short, mid in SHAPES.items():
            local[short] = (tmp / short, sparse_model(tmp / short, mid))
        cases = [(f"catalog 30B-A3B-Base -> {short}", "Qwen/Qwen3-30B-A3B-Base", mid, short) for short, mid in SHAPES.items()]
        cases += [(f"local 30B-A3B -> local {s} ({local[s][1] / 2**30:.0f} GiB)", str(local["Qwen3-30B-A3B"][0]),
                   str(local[s][0]), s) for s in SHAPES]
        naive_cache = {}
        for label, src, tgt, short in cases:
            cmd = [sys.executable, "-m", "regraft", "check", src, tgt, "--adapter", str(adapter), "--format", "json"]
            times, cpus = time_cmd(cmd, reps)
            doc = json.loads(subprocess.run(cmd, capture_output=True, text=True).stdout)
            if short not in naive_cache:
                cfgp = tmp / f"{short}.json"
                cfgp.write_text(json.dumps(resolve_model(SHAPES[short]).config))
                ncmd = [sys.executable, "-c", NAIVE, str(cfgp), str(adapter / "adapter_config.json")]
                ntimes, ncpus = time_cmd(ncmd, 3)
                rss = int(subprocess.run(ncmd, capture_output=True, text=True).stdout.strip().splitlines()[-1])
                naive_cache[short] = (statistics.median(ntimes), statistics.median(ncpus), rss)
            nt, ncpu, nrss = naive_cache[short]
            med, cpu = statistics.median(times), statistics.median(cpus)
            rows.append({"case": label, "regraft_median_s": round(med, 3), "regraft_min_s": round(min(times), 3),
                         "regraft_cpu_s": round(cpu, 3), "bytes_read": doc["bytes_read"],
                         "naive_median_s": round(nt, 2), "naive_cpu_s": round(ncpu, 2), "naive_peak_rss_mb": nrss,
                         "speedup": round(nt / med, 1), "cpu_speedup": round(ncpu / cpu, 1),
                         "verdict": doc["targets"][0]["verdict"]})
            print(rows[-1], flush=True)
    load_after = os.getloadavg()
    load = f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (1-min load average, {os.cpu_count()} CPUs)"
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "check_speed.json").write_text(json.dumps({"reps": reps, "python": sys.version.split()[0],
                                                      "cpus": os.cpu_count(), "load_before": load_before,
                                                      "load_after": load_after, "rows": rows}, indent=2))
    lines = ["# regraft check speed vs the naive route", "",
             f"`python bench/check_speed.py` (REPS={reps}, cold process each run, {os.cpu_count()} CPUs). "
             "Naive = transformers meta-device build of the target + PEFT get_peft_model with the adapter's config. "
             "Each timed run is a new process (Python start-up and imports included) after one warm-up run that "
             "writes the bytecode caches, as on a user's machine. Medians; speedup = naive / regraft wall time, "
             "CPU speedup = the same on user+sys CPU time (the fairer figure when other jobs load the machine, "
             "as wall time then includes waiting for a core).",
             "", f"Machine load during the run: {load}.",
             "", ("| case | regraft median s | regraft CPU s | bytes read | naive median s | naive CPU s | "
                  "naive peak RSS MB | speedup | CPU speedup | verdict |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['regraft_median_s']} | {r['regraft_cpu_s']} | {r['bytes_read']:,} | "
                     f"{r['naive_median_s']} | {r['naive_cpu_s']} | {r['naive_peak_rss_mb']} | {r['speedup']}x | "
                     f"{r['cpu_speedup']}x | {r['verdict']} |")
    (out / "check_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
