"""Memory maths: KV bytes per token = 2 x KV layers x kv_heads x head_dim x bytes; weights from the architecture."""

from __future__ import annotations

import pytest

from regraft.configs.memory import GIB, estimate, kv_bytes_per_token, param_count, valid_tp_sizes
from regraft.inspection.resolve import resolve_model


@pytest.mark.parametrize("name,kv,params_b", [
    ("Qwen/Qwen3-32B", 2 * 64 * 8 * 128 * 2, 32.76),  # 262,144 B = 256 KiB
    ("Qwen/Qwen3-30B-A3B-Base", 2 * 48 * 4 * 128 * 2, 30.53),
    ("Qwen/Qwen3-235B-A22B-Instruct-2507", 2 * 94 * 4 * 128 * 2, 235.09),
    ("Qwen/Qwen3.5-27B", 2 * 16 * 4 * 256 * 2, 26.90),  # only every 4th layer is full attention
    ("Qwen/Qwen3-Next-80B-A3B-Instruct", 2 * 12 * 2 * 256 * 2, 79.67),
    ("meta-llama/Llama-3.1-8B-Instruct", 2 * 32 * 8 * 128 * 2, 8.03),
])
def test_kv_per_token_and_params(name, kv, params_b):
    spec = resolve_model(name)
    assert kv_bytes_per_token(spec) == kv
    assert round(param_count(spec) / 1e9, 2) == params_b


def test_estimate_gpus_and_fp8_kv():
    spec = resolve_model("Qwen/Qwen3-235B-A22B-Instruct-2507")
    m = estimate(spec, 131072, concurrent=8, gpu_gb=80)
    assert m.kv_bytes == 192512 * 131072 * 8 and round(m.kv_bytes / GIB, 1) == 188.0
    assert m.gpus_needed == 9  # (437.9 + 188.0) GiB / (80 GiB x 0.9)
    fp8 = estimate(spec, 131072, concurrent=8, gpu_gb=80, kv_dtype="fp8", quantization="fp8")
    assert fp8.kv_bytes == m.kv_bytes / 2 and fp8.weight_bytes == m.weight_bytes / 2 and fp8.gpus_needed == 5


def test_valid_tp_sizes():
    assert valid_tp_sizes(resolve_model("Qwen/Qwen3-32B"), 16) == [1, 2, 4, 8, 16]  # 64 q / 8 kv heads
    assert valid_tp_sizes(resolve_model("Qwen/Qwen3.5-27B"), 24) == [1, 2, 4, 8, 12, 24]  # 24 q / 4 kv heads
