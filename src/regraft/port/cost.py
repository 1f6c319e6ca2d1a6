"""What a training method will cost, estimated before it runs (``port lora --dry-run``), for the real model sizes.

Pure arithmetic over the request: parameter counts (``regraft.configs.memory.param_count``, from the catalog or the
local safetensors headers), the budgets (prompts, steps, batch) and the seed/template lengths. It counts what the
code in ``methods/distill/training.py``, ``teacher.py`` and ``methods/project/projection.py`` does:

* teacher labels: the streamed teacher generates ``max_new`` tokens greedily *without a KV cache* (each new token
  re-runs the prefix, reading the source from disk once per token), then two scoring passes (with and without the
  adapter) over prompt+completion;
* training: a forward and a backward through the resident target per step (LoRA: no weight gradients for the frozen
  base, ~4 x params FLOPs per token instead of 6), the side-effect guard adds a quarter batch of 64-token generic
  sequences, an evaluation on the synthetic validation split every 25 steps;
* projection: both models over the calibration tokens, ridge fits per layer and module, a gain search (8 values);
* checks: the target with the adapter loaded in PEFT, on 64 held-out synthetic prompts and 64 generic texts.

Throughputs are assumptions, stated in the result (``assumptions``): they make the numbers an order of magnitude,
not a promise. The models run in float32 (``port.models.load_model``).
"""

from __future__ import annotations

import math

GB = 1e9
# effective throughput, stated in every estimate (not measured on this machine)
CPU_TFLOPS = 0.2  # a 16-core x86 server CPU, PyTorch fp32 matmuls at ~30% of AVX-512 peak
GPU_TFLOPS = 20.0  # one H100/H200-class GPU, fp32 without TF32 (~67 TFLOP/s peak) at ~30%
DISK_GBPS = 2.0  # NVMe sequential read (the streamed teacher re-reads the source per generated token)
GPU_MEMORY_GB = 80.0  # an H100 80 GB; an H200 has 141
CALIB_TOKENS = 4096  # project: max_tokens
CHECK_PROMPTS = 64
EVAL_EVERY = 25
GAMMAS = 8


def _params(spec) -> int | None:
    if spec is None:
        return None
    from regraft.configs.memory import param_count

    n = None
    if spec.tensors:
        n = sum(math.prod(t.shape) for t in spec.tensors.values())
    return n or param_count(spec)


def _dims(spec) -> dict:
    g = spec.get if spec is not None else (lambda k, d=None: d)
    return {"layers": g("num_hidden_layers") or 0, "hidden": g("hidden_size") or 0, "vocab": g("vocab_size") or 0}


def _disk_bytes(spec, params) -> float | None:
    if spec is not None and spec.tensors:
        return float(sum(t.nbytes for t in spec.tensors.values()))
    return 2.0 * params if params else None  # bf16 checkpoints


def prompt_tokens(seeds, template) -> int:
    """Mean prompt length in tokens, from the seeds (or template) at ~3.5 characters per token; 16 without."""
    texts = list(seeds or []) or ([template] if template else [])
    if not texts:
        return 16
    return max(1, round(sum(len(t) for t in texts) / len(texts) / 3.5))


