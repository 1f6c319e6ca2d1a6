"""PEFT as the oracle on the late-2026 shapes: tiny gpt-oss (fused experts in (E, in, out) orientation, biased
attention, sinks) and tiny Qwen3.6-35B-A3B (hybrid linear attention, 256->4 experts with a shared expert, as the
text-only Qwen3_5MoeForCausalLM). `check` says "loads" exactly when PEFT applies every tensor, and names exactly
what PEFT drops or fails on (same harness as tests/core/test_oracle_peft.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("peft")

from tests.factories import build_adapter, build_model  # noqa: E402
from tests.core.test_architectures import tiny  # noqa: E402
from tests.core.test_oracle_peft import peft_outcome, regraft_outcome  # noqa: E402


def oss(**over):
    cfg = tiny("openai/gpt-oss-20b", tie_word_embeddings=False, intermediate_size=24, **over)
    cfg.pop("quantization_config")  # MXFP4 needs kernels; the bf16 layout is what PEFT wraps
    return cfg


def qwen36_text(**over):
    """Qwen3.6-35B-A3B's language model as the text-only class (what AutoModelForCausalLM builds from it)."""
    cfg = tiny("Qwen/Qwen3.6-35B-A3B")["text_config"]
    cfg.update(model_type="qwen3_5_moe_text", architectures=["Qwen3_5MoeForCausalLM"], tie_word_embeddings=False,
               moe_intermediate_size=8, **over)
    return cfg


MODELS = {"oss": oss(), "oss-8x": oss(num_local_experts=8), "oss-wide": oss(hidden_size=48),
          "q36": qwen36_text(), "q36-8x": qwen36_text(num_experts=8)}
ADAPTERS = {
    "oss-attn": ("oss", dict(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])),
    "oss-experts": ("oss", dict(target_modules=["q_proj"],
                                target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])),
    "q36-attn": ("q36", dict(target_modules=["q_proj", "v_proj", "in_proj_qkv", "out_proj"])),
    "q36-mlp": ("q36", dict(target_modules=["gate_proj", "up_proj", "down_proj"])),
}
CASES = [(a, t) for a, (base, _) in ADAPTERS.items() for t in MODELS if t.split("-")[0] == base.split("-")[0]]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle-new")
    models = {name: build_model(root / name, cfg, seed=i) for i, (name, cfg) in enumerate(MODELS.items())}
    adapters = {name: build_adapter(root / f"lora-{name}", models[base][0], r=4, lora_alpha=8, **kw)
                for name, (base, kw) in ADAPTERS.items()}
    return models, adapters


@pytest.mark.slow
@pytest.mark.parametrize("adapter,target", CASES, ids=[f"{a}->{t}" for a, t in CASES])
def test_check_agrees_with_peft(world, adapter, target):
    from regraft.checks.finding import Verdict

    models, adapters = world
    src_dir, tgt_dir, ad_dir = models[ADAPTERS[adapter][0]][1], models[target][1], adapters[adapter]
    peft_result, peft_set = peft_outcome(tgt_dir, ad_dir)
    verdict, dropped, mism = regraft_outcome(src_dir, tgt_dir, ad_dir)
    says_loads = verdict in (Verdict.LOADS, Verdict.LOADS_DIFFERENT_WEIGHTS)
    assert says_loads == (peft_result == "loads" and not peft_set), (verdict, peft_result, sorted(peft_set)[:5])
    if peft_result == "fails":
        assert mism == peft_set, "check must name exactly the modules PEFT fails on"
    else:
        assert dropped == peft_set, "check must name exactly the tensors PEFT silently drops"
    if src_dir == tgt_dir:
        assert verdict is Verdict.LOADS  # every case on its own model loads, in PEFT and in check
