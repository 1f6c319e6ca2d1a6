"""Memory: weights + KV cache at the requested context and concurrency, and how many GPUs of a size that needs.

KV cache per token = 2 (K and V) x attention layers with a KV cache x kv_heads x head_dim x bytes per value.
Linear-attention layers (Qwen3-Next, Qwen3.5 Gated DeltaNet) keep a fixed-size state instead and are not counted
per token. Not counted: activations, CUDA graphs, the runtime's own overhead (hence gpu_memory_utilization).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 1024 ** 3
DTYPE_BYTES = {"bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2, "float32": 4, "fp32": 4, "auto": 2,
               "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "int8": 1, "q8_0": 1, "f16": 2, "q4_0": 0.5, "nvfp4": 0.5,
               "awq": 0.5, "gptq": 0.5, "int4": 0.5}
DEFAULT_GPU_GB = 80.0  # assumed when the config does not say (regraft.gpu_memory_gb)
DEFAULT_UTIL = 0.9  # vLLM's default gpu_memory_utilization


@dataclass
class MemoryEstimate:
    params: int | None
    weight_bytes: float | None
    weight_bytes_per_value: float
    kv_bytes_per_token: int | None
    kv_layers: int | None
    context: int | None
    concurrent: int
    gpu_gb: float
    utilization: float
    gpu_gb_assumed: bool

    @property
    def kv_bytes(self) -> float | None:
        if self.kv_bytes_per_token is None or not self.context:
            return None
        try:
            return float(self.kv_bytes_per_token) * self.context * self.concurrent
        except OverflowError:  # a context or concurrency beyond float range: no estimate
            return None

    @property
    def total_bytes(self) -> float | None:
        if self.weight_bytes is None:
            return None
        return self.weight_bytes + (self.kv_bytes or 0.0)

    @property
    def gpus_needed(self) -> int | None:
        t = self.total_bytes
        if t is None:
            return None
        return max(1, math.ceil(t / (self.gpu_gb * GIB * self.utilization)))

    def text(self) -> str:
        parts = []
        if self.weight_bytes is not None:
            parts.append(f"weights {self.weight_bytes / GIB:.1f} GiB ({self.params / 1e9:.2f}B params x "
                         f"{self.weight_bytes_per_value:g} B)")
        if self.kv_bytes_per_token is not None:
            parts.append(f"KV {self.kv_bytes_per_token / 1024:.0f} KiB/token ({self.kv_layers} KV layers)")
            if self.kv_bytes is not None:
                parts.append(f"{self.kv_bytes / GIB:.1f} GiB at {self.context:,} tokens x {self.concurrent} "
                             f"sequence{'s' if self.concurrent != 1 else ''}")
        if self.gpus_needed is not None:
            parts.append(f"needs >= {self.gpus_needed} x {self.gpu_gb:g} GiB GPU"
                         f"{'s' if self.gpus_needed != 1 else ''} at {self.utilization:g} utilisation"
                         + (" (GPU size assumed; set regraft.gpu_memory_gb)" if self.gpu_gb_assumed else ""))
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"params": self.params, "weight_bytes": self.weight_bytes, "kv_bytes_per_token": self.kv_bytes_per_token,
                "kv_layers": self.kv_layers, "context": self.context, "concurrent": self.concurrent,
                "kv_bytes": self.kv_bytes, "total_bytes": self.total_bytes, "gpu_gb": self.gpu_gb,
                "utilization": self.utilization, "gpus_needed": self.gpus_needed}


def param_count(spec) -> int | None:
    a = spec.arch
    if a is None:
        return None
    total = 0
    experts = spec.get("num_experts") or 1
    for m in a.modules("disk"):
        if m.tied_to:
            continue
        if m.shape is None:
            return None
        n = math.prod(m.shape) * (experts if "{e}" in m.template else 1)
        if m.bias and m.kind == "linear":
            n += m.shape[0] * (experts if "{e}" in m.template else 1)
        total += n
    return total


def kv_layers(spec) -> int | None:
    a = spec.arch
    n = spec.get("num_hidden_layers")
    if n is None:
        return None
    if a is None:
        return n
    return sum(1 for i in range(n) if a.layer_type(i) == "full_attention")


def kv_bytes_per_token(spec, kv_dtype_bytes: float = 2) -> int | None:
    layers = kv_layers(spec)
    kv = spec.get("num_key_value_heads")
    hd = spec.get("head_dim")
    if hd is None and spec.get("hidden_size") and spec.get("num_attention_heads"):
        hd = spec.get("hidden_size") // spec.get("num_attention_heads")
    if None in (layers, kv, hd):
        return None
    return int(2 * layers * kv * hd * kv_dtype_bytes)


def estimate(spec, context: int | None, concurrent: int = 1, dtype: str | None = None, kv_dtype: str | None = None,
             quantization: str | None = None, gpu_gb: float | None = None, utilization: float | None = None
             ) -> MemoryEstimate:
    wb = DTYPE_BYTES.get((quantization or "").lower()) or DTYPE_BYTES.get((dtype or "").lower())
    if wb is None:
        wb = DTYPE_BYTES.get(str(spec.get("torch_dtype") or spec.get("dtype") or "bfloat16").lower(), 2)
    kvb = DTYPE_BYTES.get((kv_dtype or "").lower(), 2) if kv_dtype and kv_dtype != "auto" else 2
    params = param_count(spec)
    weights = None
    if spec.tensors:
        weights = float(sum(t.nbytes for t in spec.tensors.values()))
        params = params or sum(math.prod(t.shape) for t in spec.tensors.values())
    elif params is not None:
        weights = float(params * wb)
    return MemoryEstimate(params, weights, wb, kv_bytes_per_token(spec, kvb), kv_layers(spec), context,
                          max(1, concurrent), gpu_gb or DEFAULT_GPU_GB, utilization or DEFAULT_UTIL, gpu_gb is None)


def valid_tp_sizes(spec, upto: int = 64) -> list[int]:
    """Tensor-parallel sizes that divide the attention heads (and fit the KV heads: divide or are divided by them)."""
    heads = spec.get("num_attention_heads")
    kv = spec.get("num_key_value_heads")
    if not heads:
        return []
    out = []
    for tp in range(1, upto + 1):
        if heads % tp:
            continue
        if kv and not (kv % tp == 0 or tp % kv == 0):
            continue
        out.append(tp)
    return out
