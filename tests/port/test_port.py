"""port lora: every written adapter loads in real PEFT on the target and computes the same update as the input."""

import json
import warnings
from pathlib import Path

import pytest

from regraft.errors import InputError, OutputExistsError
from regraft.inspection.resolve import resolve_model
from regraft.port.api import PortBlocked, port_lora
from tests import factories as T

warnings.filterwarnings("ignore")


def _st(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "adapter_model.safetensors"))


def _same_function(model, a, b, atol=1e-5):
    """PEFT(model, a) == PEFT(model, b) == manual merge of b; returns the max differences."""
    x = T.ids()
    la, lb = T.peft_logits(model, a, x), T.peft_logits(model, b, x)
    ref = T.merged_logits(model, b, x)
    d1, d2 = float((la - lb).abs().max()), float((lb - ref).abs().max())
    assert d1 < atol and d2 < atol, (d1, d2)
    base = T.load(model)(input_ids=x).logits
    assert float((lb - base).abs().max()) > 1e-3  # the adapter does something
    from regraft.verify import verify

    v = verify(b, model, n_probes=2, seq_len=16)
    assert v.ok and set(v.counts) <= {"applied", "full-copy ok"}, v.summary()  # every tensor applied and effective
    return d1, d2


def test_copy_to_sibling_keeps_tensors_and_attaches_drift(tiny, tmp_path):
    out = tmp_path / "copy"
    r = port_lora(tiny["lora"], resolve_model(str(tiny["sib"])), out, source=resolve_model(str(tiny["dense"])),
                  revision="v2")
    assert r.unchanged and r.plan.counts() == {"copy": 14}
    assert (out / "adapter_model.safetensors").read_bytes() == (tiny["lora"] / "adapter_model.safetensors").read_bytes()
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny["sib"]) and cfg["revision"] == "v2"
    rep = json.loads((out / "regraft_port.json").read_text())
    assert rep["drift"]["measured"] and rep["drift"]["verdict"] == "siblings" and rep["drift"]["sigma"] < 0.05
    x = T.ids()
    got = T.peft_logits(tiny["sib"], out, x)
    assert float((got - T.merged_logits(tiny["sib"], out, x)).abs().max()) < 1e-5


def test_copy_to_unrelated_is_flagged_by_drift(tiny, tmp_path):
    r = port_lora(tiny["lora"], resolve_model(str(tiny["other"])), tmp_path / "c",
                  source=resolve_model(str(tiny["dense"])))
    assert r.drift["verdict"] == "unrelated" and r.drift["sigma"] > 0.3
    assert any("copy rule says no" in n for n in r.plan.notes)


def test_relayout_round_trip_is_bit_exact_and_merged_outputs_match(tiny, tmp_path):
    moe = resolve_model(str(tiny["moe"]))
    v5 = tmp_path / "v5"
    r = port_lora(tiny["v4"], moe, v5, layout="v5")
    assert r.plan.counts()["relayout"] == 24
    cfg = json.loads((v5 / "adapter_config.json").read_text())
    assert cfg["target_parameters"] == ["down_proj", "gate_up_proj"]
    assert cfg["rank_pattern"] == {r".*\.gate_up_proj": 4} and cfg["alpha_pattern"] == {r".*\.gate_up_proj": 8}
    s5 = _st(v5)
    assert s5["base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight"].shape == (16, 32)
    assert s5["base_model.model.model.layers.0.mlp.experts.lora_B.weight"].shape == (32, 8)
    back = tmp_path / "v4"
    port_lora(v5, moe, back, layout="v4")
    a, b = _st(tiny["v4"]), _st(back)
    assert set(a) == set(b) and all(a[k].dtype == b[k].dtype and a[k].equal(b[k]) for k in a)
    cfg4 = json.loads((back / "adapter_config.json").read_text())
    assert cfg4["r"] == 2 and cfg4["lora_alpha"] == 4 and not cfg4["rank_pattern"] and not cfg4.get("target_parameters")
    _same_function(tiny["moe"], tiny["v4"], v5)
    _same_function(tiny["moe"], tiny["v4"], back)


def test_peft_saved_fused_adapter_relayouts_to_per_expert(tiny, tmp_path):
    """PEFT's own v4 -> v5 conversion on load, re-saved by PEFT (fused keys), then regraft back to v4."""
    from peft import PeftModel

    pm = PeftModel.from_pretrained(T.load(tiny["moe"]), str(tiny["v4"]))
    pm.save_pretrained(tmp_path / "peft-v5")
    out = tmp_path / "v4"
    port_lora(tmp_path / "peft-v5", resolve_model(str(tiny["moe"])), out, layout="v4")
    a, b = _st(tiny["v4"]), _st(out)
    assert set(a) == set(b) and all(a[k].equal(b[k]) for k in a)


