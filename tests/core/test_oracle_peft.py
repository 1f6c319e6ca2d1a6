"""The oracle is PEFT itself. For a matrix of tiny models and adapters built here, `check` says "loads" exactly
when PEFT loads the adapter with every tensor applied, and names exactly the tensors PEFT silently drops or
fails on."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

pytest.importorskip("peft")

from regraft.checks.engine import check  # noqa: E402
from regraft.checks.finding import Verdict  # noqa: E402
from regraft.inspection.adapter import read_adapter  # noqa: E402
from regraft.inspection.resolve import read_model_folder  # noqa: E402
from tests.factories import build_adapter, build_model, tiny_config  # noqa: E402

MODELS = {
    "dense": ("Qwen/Qwen3-8B", {}),
    "dense-wide": ("Qwen/Qwen3-8B", {"hidden_size": 48}),
    "dense-deep": ("Qwen/Qwen3-8B", {"num_hidden_layers": 3}),
    "dense-shallow": ("Qwen/Qwen3-8B", {"num_hidden_layers": 1}),
    "dense-ffn": ("Qwen/Qwen3-8B", {"intermediate_size": 64}),
    "dense-vocab": ("Qwen/Qwen3-8B", {"vocab_size": 96}),
    "moe": ("Qwen/Qwen3-30B-A3B", {}),
    "moe-8x": ("Qwen/Qwen3-30B-A3B", {"num_experts": 8}),
}
ADAPTERS = {
    "attn": ("dense", dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])),
    "all": ("dense", dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"])),
    "head": ("dense", dict(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["lm_head"])),
    "moe-attn": ("moe", dict(r=4, lora_alpha=8, target_modules=["q_proj", "o_proj"])),
    "moe-experts": ("moe", dict(r=4, lora_alpha=8, target_modules=["q_proj", "gate_proj", "up_proj", "down_proj"])),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle")
    models = {}
    for name, (mid, over) in MODELS.items():
        cfg = tiny_config(mid, tie_word_embeddings=False, **over)
        model, folder = build_model(root / name, cfg, seed=hash(name) % 1000)
        models[name] = (model, folder)
    adapters = {}
    for name, (base, kw) in ADAPTERS.items():
        adapters[name] = build_adapter(root / f"lora-{name}", models[base][0], **kw)
    return models, adapters


def peft_outcome(model_dir: Path, adapter_dir: Path) -> tuple[str, set[str]]:
    """('fails', {modules with size mismatch}) or ('loads', {adapter tensors PEFT did not apply})."""
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pm = PeftModel.from_pretrained(model, adapter_dir)
        except RuntimeError as e:
            mism = set()
            for line in str(e).splitlines():
                if "size mismatch for " in line:
                    key = line.split("size mismatch for ")[1].split(":")[0].replace("base_model.model.", "", 1)
                    for suffix in (".modules_to_save.default.weight", ".lora_A.default.weight",
                                   ".lora_B.default.weight", ".weight"):
                        key = key.removesuffix(suffix)
                    if key.endswith(".experts.base_layer"):  # PEFT 0.21 nests gate_up inside down
                        key = key.removesuffix(".base_layer") + ".gate_up_proj"
                    elif key.endswith(".experts"):
                        key += ".down_proj"
                    mism.add(key)
            return "fails", mism
    saved = load_file(str(adapter_dir / "adapter_model.safetensors"))
    live = get_peft_model_state_dict(pm)
    dropped = set()
    for k, v in saved.items():
        if k not in live or live[k].shape != v.shape or not torch.equal(live[k].float(), v.float()):
            dropped.add(k)
    return "loads", dropped


def regraft_outcome(src_dir, model_dir, adapter_dir):
    # Lineage (RG2xx) is regraft's own judgement, not PEFT's: the oracle covers the loading mechanics.
    rep = check(read_model_folder(src_dir), [read_model_folder(model_dir)], read_adapter(adapter_dir), ignore=["RG2"])
    area = rep.targets[0].areas["lora"]
    adapter = read_adapter(adapter_dir)
    by_module = {(f"{m.module}.{m.param}" if m.kind == "fused_experts" else m.module): m for m in adapter.modules}
    dropped = {t.name for r in area.rows if r.status in ("dropped", "missing") for t in by_module[r.module].tensors}
    mism = {r.module for r in area.rows if r.status == "mismatch"}
    return area.verdict, dropped, mism


CASES = [(a, t) for a in ADAPTERS for t in MODELS]


@pytest.mark.parametrize("adapter,target", CASES, ids=[f"{a}->{t}" for a, t in CASES])
def test_check_agrees_with_peft(world, adapter, target):
    models, adapters = world
    base = ADAPTERS[adapter][0]
    src_dir, tgt_dir, ad_dir = models[base][1], models[target][1], adapters[adapter]
    peft_result, peft_set = peft_outcome(tgt_dir, ad_dir)
    verdict, dropped, mism = regraft_outcome(src_dir, tgt_dir, ad_dir)
    says_loads = verdict in (Verdict.LOADS, Verdict.LOADS_DIFFERENT_WEIGHTS)
    peft_loads_all = peft_result == "loads" and not peft_set
    assert says_loads == peft_loads_all, (verdict, peft_result, sorted(peft_set)[:5])
    if peft_result == "fails":
        assert mism == peft_set, "check must name exactly the modules PEFT fails on"
    else:
        assert dropped == peft_set, "check must name exactly the tensors PEFT silently drops"


def test_self_pair_loads_and_sibling_is_flagged(world, tmp_path):
    import shutil

    from tests.factories import set_base

    models, adapters = world
    ad = tmp_path / "lora"
    shutil.copytree(adapters["attn"], ad)
    set_base(ad, "org/Tiny-Base")
    base = read_model_folder(models["dense"][1], name="org/Tiny-Base")
    sibling = read_model_folder(models["dense"][1], name="org/Tiny-Instruct-2507")
    other = read_model_folder(models["dense"][1], name="org/Other-7B")
    rep = check(base, [base, sibling, other], read_adapter(ad))
    # a name regraft cannot place is no evidence of other weights: lineage unconfirmed (RG206), never RG202
    assert [t.verdict for t in rep.targets] == [Verdict.LOADS, Verdict.LOADS_DIFFERENT_WEIGHTS, Verdict.LOADS]
    assert [f.code for f in rep.targets[1].findings if f.code.startswith("RG2")] == ["RG201"]
    assert [f.code for f in rep.targets[2].findings if f.code.startswith("RG2")] == ["RG206"]


def test_legacy_per_expert_adapter_loads_exactly_in_peft_and_check(world, tmp_path):
    """A transformers-4 per-expert adapter (written by hand, as v4 trainers save it) on a v5 MoE model."""
    import torch
    from safetensors.torch import save_file

    models, _ = world
    moe_model, moe_dir = models["moe"]
    cfg = moe_model.config
    torch.manual_seed(3)
    sd = {}
    for layer in range(cfg.num_hidden_layers):
        for e in range(cfg.num_experts):
            for proj, (out, inn) in {"gate_proj": (16, 32), "up_proj": (16, 32), "down_proj": (32, 16)}.items():
                key = f"base_model.model.model.layers.{layer}.mlp.experts.{e}.{proj}"
                sd[f"{key}.lora_A.weight"] = torch.randn(4, inn) * 0.1
                sd[f"{key}.lora_B.weight"] = torch.randn(out, 4) * 0.1
    d = tmp_path / "v4"
    d.mkdir()
    save_file(sd, str(d / "adapter_model.safetensors"))
    (d / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8,
        "target_modules": ["gate_proj", "up_proj", "down_proj"], "base_model_name_or_path": str(moe_dir)}))
    rep = check(read_model_folder(moe_dir), [read_model_folder(moe_dir)], read_adapter(d))
    assert rep.targets[0].verdict is Verdict.LOADS
    assert any(f.code == "RG302" for f in rep.targets[0].findings)
    rep8 = check(read_model_folder(moe_dir), [read_model_folder(models["moe-8x"][1])], read_adapter(d))
    assert rep8.targets[0].verdict is Verdict.LOADS_DIFFERENT_WEIGHTS or rep8.targets[0].verdict is Verdict.NEEDS_PORT


def test_fused_adapter_needs_relayout_for_transformers4_and_llamacpp(world):
    models, adapters = world
    moe = read_model_folder(models["moe"][1])
    ad = read_adapter(adapters["moe-experts"])
    assert ad.layout == "moe-v5-fused"
    for runtime in ("peft-transformers4", "llama.cpp"):
        rep = check(moe, [moe], ad, runtime=runtime, ignore=["RG2"])
        assert rep.targets[0].verdict is Verdict.NEEDS_RELAYOUT, runtime
        f = [f for f in rep.targets[0].findings if f.code == "RG404"][0]
        assert "relayouts the experts (exact)" in f.hint
    rep = check(moe, [moe], ad, runtime="sglang", ignore=["RG2"])
    assert rep.targets[0].verdict is Verdict.CANNOT  # no routed-expert LoRA in either layout


def test_lineage_by_weights_overrides_names(world, tmp_path):
    """Both checkpoints local: check measures drift. A +2% noise copy is a sibling whatever its name; an
    independently initialised model of the same shapes is unrelated even if its name says sibling."""
    import torch

    models, adapters = world
    base_model, base_dir = models["dense"]
    noisy = __import__("copy").deepcopy(base_model)
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(torch.randn_like(p) * p.std() * 0.02)
    noisy.save_pretrained(tmp_path / "renamed")
    other_model, other_dir = build_model(tmp_path / "Tiny-Instruct", tiny_config("Qwen/Qwen3-8B", tie_word_embeddings=False), seed=77)
    src = read_model_folder(base_dir, name="org/Tiny-Base")
    sib = read_model_folder(tmp_path / "renamed", name="org/Completely-Different-Name")
    unrel = read_model_folder(other_dir, name="org/Tiny-Instruct")
    rep = check(src, [sib, unrel], read_adapter(adapters["attn"]))
    codes = [[f.code for f in t.findings if f.code.startswith("RG2")] for t in rep.targets]
    assert codes == [["RG201", "RG203", "RG205"], ["RG202", "RG203", "RG205"]]  # RG203: adapter names no base
    assert rep.targets[0].verdict is Verdict.LOADS_DIFFERENT_WEIGHTS
    assert rep.targets[1].verdict is Verdict.NEEDS_PORT
    sigma = [f.data["sigma"] for f in rep.targets[0].findings if f.code == "RG205"][0]
    assert 0.005 < sigma < 0.05
    never = check(src, [sib], read_adapter(adapters["attn"]), options={"drift": "never"})
    # names only, and the names place neither model: unconfirmed, not unrelated
    assert [f.code for f in never.targets[0].findings if f.code.startswith("RG2")] == ["RG203", "RG206"]
