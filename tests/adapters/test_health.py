"""Adapter health: NaN/Inf from exponent bits (both code paths), effective rank of B @ A, routed experts never
adapted; `inspect --health`."""

from __future__ import annotations

import json
import struct

import pytest

from regraft.inspection import adapter_health as H
from tests.adapters.golden import poison
from tests.adapters.synth import synth_adapter, write_safetensors


def _raw_file(path, tensors: dict[str, tuple[str, bytes]]):
    header, off, data = {}, 0, b""
    for name, (dt, raw) in tensors.items():
        size = {"F32": 4, "F16": 2, "BF16": 2}[dt]
        header[name] = {"dtype": dt, "shape": [len(raw) // size], "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def _f32(*xs):
    return struct.pack(f"<{len(xs)}f", *xs)


def _bf16(*xs):
    raw = _f32(*xs)
    return b"".join(raw[i + 2:i + 4] for i in range(0, len(raw), 4))


def _f16(*xs):
    return struct.pack(f"<{len(xs)}e", *xs)


@pytest.mark.parametrize("numpy_path", [False, True])
def test_nonfinite_counts_nan_and_inf_but_not_huge_finite_values(tmp_path, numpy_path):
    inf, nan = float("inf"), float("nan")
    p = tmp_path / "a.safetensors"
    _raw_file(p, {"f32": ("F32", _f32(1.0, -2.5, 3e38, -3e38, inf, nan)),
                  "bf16": ("BF16", _bf16(0.5, 3e38, -inf, nan, nan)),
                  "f16": ("F16", _f16(65504.0, -65504.0, 1.0) + b"\x00\x7c\x00\xfe"),
                  "clean": ("BF16", _bf16(*([0.1] * 64)))})
    got = _numpy_nonfinite(p) if numpy_path else H.nonfinite(p)  # small data: nonfinite takes the byte path
    assert got == {"f32": 2, "bf16": 3, "f16": 2}


def _numpy_nonfinite(p):
    import numpy as np

    table, start = H.spans(p)
    raw = p.read_bytes()
    out = {}
    for name, (dt, _, b, e) in table.items():
        utype, mask = H._NP_MASKS[dt]
        n = int(np.count_nonzero((np.frombuffer(raw[start + b:start + e], dtype=utype) & mask) == mask))
        if n:
            out[name] = n
    return out


def test_nonfinite_numpy_branch_on_large_tensors_and_limit(tmp_path):
    p = tmp_path / "big.safetensors"
    write_safetensors(p, {"x": ("BF16", (3 * 2**20,)), "y": ("F32", (8,))})  # 6 MiB of zeros: numpy branch
    poison(p, "^x$", "nan")
    poison(p, "^y$", "inf")
    assert H.nonfinite(p) == {"x": 1, "y": 1}
    assert H.nonfinite(p, max_bytes=2**20) is None


def test_effective_rank_of_known_rank_products_and_zero_b(tmp_path):
    np = pytest.importorskip("numpy")
    from safetensors.numpy import save_file

    from regraft.inspection.adapter import read_adapter

    rng = np.random.default_rng(0)
    r, inn, out = 8, 64, 48
    a = rng.standard_normal((r, inn)).astype(np.float32)
    b = np.zeros((out, r), np.float32)
    b[:, :2] = rng.standard_normal((out, 2))  # rank-2 update
    pre = "base_model.model.model.layers.0.self_attn."
    d = tmp_path / "ad"
    d.mkdir()
    save_file({pre + "q_proj.lora_A.weight": a, pre + "q_proj.lora_B.weight": b,
               pre + "v_proj.lora_A.weight": a, pre + "v_proj.lora_B.weight": np.zeros((out, r), np.float32),
               pre + "k_proj.lora_A.weight": a, pre + "k_proj.lora_B.weight": rng.standard_normal((out, r)).astype(np.float32)},
              str(d / "adapter_model.safetensors"))
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": 16}))
    ranks = {m.module.rsplit(".", 1)[-1]: m for m in H.effective_ranks(read_adapter(d))}
    assert ranks["q_proj"].used == 2 and 1.0 < ranks["q_proj"].effective_rank <= 2.0
    assert ranks["v_proj"].zero and ranks["v_proj"].effective_rank == 0
    assert ranks["k_proj"].used == 8 and ranks["k_proj"].utilisation > 0.6


def test_experts_untouched_on_qwen35_moe_and_not_on_dense_or_expert_adapters(tmp_path):
    from regraft.inspection.adapter import read_adapter
    from regraft.inspection.resolve import resolve_model

    moe = resolve_model("Qwen/Qwen3.5-35B-A3B")
    cfg = {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "layers_to_transform": [3],
           "target_modules": ["q_proj", "gate_proj", "up_proj", "down_proj"]}
    d = synth_adapter(tmp_path / "a", cfg, moe)
    # drop the per-expert tensors synth writes (transformers 4 layout): what transformers 5 + target_modules save
    table, _ = H.spans(d / "adapter_model.safetensors")
    write_safetensors(d / "adapter_model.safetensors",
                      {k: (v[0], tuple(v[1])) for k, v in table.items() if ".experts." not in k})
    eu = H.experts_untouched(read_adapter(d), moe)
    assert eu and eu["experts"] == 256 and eu["shared"] == ["mlp.shared_expert.down_proj", "mlp.shared_expert.gate_proj",
                                                              "mlp.shared_expert.up_proj"]
    assert eu["expert_lora_bytes"] > 100 * eu["adapter_bytes"]
    with_experts = read_adapter(synth_adapter(tmp_path / "b", cfg, moe))  # per-expert tensors present
    assert H.experts_untouched(with_experts, moe) is None
    assert H.experts_untouched(read_adapter(d), resolve_model("Qwen/Qwen3-8B")) is None


def test_inspect_health_card_and_refusal_on_models(tmp_path, capsys):
    from regraft.cli.main import main
    from regraft.inspection.resolve import resolve_model

    d = synth_adapter(tmp_path / "a", {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"],
                                       "layers_to_transform": [0, 1], "base_model_name_or_path": "Qwen/Qwen3-0.6B"},
                      resolve_model("Qwen/Qwen3-0.6B"))
    poison(d / "adapter_model.safetensors", r"layers\.1\..*lora_A", "inf")
    assert main(["inspect", str(d), "--format", "json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["health"]["nan_inf"].startswith("1 values in 1 tensors")
    assert main(["inspect", str(d), "--health", "--format", "json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["health"]["untrained_modules"].startswith("2 with B or A all zeros")  # synthesised: B is zeros
    assert main(["inspect", "Qwen/Qwen3-0.6B", "--health"]) == 2
    assert "--health applies to adapter folders" in capsys.readouterr().err
