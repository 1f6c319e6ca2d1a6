"""inspect: which producer and layout an adapter has, from files, names and shapes; unknown names what is missing."""

from __future__ import annotations

import pytest

from regraft.inspection.producer import decide, inspect_producer, layouts_data
from tests.layouts._adapters import P, attn, fused, peft_cfg, write

MLX_CFG = {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": {"rank": 2, "scale": 20.0, "dropout": 0.0}}


CASES = [  # id, config, shapes, files, readme, widths -> producer, layout
    ("peft-dense", peft_cfg(peft_version="0.17.1"), attn(), set(), "", None, "peft", "peft-standard"),
    ("trl-readme", peft_cfg(), attn(), set(), "---\ntags:\n- trl\n- sft\n---\n", None, "trl", "peft-standard"),
    ("unsloth-readme-wins-over-trl", peft_cfg(), attn(), set(), "tags:\n- unsloth\n- trl\n", None, "unsloth",
     "peft-standard"),
    ("axolotl-badge", peft_cfg(), attn(), set(), "[Built with Axolotl](https://github.com/axolotl-ai-cloud)", None,
     "axolotl", "peft-standard"),
    ("autotrain-card", peft_cfg(), attn(), set(), "---\ntags:\n- autotrain\n- peft\n---\n# Model Trained Using AutoTrain\n",
     None, "autotrain", "peft-standard"),
    ("autotrain-training-params", peft_cfg(), attn(), {"training_params.json"}, "", None, "autotrain", "peft-standard"),
    ("autotrain-word-in-prose-is-not-a-tag", peft_cfg(), attn(), set(), "We did not use autotrain here.", None, "peft",
     "peft-standard"),
    ("torchtune-keys", {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "peft_type": "LORA",
                        "base_model_name_or_path": "meta-llama/Llama-3.2-1B-Instruct"}, attn(), {"adapter_model.pt"}, "",
     None, "torchtune", "peft-standard"),
    ("torchtune-order-matters", {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}, attn(),
     set(), "", None, "peft", "peft-standard"),
    ("llama-factory-tag", peft_cfg(), attn(), set(), "tags:\n- llama-factory\n- lora\n", None, "llama-factory",
     "peft-standard"),
    ("unsloth-base-name", peft_cfg(base_model_name_or_path="unsloth/qwen3-4b-bnb-4bit"), attn(), set(), "", None,
     "unsloth", "peft-standard"),
    ("mlx", MLX_CFG, {"model.layers.0.self_attn.q_proj.lora_a": (32, 2), "model.layers.0.self_attn.q_proj.lora_b":
                      (2, 32)}, {"adapters.safetensors"}, "", None, "mlx-lm", "mlx-lm"),
    ("per-expert", peft_cfg(), {f"{P}.0.mlp.experts.3.gate_proj.lora_A.weight": (2, 32),
                                f"{P}.0.mlp.experts.3.gate_proj.lora_B.weight": (16, 2)}, set(), "", None, "peft",
     "peft-per-expert"),
    ("fused-chain-linear-blind-widths", peft_cfg(), fused(), set(), "", None, "peft", "peft-3d-linear"),
    ("fused-chain-positional", peft_cfg(), fused(orientation="positional"), set(), "", None, "peft",
     "peft-3d-positional"),
    ("fused-gate-up-only-blind-no-version", peft_cfg(), fused(down=False), set(), "", (32, 16), "peft", "unknown"),
    ("fused-gate-up-only-version-0.18", peft_cfg(peft_version="0.18.1"), fused(down=False), set(), "", (32, 16),
     "peft", "peft-3d-positional"),
    ("fused-gate-up-only-widths-decide", peft_cfg(), fused(H=64, I=16, down=False), set(), "", (64, 16), "peft",
     "peft-3d-linear"),
    ("fused-positional-widths-decide", peft_cfg(), fused(H=64, I=16, down=False, orientation="positional"), set(),
     "", (64, 16), "peft", "peft-3d-positional"),
    ("unsloth-fused-block-or-interleaved", peft_cfg(), fused(), set(), "unsloth", None, "unsloth", "unknown"),
    ("nemo-version-not-trusted", peft_cfg(peft_version="0.21.0"), fused(down=False), {"automodel_peft_config.json"},
     "", (32, 16), "nemo-automodel", "unknown"),
    ("nemo-chain-swapped", peft_cfg(), fused(orientation="positional"), {"automodel_peft_config.json"}, "", None,
     "nemo-automodel", "nemo-automodel-3d-swapped"),
    ("nemo-grouped", peft_cfg(), {f"{P}.0.mlp.experts.lora_gate_and_up_A": (4, 32, 2)}, set(), "", None,
     "nemo-automodel", "nemo-automodel-grouped"),
    ("megatron-per-projection", peft_cfg(), {f"{P}.0.mlp.experts.gate_up_proj.lora_A.weight": (4, 2, 32),
                                             f"{P}.0.mlp.experts.gate_up_proj.lora_B.weight": (4, 32, 2)}, set(), "",
     None, "megatron-bridge / skyrl", "megatron-3d-per-projection"),
    ("tinker-raw", peft_cfg(), {f"{P}.0.mlp.experts.w1.lora_A.weight": (1, 2, 32),
                                f"{P}.0.mlp.experts.w1.lora_B.weight": (4, 16, 2)}, set(), "", None, "tinker",
     "tinker-raw"),
    ("stray-keys", peft_cfg(), {"model.layers.0.foo.something": (2, 2)}, set(), "", None, "peft", "unknown"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_decide(case):
    _, config, shapes, files, readme, widths, producer, layout = case
    rep = decide(config, shapes, files, readme, widths)
    assert (rep.producer, rep.layout) == (producer, layout), rep.to_dict()
    if layout == "unknown":
        assert rep.missing, "an unknown layout must name what is missing"
    else:
        assert layout in layouts_data()["layouts"]


def test_unknown_names_candidates():
    rep = decide(peft_cfg(), fused(down=False), widths=(32, 16))
    assert rep.candidates == ["peft-3d-linear", "peft-3d-positional"]
    assert "peft_version" in rep.missing[0]


def test_inspect_reads_folder(tmp_path):
    write(tmp_path / "mlx", {"fine_tune_type": "lora", "num_layers": 1, "lora_parameters": {"rank": 2, "scale": 2}},
          {"model.layers.0.self_attn.q_proj.lora_a": (32, 2), "model.layers.0.self_attn.q_proj.lora_b": (2, 32)},
          weights="adapters.safetensors")
    rep = inspect_producer(tmp_path / "mlx")
    assert (rep.producer, rep.layout, rep.weights_file) == ("mlx-lm", "mlx-lm", "adapters.safetensors")
    write(tmp_path / "u", peft_cfg(), attn(), readme="---\ntags: [unsloth]\n---\nPEFT 0.18.1")
    rep = inspect_producer(tmp_path / "u")
    assert (rep.producer, rep.peft_version) == ("unsloth", "0.18.1")


def test_no_weights_is_unknown(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    rep = inspect_producer(tmp_path)
    assert rep.layout == "unknown" and "weights file" in rep.missing[0]


def test_every_layout_has_sources_and_runtime_rows():
    data = layouts_data()
    for name, entry in data["layouts"].items():
        assert entry["sources"] and entry["what"] and entry["producer"], name
    for layout, rows in data["runtimes"].items():
        assert layout in data["layouts"], layout
        for row in rows:
            assert set(row) <= {"runtime", "versions", "outcome", "detail", "source", "current", "model_types"}
            assert row["outcome"] in ("loads", "drops-silently", "wrong-silently", "errors", "unknown"), row
            assert row["source"], row


def test_check_on_mlx_folder_names_the_conversion(tmp_path, capsys):
    from regraft.cli.main import main

    write(tmp_path / "mlx", MLX_CFG, {"model.layers.0.self_attn.q_proj.lora_a": (32, 2),
                                      "model.layers.0.self_attn.q_proj.lora_b": (2, 32)}, weights="adapters.safetensors")
    code = main(["check", "Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B", "--adapter", str(tmp_path / "mlx")])
    err = capsys.readouterr().err
    assert code == 2 and "MLX-LM adapter" in err and "--layout mlx-lm:peft" in err and len(err.strip().splitlines()) == 1


def test_namespace_conversion_uses_the_catalog_rename():
    """causal-lm -> conditional-generation (Qwen3.5 wrapper) and back, through regraft.checks.namespaces."""
    pytest.importorskip("torch")
    import torch

    from regraft.errors import InputError
    from regraft.port.layouts import convert

    t = {f"{P}.0.self_attn.q_proj.lora_A.weight": torch.ones(2, 4),
         f"{P}.0.self_attn.q_proj.lora_B.weight": torch.ones(4, 2)}
    out, _, notes = convert(t, {}, "causal-lm", "conditional-generation", {"namespace": "qwen_vl"})
    assert sorted(out) == ["base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight",
                           "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert "causal_lm to qwen_vl" in notes[0]
    back, _, _ = convert(out, {}, "ns.auto", "causal-lm")
    assert sorted(back) == sorted(t) and all(back[k] is t[k] for k in t)  # the same tensors, renamed only
    with pytest.raises(InputError, match="wrapper namespace is unknown"):
        convert(t, {}, "causal-lm", "conditional-generation", {})