def test_trained_fused_adapter_splits_exactly(tiny, tmp_path):
    """A fused adapter trained as such (gate_up B not block-diagonal): gate and up share A, rank 2r, still exact."""
    src = T.peft_adapter(tiny["moe"], tmp_path / "fused", targets=["q_proj"], r=2, alpha=4,
                         target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])
    out = tmp_path / "v4"
    r = port_lora(src, resolve_model(str(tiny["moe"])), out, layout="v4")
    assert "relayout" in r.plan.counts()
    _same_function(tiny["moe"], src, out)


def test_vllm_pads_rank_and_folds_rslora_and_patterns(tiny, tmp_path):
    src = T.peft_adapter(tiny["dense"], tmp_path / "src", r=4, alpha=6, use_rslora=True,
                         rank_pattern={"q_proj": 12}, alpha_pattern={"v_proj": 3})
    out = tmp_path / "vllm"
    r = port_lora(src, resolve_model(str(tiny["dense"])), out, runtime="vllm")
    assert r.plan.exact and r.plan.rank_out == 16
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and not cfg["use_rslora"] and not cfg["rank_pattern"] and not cfg["alpha_pattern"]
    assert all(t.shape[0] == 16 for k, t in _st(out).items() if "lora_A" in k)
    _same_function(tiny["dense"], src, out)


def test_pad_and_fold_are_exact():
    import torch

    from regraft.port import fixups
    from regraft.port.items import Item

    g = torch.Generator().manual_seed(0)
    it = Item("m", "lora", 0.7, torch.randn(3, 10, generator=g), torch.randn(6, 3, generator=g))
    p = fixups.pad_rank(it, 8)
    assert p.rank == 8 and torch.equal(p.b @ p.a, it.b @ it.a)
    f = fixups.fold_scale(it, 2.0)
    assert f.scale == 2.0 and torch.allclose(f.delta(), it.delta(), rtol=1e-6, atol=1e-7)
    assert abs(fixups.lora_norm(it) - float(it.delta().norm())) < 1e-4


def test_dora_needs_allow_lossy_and_reports_the_loss(tiny, tmp_path):
    src = T.peft_adapter(tiny["dense"], tmp_path / "dora", targets=["q_proj", "v_proj"], use_dora=True)
    target = resolve_model(str(tiny["dense"]))
    with pytest.raises(PortBlocked):
        port_lora(src, target, tmp_path / "out", runtime="vllm")
    assert not (tmp_path / "out").exists()
    r = port_lora(src, target, tmp_path / "out", runtime="vllm", allow_lossy=True)
    lost = [row.lost for row in r.plan.rows if "drop" in row.actions]
    assert len(lost) == 4 and all(x is not None and 0 < x < 10 for x in lost)
    cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert cfg["use_dora"] is False
    x = T.ids()
    got = T.peft_logits(tiny["dense"], tmp_path / "out", x)
    assert float((got - T.merged_logits(tiny["dense"], tmp_path / "out", x)).abs().max()) < 1e-5


