"""verify: coverage proven on real transformers + PEFT loading; silent drops make it fail."""

import json
import warnings

import pytest

from regraft.verify import verify
from tests import factories as T

warnings.filterwarnings("ignore")


def test_dense_adapter_is_fully_applied(tiny):
    r = verify(tiny["lora"], tiny["dense"], merge=True)
    assert r.ok and r.counts == {"applied": 14}
    assert all(m.rel_err < 1e-6 and m.runs and m.effect > 1e-4 for m in r.modules)
    assert r.merged_max_abs < 1e-4


def test_moe_per_expert_and_fused_adapters_cover_every_expert(tiny, tmp_path):
    r = verify(tiny["v4"], tiny["moe"])
    assert r.ok and r.counts == {"applied": 28}
    experts = [m for m in r.modules if ".experts." in m.module]
    assert len(experts) == 24 and all(m.effect > 1e-4 and "forced" in m.note for m in experts)
    from peft import PeftModel

    pm = PeftModel.from_pretrained(T.load(tiny["moe"]), str(tiny["v4"]))
    pm.save_pretrained(tmp_path / "fused")
    r2 = verify(tmp_path / "fused", tiny["moe"])
    assert r2.ok and r2.counts == {"applied": 28}


def test_dense_lora_on_moe_is_caught(tiny):
    """PEFT loads it without an error: the dense MLP LoRA is dropped and the experts get zero LoRA."""
    r = verify(tiny["lora"], tiny["moe"])
    assert not r.ok
    dropped = [m.module for m in r.modules if m.status == "dropped"]
    assert len(dropped) == 6 and all(".mlp." in d for d in dropped)
    assert r.counts["zero-init"] > 0


def test_extra_layers_are_caught(tiny, tmp_path):
    deep = T.make_model(tmp_path / "deep", "qwen3", num_hidden_layers=4)
    lora4 = T.peft_adapter(deep, tmp_path / "lora4")
    r = verify(lora4, tiny["dense"])
    assert not r.ok and r.counts["dropped"] == 14 and r.counts["applied"] == 14
    # the other way round: every tensor applies, two layers have no LoRA (PEFT zero-inits them): still complete
    r2 = verify(tiny["lora"], deep)
    assert r2.ok and r2.counts == {"applied": 14, "zero-init": 14}


def test_renamed_prefix_is_caught(tiny, tmp_path):
    """Keys under another prefix (the Gemma-3 PT/IT case): PEFT loads nothing of it and says nothing."""
    import shutil

    from safetensors.torch import load_file, save_file

    out = tmp_path / "renamed"
    shutil.copytree(tiny["lora"], out)
    sd = load_file(str(out / "adapter_model.safetensors"))
    sd = {k.replace("base_model.model.model.", "base_model.model.language_model."): v for k, v in sd.items()}
    save_file(sd, str(out / "adapter_model.safetensors"))
    r = verify(out, tiny["dense"])
    assert not r.ok and r.counts.get("dropped") == 14


def test_reference_compares_source_and_target(tiny):
    r = verify(tiny["lora"], tiny["sib"], reference_dir=tiny["dense"])
    ref = r.reference
    assert r.ok and 0.5 < ref["top1_agreement"] <= 1.0 and ref["kl"] >= 0
    r2 = verify(tiny["lora"], tiny["other"], reference_dir=tiny["dense"])
    assert r2.reference["kl"] > 10 * ref["kl"]


def test_cli_exit_codes(tiny, capsys):
    from regraft.cli.main import main

    assert main(["verify", str(tiny["lora"]), "--on", str(tiny["dense"])]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["verify", str(tiny["lora"]), "--on", str(tiny["moe"]), "--format", "json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] is False and d["counts"]["dropped"] == 6
    assert main(["verify", str(tiny["lora"]), "--on", str(tiny["dir"] / "nope")]) == 2


def test_embedding_lora_and_modules_to_save_are_checked(tiny, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    m = T.load(tiny["dense"])
    pm = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"],
                                      modules_to_save=["lm_head"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n or "modules_to_save" in n:
                p.add_(torch.randn_like(p) * 0.1)
    pm.save_pretrained(tmp_path / "emb")
    r = verify(tmp_path / "emb", tiny["dense"])
    assert r.ok, r.summary()
    assert r.counts == {"applied": 3, "full-copy ok": 1}
    emb = next(m for m in r.modules if m.module == "model.embed_tokens")
    assert emb.rel_err < 1e-6 and emb.effect > 0


def test_shape_mismatch_is_reported_not_raised(tiny, tmp_path, capsys):
    from regraft.cli.main import main

    wide = T.make_model(tmp_path / "wide", "qwen3", hidden_size=48)
    r = verify(tiny["lora"], wide)
    assert not r.ok and "size mismatch" in r.load_error and r.counts == {"dropped": 14}
    assert main(["verify", str(tiny["lora"]), "--on", str(wide)]) == 1
    assert "PEFT refused" in capsys.readouterr().out
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text((tiny["dense"] / "config.json").read_text())
    assert main(["verify", str(tiny["lora"]), "--on", str(tmp_path / "noweights")]) == 2


def test_bfloat16_loading(tiny):
    r = verify(tiny["v4"], tiny["moe"], dtype="bfloat16", n_probes=2, seq_len=16)
    assert r.ok and r.counts == {"applied": 28}
    assert max(m.rel_err for m in r.modules) < 2e-2


def test_dora_magnitudes_are_checked(tiny, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    src = T.peft_adapter(tiny["dense"], tmp_path / "dora", targets=["q_proj", "v_proj"], use_dora=True)
    r = verify(src, tiny["dense"])
    assert r.ok and r.counts == {"applied": 4} and all("DoRA magnitude loaded" in m.note for m in r.modules)
    # magnitudes missing from the file: PEFT re-initialises them from the weight norms, without a word
    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    sd = {k: v for k, v in load_file(str(broken / "adapter_model.safetensors")).items() if "magnitude" not in k}
    save_file(sd, str(broken / "adapter_model.safetensors"))
    r2 = verify(broken, tiny["dense"])
    assert r2.ok  # nothing in the file is left out; the re-initialised magnitudes are PEFT's default
