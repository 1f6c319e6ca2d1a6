"""RG205 from the adapter's own declared base: when base_model_name_or_path is a local folder with weights and the
target is local too, check measures the drift between them (SOURCE need not be the base)."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")


@pytest.mark.slow
def test_declared_local_base_is_measured_against_the_target(tmp_path):
    from regraft.checks.engine import check
    from regraft.checks.finding import Verdict
    from regraft.inspection.adapter import read_adapter
    from regraft.inspection.resolve import read_model_folder
    from tests.factories import build_adapter, build_model, set_base, tiny_config

    cfg = tiny_config("Qwen/Qwen3-8B", tie_word_embeddings=False)
    base_model, base_dir = build_model(tmp_path / "base", cfg, seed=1)
    noisy = copy.deepcopy(base_model)
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(torch.randn_like(p) * p.std() * 0.02)
    noisy.save_pretrained(tmp_path / "finetuned")
    _, other_dir = build_model(tmp_path / "other", cfg, seed=7)
    ad = build_adapter(tmp_path / "lora", base_model, target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8)
    set_base(ad, str(base_dir))
    adapter = read_adapter(ad)
    sib = read_model_folder(tmp_path / "finetuned")
    unrel = read_model_folder(other_dir)
    for target, code, verdict, rel in ((sib, "RG201", Verdict.LOADS_DIFFERENT_WEIGHTS, "sibling"),
                                       (unrel, "RG202", Verdict.NEEDS_PORT, "unrelated")):
        t = check(target, [target], adapter).targets[0]  # SOURCE = the target itself: no SOURCE drift
        codes = [f.code for f in t.findings if f.code.startswith("RG2")]
        assert code in codes and "RG205" in codes, codes
        f205 = next(f for f in t.findings if f.code == "RG205")
        assert f205.data["relation"] == rel and str(base_dir) in f205.message
        assert next(f for f in t.findings if f.code == code).data["evidence"] == "weights"
        assert t.verdict is verdict
    never = check(sib, [sib], adapter, options={"drift": "never"}).targets[0]
    assert "RG205" not in [f.code for f in never.findings]
