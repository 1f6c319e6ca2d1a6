"""RG113 (config vs safetensors headers) and RG114 (architecture inferred from transformers)."""

from __future__ import annotations

import json

import pytest

from regraft.checks.engine import check
from regraft.checks.finding import Verdict
from regraft.inspection.adapter import read_adapter
from regraft.inspection.resolve import read_model_folder
from tests.factories import build_adapter, build_model, tiny_config

pytest.importorskip("transformers")


def codes(report):
    return [f.code for f in report.targets[0].findings]


def test_clean_folder_has_no_disagreement(tmp_path):
    build_model(tmp_path / "m", tiny_config("Qwen/Qwen3-30B-A3B"))
    spec = read_model_folder(tmp_path / "m")
    assert "RG113" not in codes(check(spec, [spec]))


def test_edited_config_is_caught(tmp_path):
    build_model(tmp_path / "m", tiny_config("Qwen/Qwen3-8B"))
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["intermediate_size"] = 64  # the weights were saved with 48
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    spec = read_model_folder(tmp_path / "m")
    rep = check(spec, [spec])
    f = [f for f in rep.targets[0].findings if f.code == "RG113"]
    assert f and f[0].message.startswith("6 tensors have other shapes")  # gate/up/down x 2 layers
    assert rep.targets[0].verdict is Verdict.UNKNOWN


def test_unknown_model_type_is_inferred_and_flagged(tmp_path):
    cfg = {"model_type": "gemma2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 48, "vocab_size": 128}
    model, folder = build_model(tmp_path / "g", cfg)
    ad = build_adapter(tmp_path / "lora", model, r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"])
    spec = read_model_folder(folder)
    assert spec.arch.inferred
    rep = check(spec, [spec], read_adapter(ad))
    assert rep.targets[0].verdict is Verdict.LOADS
    assert "RG114" in codes(rep) and "RG113" not in codes(rep)
    wide_model, wide = build_model(tmp_path / "g2", {**cfg, "hidden_size": 48})
    rep2 = check(spec, [read_model_folder(wide)], read_adapter(ad))
    assert rep2.targets[0].verdict is Verdict.NEEDS_PORT and "RG101" in codes(rep2)