def test_modules_to_save_dropped_for_vllm_with_norm(tiny, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    m = T.load(tiny["dense"])
    pm = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["lm_head"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n or "modules_to_save" in n:
                p.add_(torch.randn_like(p) * 0.01)
    pm.save_pretrained(tmp_path / "mts")
    r = port_lora(tmp_path / "mts", resolve_model(str(tiny["dense"])), tmp_path / "out", runtime="vllm",
                  allow_lossy=True)
    dropped = [row for row in r.plan.rows if row.drop == ["module"]]
    assert [row.module for row in dropped] == ["lm_head"] and 0 < dropped[0].lost < 1
    cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert cfg["modules_to_save"] is None
    assert not any("lm_head" in k for k in _st(tmp_path / "out"))


def _gguf_deltas(path, E):
    import numpy as np

    from regraft.port.gguf_writer import read_gguf_lora

    meta, ts = read_gguf_lora(path)
    alpha = float(meta["adapter.lora.alpha"])
    out = {}
    for k in ts:
        if k.endswith(".lora_a"):
            base = k[: -len(".weight.lora_a")]
            a, b = ts[k], ts[base + ".weight.lora_b"]
            r = a.shape[-2]
            out[base] = (alpha / r) * (np.matmul(b, a))
    return meta, out


def test_gguf_from_fused_adapter_matches_the_peft_update(tiny, tmp_path):
    import numpy as np
    import torch
    from peft import PeftModel

    pm = PeftModel.from_pretrained(T.load(tiny["moe"]), str(tiny["v4"]))
    pm.save_pretrained(tmp_path / "fused")
    out = tmp_path / "lora.gguf"
    r = port_lora(tmp_path / "fused", resolve_model(str(tiny["moe"])), out, runtime="llama.cpp")
    assert r.plan.layout_out == "moe-v4-per-expert"
    meta, deltas = _gguf_deltas(out, 4)
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert meta["general.architecture"] == "qwen3moe"
    assert deltas["blk.0.ffn_gate_exps"].shape == (4, 16, 32) and deltas["blk.1.ffn_down_exps"].shape == (4, 32, 16)
    # against the update PEFT itself builds on the fused model
    with torch.no_grad():
        experts = pm.base_model.model.model.layers[1].mlp.experts
        gu = experts.base_layer.get_delta_weight("default").numpy()
        dn = experts.get_delta_weight("default").numpy()
        q = pm.base_model.model.model.layers[1].self_attn.q_proj.get_delta_weight("default").numpy()
    assert np.abs(deltas["blk.1.ffn_gate_exps"] - gu[:, :16]).max() < 1e-5
    assert np.abs(deltas["blk.1.ffn_up_exps"] - gu[:, 16:]).max() < 1e-5
    assert np.abs(deltas["blk.1.ffn_down_exps"] - dn).max() < 1e-5
    assert np.abs(deltas["blk.1.attn_q"] - q).max() < 1e-5


def test_gguf_folds_rslora_into_b(tiny, tmp_path):
    import numpy as np

    src = T.peft_adapter(tiny["dense"], tmp_path / "rs", r=4, alpha=8, use_rslora=True, rank_pattern={"o_proj": 2})
    out = tmp_path / "rs.gguf"
    r = port_lora(src, resolve_model(str(tiny["dense"])), out, runtime="llama.cpp")
    assert r.plan.exact and r.plan.counts().get("fold")
    _, deltas = _gguf_deltas(out, None)
    from regraft.inspection.adapter import read_adapter
    from regraft.port.items import items_from_spec

    want = {it.module: it.delta().numpy() for it in items_from_spec(read_adapter(src))}
    assert np.abs(deltas["blk.0.attn_output"] - want["model.layers.0.self_attn.o_proj"]).max() < 1e-5
    assert np.abs(deltas["blk.1.ffn_down"] - want["model.layers.1.mlp.down_proj"]).max() < 1e-5


def test_output_safety(tiny, tmp_path):
    target = resolve_model(str(tiny["dense"]))
    with pytest.raises(InputError):
        port_lora(tiny["lora"], target, tiny["lora"])
    with pytest.raises(InputError):
        port_lora(tiny["lora"], target, tiny["lora"] / "inside")
    (tmp_path / "exists").mkdir()
    with pytest.raises(OutputExistsError):
        port_lora(tiny["lora"], target, tmp_path / "exists")
    port_lora(tiny["lora"], target, tmp_path / "exists", force=True, drift=False)
    assert (tmp_path / "exists" / "adapter_model.safetensors").is_file()
    r = port_lora(tiny["lora"], target, tmp_path / "dry", dry_run=True)
    assert not (tmp_path / "dry").exists() and r.plan.counts() == {"copy": 14}
    assert not [p for p in tmp_path.iterdir() if "regraft-tmp" in p.name]


def test_shape_mismatch_is_unsupported_and_blocks(tiny, tmp_path):
    wide = T.make_model(tmp_path / "wide", "qwen3", hidden_size=48)
    target = resolve_model(str(wide))
    with pytest.raises(PortBlocked) as e:
        port_lora(tiny["lora"], target, tmp_path / "out")
    assert all("unsupported" in r.actions for r in e.value.plan.rows)
    assert not (tmp_path / "out").exists()


def test_cli_dry_run_and_blocked_exit_codes(tiny, tmp_path, capsys):
    from regraft.cli.main import main

    assert main(["port", "lora", str(tiny["v4"]), "--to", str(tiny["moe"]), "--runtime", "llama.cpp",
                 "--dry-run", "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["output_format"] == "gguf" and plan["layout_out"] == "moe-v4-per-expert"
    assert main(["port", "lora", str(tiny["lora"]), "--to", str(tiny["moe"]), "--out", str(tmp_path / "x")]) == 1
    out = capsys.readouterr().out
    assert "dense-on-moe" in out and "unsupported" in out
    assert main(["port", "lora", str(tiny["lora"]), "--to", str(tiny["sib"]), "--out", str(tmp_path / "ok"),
                 "--from", str(tiny["dense"])]) == 0
    assert "siblings" in capsys.readouterr().out


@pytest.mark.llamacpp
def test_gguf_loads_in_llama_cpp(tiny, tmp_path):
    """Optional tier: needs llama-cpp-python and REGRAFT_LLAMA_CPP_DIR (vendored llama.cpp with convert_hf_to_gguf.py)."""
    import os
    import subprocess
    import sys

    llama_cpp = pytest.importorskip("llama_cpp")
    src = os.environ.get("REGRAFT_LLAMA_CPP_DIR")
    if not src:
        pytest.skip("set REGRAFT_LLAMA_CPP_DIR to a llama.cpp source tree to convert the base model")
    base = tmp_path / "base.gguf"
    subprocess.run([sys.executable, f"{src}/convert_hf_to_gguf.py", str(tiny["moe"]), "--outfile", str(base),
                    "--outtype", "f32"], check=True)
    lora = tmp_path / "lora.gguf"
    port_lora(tiny["v4"], resolve_model(str(tiny["moe"])), lora, runtime="llama.cpp")
    llm = llama_cpp.Llama(model_path=str(base), lora_path=str(lora), n_ctx=64, verbose=False, logits_all=True)
    assert llm is not None


@pytest.mark.parametrize("inter", [16, 12])  # 16: H == 2I, shapes ambiguous, peft_version decides; 12: by shapes
def test_peft_018_orientation_is_reoriented_exactly(tiny, tmp_path, inter):
    import torch
    from peft import PeftModel
    from safetensors.torch import save_file

    from regraft.inspection.adapter import read_adapter
    from regraft.port import relayout
    from regraft.port.items import items_from_spec, tensor_key

    moe = tiny["moe"] if inter == 16 else T.make_model(tmp_path / "moe12", "qwen3_moe", moe_intermediate_size=12)
    v4 = tiny["v4"] if inter == 16 else T.v4_moe_adapter(moe, tmp_path / "v4")
    pm = PeftModel.from_pretrained(T.load(moe), str(v4))
    pm.save_pretrained(tmp_path / "new")
    spec = read_adapter(tmp_path / "new")
    old = tmp_path / "old"
    old.mkdir()
    sd = {}
    for it in items_from_spec(spec):
        if it.kind == "fused_experts":
            it = relayout.to_old_orientation(it, 4)
        for slot in ("a", "b"):
            sd[tensor_key(it, slot)] = getattr(it, slot)
    save_file(sd, str(old / "adapter_model.safetensors"))
    cfg = json.loads((tmp_path / "new" / "adapter_config.json").read_text())
    cfg["peft_version"] = "0.18.0"
    (old / "adapter_config.json").write_text(json.dumps(cfg))
    r = port_lora(old, resolve_model(str(moe)), tmp_path / "fixed")
    assert len(r.plan.reoriented) == 4 and r.plan.exact
    a, b = _st(tmp_path / "new"), _st(tmp_path / "fixed")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_trained_fused_adapter_to_vllm_pads_past_the_split_rank(tiny, tmp_path):
    src = T.peft_adapter(tiny["moe"], tmp_path / "fused", targets=["q_proj"], r=16, alpha=8, use_rslora=True,
                         target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])
    out = tmp_path / "vllm"
    r = port_lora(src, resolve_model(str(tiny["moe"])), out, runtime="vllm")
    assert r.plan.layout_out == "moe-v4-per-expert" and r.plan.rank_out == 16
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and not cfg["use_rslora"] and not cfg["rank_pattern"]
    _same_function(tiny["moe"], src, out)


def test_sglang_drops_routed_expert_lora_only_when_allowed(tiny, tmp_path):
    moe = resolve_model(str(tiny["moe"]))
    with pytest.raises(PortBlocked) as e:
        port_lora(tiny["v4"], moe, tmp_path / "sg", runtime="sglang")
    assert len(e.value.plan.blocked) == 24
    r = port_lora(tiny["v4"], moe, tmp_path / "sg", runtime="sglang", allow_lossy=True)
    dropped = [row for row in r.plan.rows if "drop" in row.actions]
    assert len(dropped) == 24 and all(row.lost == 1.0 and "||sBA||=" in row.lost_what for row in dropped)
    keys = _st(tmp_path / "sg")
    assert keys and not any("experts" in k for k in keys)
    from regraft.verify import verify

    v = verify(tmp_path / "sg", tiny["moe"], n_probes=2, seq_len=16)
    assert v.ok and v.counts == {"applied": 4}


def test_copy_keeps_patterns_and_rslora_for_peft(tiny, tmp_path):
    src = T.peft_adapter(tiny["dense"], tmp_path / "src", r=4, alpha=6, use_rslora=True,
                         rank_pattern={"q_proj": 12}, alpha_pattern={"v_proj": 3})
    out = tmp_path / "out"
    r = port_lora(src, resolve_model(str(tiny["sib"])), out, drift=False)
    assert r.unchanged and r.plan.counts() == {"copy": 14}
    a = json.loads((src / "adapter_config.json").read_text())
    b = json.loads((out / "adapter_config.json").read_text())
    assert {k: v for k, v in a.items() if k not in ("base_model_name_or_path", "revision")} == \
        {k: v for k, v in b.items() if k not in ("base_model_name_or_path", "revision")}
    _same_function(tiny["sib"], src, out)
