"""Distillation at real scale: the student's target sharded by FSDP under accelerate, and the dry-run cost.

* `make_accelerator(fsdp=...)`: an ``accelerate.Accelerator`` with a FullyShardedDataParallel plugin (full shard,
  full state dict gathered on rank 0 for the writer, LoRA the only trainable parameters, ``use_orig_params``) when
  GPUs are there; on CPU (the tests, `accelerate launch --cpu`, gloo) FSDP is not available in this form, so the
  processes run data-parallel (DDP over gloo) with the same code path and a note. `distill_distributed` passes it
  to `distill_adapter(accelerator=...)`: data sharded by process, one writer (the main process).
* `cost(...)`: a pure function (the port CLI's ``--dry-run`` can call it) giving, for a source -> target pair given
  as config dicts, memory per GPU, GPUs needed, tokens and a time estimate, with every assumption listed in the
  result. Launch: ``accelerate launch --num_processes N --use_fsdp -m regraft port lora ... --method distill``.
"""

from __future__ import annotations

import math

GPU = {"H100-80GB": {"mem_gb": 80.0, "bf16_tflops": 989.0}, "H200-141GB": {"mem_gb": 141.0, "bf16_tflops": 989.0},
       "A100-80GB": {"mem_gb": 80.0, "bf16_tflops": 312.0}}  # dense bf16 peak (vendor data sheets)


def param_counts(cfg: dict) -> dict:
    """Total and per-token active parameters of a Qwen2/Qwen3/Qwen3-MoE-style decoder from its config.json dict
    (embeddings and head included; norms ignored)."""
    H, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    nq, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or H // nq
    attn = H * nq * hd * 2 + H * nkv * hd * 2
    E = cfg.get("num_experts") or cfg.get("num_local_experts") or 0
    if E:
        ff = 3 * H * cfg["moe_intermediate_size"]
        mlp_total, mlp_active = E * ff + H * E, cfg["num_experts_per_tok"] * ff + H * E
    else:
        mlp_total = mlp_active = 3 * H * cfg["intermediate_size"]
    emb = V * H * (1 if cfg.get("tie_word_embeddings") else 2)
    return {"total": L * (attn + mlp_total) + emb, "active": L * (attn + mlp_active) + emb, "layers": L,
            "hidden": H, "moe": bool(E), "layer_bytes_bf16": 2 * (attn + mlp_total)}


def lora_params(cfg: dict, r: int) -> int:
    """LoRA parameters of the student: r on every dense q/k/v/o/gate/up/down (experts are not targeted)."""
    H, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    nq, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or H // nq
    per = r * ((H + nq * hd) * 2 + (H + nkv * hd) * 2)
    if not (cfg.get("num_experts") or cfg.get("num_local_experts")):
        per += r * 3 * (H + cfg["intermediate_size"])
    return L * per


