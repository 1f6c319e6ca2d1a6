"""Sweep: for every catalog model, the module names and shapes regraft derives from config alone equal what
transformers builds (v5 namespace, on the meta device) and what it saves (checkpoint namespace). Multimodal
wrappers are built as their ConditionalGeneration class, vision tower included."""

from __future__ import annotations

import re

import pytest

from regraft import catalog
from regraft.inspection.model import ModelSpec
from tests.factories import build_model, tiny_config

pytest.importorskip("transformers")

SWEEP = [m for m in catalog.model_ids() if catalog.model_entry(m).get("model_type")
         and catalog.model_entry(m)["_status"] != "partial"]
TINY_VISION = dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=32)
# transformers 5.24 save_pretrained writes these fused experts in its own (E, out, in) orientation; the Hub
# checkpoint (described as the disk namespace) has them transposed, and transformers transposes on load.
TRANSPOSED_ON_LOAD = {"qwen3_vl_moe": re.compile(r"\.mlp\.experts\.(gate_up|down)_proj$")}


def tiny(model_id: str, **over) -> dict:
    """tiny_config plus a tiny vision tower, and token ids that fit the tiny vocabulary."""
    cfg = tiny_config(model_id, **over)
    vis = cfg.get("vision_config")
    if isinstance(vis, dict):
        vis.update({k: v for k, v in TINY_VISION.items() if k in vis})
        if vis.get("deepstack_visual_indexes"):
            vis["deepstack_visual_indexes"] = [0, 1]
    root = cfg.get("text_config", cfg)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if isinstance(root.get(key), int) and root[key] >= root.get("vocab_size", 0):
            root[key] = None
    return cfg


def build(cfg: dict, folder=None):
    """The class named in config.json's `architectures`, on the meta device (or saved to ``folder``)."""
    import torch
    import transformers
    from transformers import AutoConfig

    cls = getattr(transformers, cfg["architectures"][0])
    conf = AutoConfig.for_model(**cfg)
    if folder is None:
        with torch.device("meta"):
            return cls._from_config(conf)
    torch.manual_seed(0)
    model = cls._from_config(conf)
    model.save_pretrained(folder)
    return model


def derived(spec: ModelSpec, namespace: str) -> dict[str, tuple]:
    out = {}
    for m in spec.arch.modules(namespace, expand_experts=True, towers=True):
        if m.tied_to:
            continue  # tied lm_head: shares the embedding parameter, not saved
        for name in m.param_names():
            out[name] = m.shape if not name.endswith(".bias") else (m.shape[0],)
    return out


def test_sweep_covers_every_full_catalog_entry():
    assert len(SWEEP) == len(catalog.model_ids()) - 3 >= 54  # all but the three partial entries
    assert {catalog.model_entry(m)["model_type"] for m in SWEEP} >= {
        "qwen2", "qwen3", "qwen3_moe", "llama", "mistral", "qwen3_next", "qwen3_5", "qwen3_5_moe",
        "qwen3_5_moe_text", "qwen3_vl", "qwen3_vl_moe", "gpt_oss"}
    for m in SWEEP:
        assert catalog.architecture_data(catalog.model_entry(m)["model_type"]), f"no architecture file for {m}"


@pytest.mark.parametrize("model_id", SWEEP)
def test_v5_names_and_shapes_match_meta_instantiation(model_id):
    cfg = tiny(model_id)
    spec = ModelSpec(model_id, "catalog", cfg, status="verbatim")
    assert spec.arch is not None and not spec.arch.inferred, f"no architecture file for {cfg['model_type']}"
    real = {n: tuple(p.shape) for n, p in build(cfg).named_parameters()}
    assert derived(spec, "v5") == real


@pytest.mark.parametrize("model_id", SWEEP)
def test_checkpoint_names_and_shapes_match_save_pretrained(model_id, tmp_path):
    from regraft.inspection.resolve import read_model_folder

    cfg = tiny(model_id)
    build(cfg, tmp_path)
    spec = read_model_folder(tmp_path)
    on_disk = {n: tuple(t.shape) for n, t in spec.tensors.items()}
    want = derived(spec, "disk")
    transposed = TRANSPOSED_ON_LOAD.get(cfg["model_type"])
    if transposed:
        swapped = {n for n in want if transposed.search(n)}
        assert swapped, "the fused experts are described"
        for n in swapped:
            e, a, b = on_disk[n]
            on_disk[n] = (e, b, a)
    assert want == on_disk


@pytest.mark.parametrize("model_id", ["meta-llama/Llama-4-Scout-17B-16E-Instruct",
                                      "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
                                      "mistralai/Mistral-Small-3.1-24B-Instruct-2503"])
def test_partial_wrappers_language_model_matches(model_id, tmp_path):
    """Partial entries are outside the sweep (unknown fields stay unknown), but their architecture files are
    checked: the language model's names and shapes, in both namespaces, on a completed tiny config."""
    from regraft.inspection.resolve import read_model_folder

    cfg = tiny(model_id)
    root = cfg["text_config"]
    root.update(tie_word_embeddings=False, intermediate_size=24)
    if "intermediate_size_mlp" in root:
        root.update(intermediate_size_mlp=40, num_local_experts=4)
        cfg["vision_config"] = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1,
                                "num_attention_heads": 4, "vision_output_dim": 40, "projector_input_dim": 40,
                                "projector_output_dim": 40}
    else:
        cfg["vision_config"] = {"model_type": "pixtral", "hidden_size": 32, "intermediate_size": 48,
                                "num_hidden_layers": 1, "num_attention_heads": 4, "head_dim": 8}
    cfg["tie_word_embeddings"] = False
    spec = ModelSpec(model_id, "catalog", cfg, status="verbatim")
    lm = re.compile(r"^(model\.language_model\.|language_model\.|lm_head)")
    real = {n: tuple(p.shape) for n, p in build(cfg).named_parameters() if lm.match(n)}
    assert derived(spec, "v5") == real
    build(cfg, tmp_path)
    saved = {n: tuple(t.shape) for n, t in read_model_folder(tmp_path).tensors.items() if lm.match(n)}
    assert derived(spec, "disk") == saved
    partial = ModelSpec(model_id, "catalog", tiny_config(model_id), status="partial")
    assert partial.arch.values.get("tie_word_embeddings") is None  # never filled in
    assert partial.arch.towers == [] or "vision_config" in catalog.model_entry(model_id)


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

    spec = resolve_model("meta-llama/Llama-4-Scout-17B-16E-Instruct")  # partial: eos and ties unknown
    assert spec.partial and "tie_word_embeddings" in spec.unknown_fields
    assert spec.arch.values.get("tie_word_embeddings") is None
    assert re.search("eos_token_id", ",".join(spec.unknown_fields))
