"""Sweep: for every catalog model, the module names and shapes regraft derives from config alone equal what
transformers builds (v5 namespace, on the meta device) and what it saves (checkpoint namespace)."""

from __future__ import annotations

import re

import pytest

from regraft import catalog
from regraft.inspection.model import ModelSpec
from tests.factories import build_model, tiny_config

pytest.importorskip("transformers")

SWEEP = [m for m in catalog.model_ids() if catalog.model_entry(m).get("model_type")
         and catalog.model_entry(m)["_status"] != "partial"]
WRAPPERS = {"qwen3_5", "qwen3_5_moe"}  # multimodal: only the language model is described


def derived(spec: ModelSpec, namespace: str) -> dict[str, tuple]:
    out = {}
    for m in spec.arch.modules(namespace, expand_experts=True):
        if m.tied_to and namespace == "v5":
            continue  # tied lm_head shares the embedding parameter
        if m.tied_to and namespace == "disk":
            continue  # not saved when tied
        for name in m.param_names():
            out[name] = m.shape if not name.endswith(".bias") else (m.shape[0],)
    return out


def test_sweep_covers_every_full_catalog_entry():
    assert len(SWEEP) >= 35
    assert {catalog.model_entry(m)["model_type"] for m in SWEEP} >= {"qwen2", "qwen3", "qwen3_moe", "llama",
                                                                    "mistral", "qwen3_next", "qwen3_5",
                                                                    "qwen3_5_moe"}


@pytest.mark.parametrize("model_id", SWEEP)
def test_v5_names_and_shapes_match_meta_instantiation(model_id):
    cfg = tiny_config(model_id)
    spec = ModelSpec(model_id, "catalog", cfg, status="verbatim")
    assert spec.arch is not None, f"no architecture file for {cfg['model_type']}"
    if cfg["model_type"] in WRAPPERS:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        text = AutoConfig.for_model(**cfg).text_config
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(text)
        real = {n.replace("model.", "model.language_model.", 1): tuple(p.shape) for n, p in model.named_parameters()}
    else:
        model, _ = build_model(None, cfg, meta=True)
        real = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert derived(spec, "v5") == real


@pytest.mark.parametrize("model_id", [m for m in SWEEP if catalog.model_entry(m)["model_type"] not in WRAPPERS])
def test_checkpoint_names_and_shapes_match_save_pretrained(model_id, tmp_path):
    from regraft.inspection.resolve import read_model_folder

    cfg = tiny_config(model_id)
    build_model(tmp_path, cfg)
    spec = read_model_folder(tmp_path)
    on_disk = {n: t.shape for n, t in spec.tensors.items()}
    assert derived(spec, "disk") == on_disk


def test_lookup_finds_per_expert_and_fused_names():
    spec = ModelSpec("x", "catalog", tiny_config("Qwen/Qwen3-30B-A3B"), status="verbatim")
    a = spec.arch
    per = a.lookup("model.layers.1.mlp.experts.3.down_proj", "disk")
    fused = a.lookup("model.layers.1.mlp.experts.gate_up_proj", "v5")
    assert per.shape == (32, 16) and per.expert == 3 and per.layer == 1
    assert fused.shape == (4, 32, 32)
    assert a.lookup("model.layers.1.mlp.experts.4.down_proj", "disk") is None  # only 4 experts
    assert a.lookup("model.layers.2.self_attn.q_proj") is None  # only 2 layers
    assert a.lookup("model.layers.1.mlp.experts.gate_up_proj", "disk") is None


@pytest.mark.parametrize("model_id,layers,shape", [
    ("Qwen/Qwen3-32B", 64, (8192, 5120)),
    ("Qwen/Qwen3-30B-A3B", 48, (4096, 2048)),
    ("Qwen/Qwen3-235B-A22B-Instruct-2507", 94, (8192, 4096)),
])
def test_real_catalog_shapes_match_research_meta_dumps(model_id, layers, shape):
    """Numbers from research/meta_params (transformers 5 meta builds of the real configs)."""
    from regraft.inspection.resolve import resolve_model

    spec = resolve_model(model_id)
    assert spec.arch.num_layers == layers
    assert spec.arch.lookup("model.layers.0.self_attn.q_proj").shape == shape
    if spec.is_moe:
        fused = spec.arch.lookup("model.layers.0.mlp.experts.gate_up_proj", "v5").shape
        assert fused == {48: (128, 1536, 2048), 94: (128, 3072, 4096)}[layers]


def test_partial_entries_never_fill_defaults():
    from regraft.inspection.resolve import resolve_model

    spec = resolve_model("Qwen/Qwen3-30B-A3B-Base")  # partial: eos and ties unknown
    assert spec.partial and "tie_word_embeddings" in spec.unknown_fields
    assert spec.arch.values.get("tie_word_embeddings") is None
    assert re.search("eos_token_id", ",".join(spec.unknown_fields))