def cost(source: dict, target: dict, *, r: int = 16, n_prompts: int = 1024, keep: float = 0.5,
         prompt_tokens: int = 128, completion_tokens: int = 256, steps: int = 1500, batch: int = 32,
         seq_tokens: int | None = None, gpu: str = "H100-80GB", mfu: float = 0.35, headroom: float = 0.85,
         teacher: str = "endpoint") -> dict:
    """Dry-run cost of `distill` (and of the closed-form init) for ``source`` -> ``target`` (config dicts).

    Memory per GPU under FSDP full shard over n GPUs: bf16 target weights / n + LoRA weights, grads and AdamW
    states in fp32 (16 bytes per LoRA parameter, sharded too) + activations of one micro-batch with gradient
    checkpointing (one layer's full activations + every layer's input, bf16) + the full-vocabulary logits of the
    micro-batch (fp32, the loss). GPUs needed: the smallest n whose estimate fits ``headroom`` of the GPU (the
    node-size power of two at or above it is what one would book). Time: the teacher labels n_prompts / keep
    prompts (2 x active source params FLOPs per token; an endpoint (vLLM) or the streamed in-process teacher),
    training runs ``steps`` x ``batch`` sequences at ~3 x forward FLOPs (frozen weights: activation gradients, no
    weight gradients, plus the checkpointing recompute), both at ``mfu`` of the GPU's dense bf16 peak."""
    g = GPU[gpu]
    ps, pt = param_counts(source), param_counts(target)
    lp = lora_params(target, r)
    seq = seq_tokens or (prompt_tokens + completion_tokens)
    H, L, V = target["hidden_size"], target["num_hidden_layers"], target["vocab_size"]
    micro = 1  # sequences per GPU per micro-step (gradient accumulation makes up the batch)
    act_gb = micro * seq * (L * H * 2 + 34 * H * 2 + V * 4 * 2) / 1e9
    weights_gb = 2 * pt["total"] / 1e9
    lora_gb = 16 * lp / 1e9
    n = 1
    while (weights_gb + lora_gb) / n + act_gb + 2.0 > headroom * g["mem_gb"]:  # + 2 GB CUDA/NCCL context
        n += 1
        if n > 4096:
            break
    per_gpu = (weights_gb + lora_gb) / n + act_gb + 2.0
    labelled = math.ceil(n_prompts / keep)
    teach_tokens = labelled * seq
    train_tokens = steps * batch * seq
    flops_teacher = 2 * ps["active"] * teach_tokens * (2 if teacher == "in-process" else 1)  # + the base's pass
    flops_train = 3 * 2 * pt["active"] * train_tokens
    sustained = mfu * g["bf16_tflops"] * 1e12
    t_teacher = flops_teacher / sustained / max(n, 1)
    t_train = flops_train / sustained / n
    return {"gpu": gpu, "gpus_needed": n, "gpus_to_book": 1 << (n - 1).bit_length(),
            "memory_per_gpu_gb": round(per_gpu, 1),
            "memory_breakdown_gb": {"target_weights_bf16_sharded": round(weights_gb / n, 2),
                                    "lora_weights_grads_adam_fp32_sharded": round(lora_gb / n, 3),
                                    "activations_and_logits_per_gpu": round(act_gb, 2), "runtime_context": 2.0},
            "params": {"source_total": ps["total"], "source_active": ps["active"], "target_total": pt["total"],
                       "target_active": pt["active"], "lora": lp},
            "tokens": {"teacher_labelled": teach_tokens, "training": train_tokens, "prompts_labelled": labelled},
            "time_h": {"teacher": round(t_teacher / 3600, 2), "training": round(t_train / 3600, 2),
                       "total": round((t_teacher + t_train) / 3600, 2)},
            "assumptions": [f"{gpu}: {g['mem_gb']} GB, {g['bf16_tflops']} dense bf16 TFLOP/s at MFU {mfu}",
                            ("FSDP full shard of the bf16 target, LoRA fp32 + AdamW (16 B/param), gradient "
                             "checkpointing, micro-batch 1 sequence per GPU with accumulation"),
                            f"sequences of {seq} tokens ({prompt_tokens} prompt + {completion_tokens} completion)",
                            (f"teacher: {teacher} (source+adapter and source base log-probs"
                             f"{' both in process' if teacher == 'in-process' else ', vLLM --lora-modules'}), "
                             "on the same GPUs before training"),
                            ("teacher time is a compute lower bound (greedy decoding is memory-bound: expect "
                             "several times more on an endpoint)"),
                            "training ~ 3 x forward FLOPs (activation grads + recompute, no weight grads)",
                            f"headroom {headroom} of GPU memory usable"]}


def make_accelerator(fsdp: bool = True):
    """(Accelerator, note). FSDP (full shard) on GPUs; data-parallel over gloo on CPU (FSDP needs accelerators)."""
    import torch
    from accelerate import Accelerator

    if fsdp and torch.cuda.is_available():
        from accelerate import FullyShardedDataParallelPlugin

        plugin = FullyShardedDataParallelPlugin(sharding_strategy="FULL_SHARD", state_dict_type="FULL_STATE_DICT",
                                                use_orig_params=True, auto_wrap_policy="transformer_based_wrap")
        return Accelerator(fsdp_plugin=plugin), "fsdp full shard"
    note = "data parallel (CPU: FSDP needs GPUs; same code path, each process holds the whole target)"
    return Accelerator(cpu=not torch.cuda.is_available()), note


def distill_distributed(*args, fsdp: bool = True, **kw):
    """`distill_adapter` under the accelerator of `make_accelerator` (run under ``accelerate launch``)."""
    from regraft.port.methods.distill.training import distill_adapter

    acc, note = make_accelerator(fsdp)
    rep = distill_adapter(*args, accelerator=acc, **kw)
    rep.details.setdefault("distributed", {})["mode"] = note
    return rep