def estimate(request, *, project: bool, distill: bool, checks: bool = True) -> dict:
    """Estimated prompts, steps, tokens, FLOPs, peak memory and wall time (CPU and GPU) of project and/or distill."""
    b = request.budgets
    n_s, n_t = _params(request.source), _params(request.target)
    ds, dt = _dims(request.source), _dims(request.target)
    out = {"models": {"source": {"name": request.source.name if request.source else None, "params": n_s},
                      "target": {"name": request.target.name, "params": n_t}},
           "assumptions": [f"CPU {CPU_TFLOPS:g} TFLOP/s effective (16-core server, fp32)",
                           f"GPU {GPU_TFLOPS:g} TFLOP/s effective (H100/H200-class, fp32 without TF32), "
                           f"{GPU_MEMORY_GB:g} GB",
                           f"disk {DISK_GBPS:g} GB/s", "models in float32 as the methods load them",
                           "distillation runs every step (early stopping on the synthetic split can end it sooner)"]}
    if n_t is None or (n_s is None and (distill or project)):
        out["unknown"] = "parameter count of " + ("the target" if n_t is None else "the source") + \
            " is unknown (not in the catalog, no local weights): cost not estimated"
        return out
    flops, disk, phases = 0.0, 0.0, {}
    mem_cpu, mem_gpu = [], []
    layer_s = 4.0 * n_s / max(ds["layers"], 1) + 4.0 * ds["vocab"] * ds["hidden"]  # one layer + embeddings, fp32
    resident_t = 4.0 * n_t
    P = prompt_tokens(request.seeds, request.template)
    seq = P + b.max_new
    if project:
        T = CALIB_TOKENS
        f_fwd = 2.0 * (n_s + n_t) * T + 2.0 * n_s * T  # activations of both models + the teacher's log-probs
        f_fit = dt["layers"] * 7 * (2.0 * dt["hidden"] ** 2 * T + dt["hidden"] ** 3)  # ridge fits per module
        f_gain = GAMMAS * 2.0 * n_t * T
        phases["project"] = {"calib_tokens": T, "flops": f_fwd + f_fit + f_gain}
        flops += f_fwd + f_fit + f_gain
        disk += 2 * ((_disk_bytes(request.source, n_s) or 0) + (_disk_bytes(request.target, n_t) or 0))
        acts = 8.0 * T * (ds["hidden"] + dt["hidden"]) * 12  # float64 activations of one layer's modules
        mem_cpu.append(layer_s + 4.0 * dt["vocab"] * dt["hidden"] + acts)
    if distill:
        pool = math.ceil(b.n_prompts / max(b.keep, 1e-6))
        gen = 2.0 * n_s * pool * (P * b.max_new + b.max_new * (b.max_new - 1) / 2)  # no KV cache
        score = 2 * 2.0 * n_s * pool * seq
        streamed = request.teacher is None
        if streamed:
            disk += (b.max_new + 2) * (_disk_bytes(request.source, n_s) or 0)
            mem_cpu.append(layer_s + 4.0 * 128 * seq * ds["hidden"] * 4)
        teacher_f = (gen + score) if streamed else 0.0
        n_val = max(1, round(b.n_prompts * 0.1))
        train_tok = b.steps * b.batch * seq
        guard_tok = b.steps * max(1, b.batch // 4) * 64 if (b.keep_generic > 0 and request.calib) else 0
        f_train = 4.0 * n_t * (train_tok + guard_tok)
        f_eval = (b.steps // EVAL_EVERY + 1) * 2.0 * n_t * n_val * seq
        logits = 3 * 4.0 * b.batch * seq * dt["vocab"]  # logits, log-softmax, their gradient
        acts = 4.0 * b.batch * seq * dt["hidden"] * dt["layers"] * 16
        train_mem = resident_t + logits + acts
        mem_cpu.append(train_mem)
        mem_gpu.append(train_mem)
        phases["teacher"] = {"prompts_labelled": pool, "generated_tokens": pool * b.max_new, "flops": teacher_f,
                             "where": "in process, source streamed" if streamed else f"endpoint {request.teacher.url}"}
        phases["distill"] = {"prompts_trained": b.n_prompts, "val_prompts": n_val, "steps": b.steps,
                             "batch": b.batch, "train_tokens": train_tok, "guard_tokens": guard_tok,
                             "flops": f_train + f_eval}
        flops += teacher_f + f_train + f_eval
        out["prompts"] = {"labelled": pool, "trained": b.n_prompts, "mean_prompt_tokens": P}
        out["steps"] = b.steps
        out["tokens"] = {"teacher_generated": pool * b.max_new, "train": train_tok + guard_tok}
    if checks:
        f_chk = 2 * 2.0 * n_t * CHECK_PROMPTS * (seq + 64)
        phases["checks"] = {"flops": f_chk}
        flops += f_chk
        mem_cpu.append(resident_t)
    peak_cpu = max(mem_cpu, default=0.0)
    peak_gpu = max(mem_gpu, default=0.0)
    out.update(phases=phases, flops=flops, disk_read_gb=round(disk / GB, 1),
               peak_memory_gb={"cpu": round(peak_cpu / GB, 2), "gpu": round(peak_gpu / GB, 2) if mem_gpu else None},
               wall_s={"cpu": round(flops / (CPU_TFLOPS * 1e12) + disk / (DISK_GBPS * GB), 1),
                       "gpu": round(flops / (GPU_TFLOPS * 1e12) + disk / (DISK_GBPS * GB), 1)})
    if mem_gpu and peak_gpu / GB > GPU_MEMORY_GB:
        out["warnings"] = [f"training keeps the target resident in float32: ~{peak_gpu / GB:.0f} GB, more than one "
                           f"{GPU_MEMORY_GB:g} GB GPU"]
    return out


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
