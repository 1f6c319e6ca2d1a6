"""port/layouts.py: every conversion is exact. The oracle: the producer's own reading of its tensors, merged into
the base by hand, against PEFT loading the converted adapter (max |logit diff|)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from regraft.errors import InputError  # noqa: E402
from regraft.port.layouts import convert  # noqa: E402
from tests.layouts._world import hand_merged_logits, moe_world, read_adapter_files, save_adapter  # noqa: E402
from tests.factories import peft_adapter, peft_logits  # noqa: E402

TOL = 1e-5
G = "base_model.model.model.layers.{}.mlp.experts"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return moe_world(tmp_path_factory.mktemp("layouts"))


def _q_delta(t, scale, layer):
    a = t[f"base_model.model.model.layers.{layer}.self_attn.q_proj.lora_A.weight"]
    b = t[f"base_model.model.model.layers.{layer}.self_attn.q_proj.lora_B.weight"]
    return scale * b @ a


def _fused_scales(cfg):
    r, alpha = cfg["r"], cfg["lora_alpha"]
    return alpha / r


def test_blockwise_to_interleaved_matches_unsloth_reading(world, tmp_path):
    t, cfg = read_adapter_files(world["fused"])
    E, s = world["E"], _fused_scales(cfg)
    # an adapter whose lora_B is meant block-wise (Unsloth's forward before unsloth-zoo#1269): take PEFT's tensors
    # as they are and *read* them block-wise; that reading defines the update the converted adapter must compute
    dense, experts = {}, {}
    for layer in range(2):
        pre = G.format(layer)
        for nest, key in ((".base_layer", "gate_up_proj"), ("", "down_proj")):
            a, b = t[f"{pre}{nest}.lora_A.weight"], t[f"{pre}{nest}.lora_B.weight"]
            r = a.shape[0] // E
            a3, b3 = a.reshape(E, r, -1), b.reshape(b.shape[0], E, r)  # block: expert slowest
            experts[f"model.layers.{layer}.mlp.experts.{key}"] = s * torch.stack([b3[:, e] @ a3[e] for e in range(E)])
        dense[f"model.layers.{layer}.self_attn.q_proj"] = _q_delta(t, s, layer)
    ref = hand_merged_logits(world["moe"], dense, experts, world["x"])
    new_t, new_cfg, notes = convert(t, cfg, "unsloth-3d-blockwise", "peft-3d-linear", {"num_experts": E})
    out = save_adapter(tmp_path / "conv", new_t, new_cfg)
    got = peft_logits(world["moe"], out, world["x"])
    assert (got - ref).abs().max().item() < TOL
    unconverted = peft_logits(world["moe"], world["fused"], world["x"])
    assert (unconverted - ref).abs().max().item() > 100 * TOL  # read interleaved, the block-wise meaning is lost
    assert "permutation" in notes[0]


def test_positional_to_linear_matches_peft_018_reading(world, tmp_path):
    """PEFT 0.18 (and NeMo-Automodel before #3626) stored A [E*r, out], B [in, E*r]: delta_e = A_e^T B_e^T."""
    t, cfg = read_adapter_files(world["fused"])
    E, s = world["E"], _fused_scales(cfg)
    g = torch.Generator().manual_seed(3)
    pos = dict(t)
    dense, experts = {}, {}
    for layer in range(2):
        pre = G.format(layer)
        for nest, key in ((".base_layer", "gate_up_proj"), ("", "down_proj")):
            a, b = t[f"{pre}{nest}.lora_A.weight"], t[f"{pre}{nest}.lora_B.weight"]
            # positional tensors: A has the (out) width, B the (in) width; fresh numbers (2*I == H: same shapes)
            out_f, in_f = b.shape[0], a.shape[1]
            pa = torch.randn(a.shape[0], out_f, generator=g) * 0.3
            pb = torch.randn(in_f, b.shape[1], generator=g) * 0.3
            pos[f"{pre}{nest}.lora_A.weight"], pos[f"{pre}{nest}.lora_B.weight"] = pa, pb
            r = pa.shape[0] // E
            a3, b3 = pa.reshape(E, r, -1), pb.reshape(pb.shape[0], r, E)
            experts[f"model.layers.{layer}.mlp.experts.{key}"] = s * torch.stack(
                [a3[e].T @ b3[:, :, e].T for e in range(E)])
        dense[f"model.layers.{layer}.self_attn.q_proj"] = _q_delta(t, s, layer)
    ref = hand_merged_logits(world["moe"], dense, experts, world["x"])
    with pytest.raises(RuntimeError, match="size mismatch") as err:  # PEFT 0.21 as is: down_proj (I != H) refused,
        peft_logits(world["moe"], save_adapter(tmp_path / "pos", pos, cfg), world["x"])
    assert "experts.lora_A" in str(err.value) and "base_layer" not in str(err.value)  # gate_up (2I == H) not seen
    new_t, new_cfg, _ = convert(pos, cfg, "peft-3d-positional", "peft-3d-linear", {"num_experts": E})
    got = peft_logits(world["moe"], save_adapter(tmp_path / "lin", new_t, new_cfg), world["x"])
    assert (got - ref).abs().max().item() < TOL
    assert new_cfg["peft_version"] == "0.19.1"


def test_megatron_per_projection_to_linear(world, tmp_path):
    t, cfg = read_adapter_files(world["fused"])
    E, H, I, r = world["E"], world["H"], world["I"], 2
    s = _fused_scales(cfg)
    g = torch.Generator().manual_seed(5)
    meg = {k: v for k, v in t.items() if ".experts." not in k}
    dense, experts = {}, {}
    for layer in range(2):
        pre = G.format(layer)
        for proj, (out_f, in_f) in (("gate_up_proj", (2 * I, H)), ("down_proj", (H, I))):
            a = torch.randn(E, r, in_f, generator=g) * 0.3
            b = torch.randn(E, out_f, r, generator=g) * 0.3
            meg[f"{pre}.{proj}.lora_A.weight"], meg[f"{pre}.{proj}.lora_B.weight"] = a, b
            experts[f"model.layers.{layer}.mlp.experts.{proj}"] = s * torch.stack([b[e] @ a[e] for e in range(E)])
        dense[f"model.layers.{layer}.self_attn.q_proj"] = _q_delta(t, s, layer)
    ref = hand_merged_logits(world["moe"], dense, experts, world["x"])
    mcfg = {k: v for k, v in cfg.items() if k != "target_parameters"}
    new_t, new_cfg, _ = convert(meg, mcfg, "megatron-3d-per-projection", "peft-3d-linear", {"num_experts": E})
    assert new_cfg["target_parameters"] == ["mlp.experts.down_proj", "mlp.experts.gate_up_proj"]
    got = peft_logits(world["moe"], save_adapter(tmp_path / "meg", new_t, new_cfg), world["x"])
    assert (got - ref).abs().max().item() < TOL


def test_tinker_raw_to_per_expert(world, tmp_path):
    E, H, I, r = world["E"], world["H"], world["I"], 2
    g = torch.Generator().manual_seed(7)
    raw, experts = {}, {}
    s = 4 / 2
    for layer in range(2):
        pre = G.format(layer)
        shapes = {"w1": ((1, r, H), (E, I, r)), "w3": ((1, r, H), (E, I, r)), "w2": ((E, r, I), (1, H, r))}
        for w, (sa, sb) in shapes.items():
            raw[f"{pre}.{w}.lora_A.weight"] = torch.randn(*sa, generator=g) * 0.3
            raw[f"{pre}.{w}.lora_B.weight"] = torch.randn(*sb, generator=g) * 0.3

        def d(w, e):
            a, b = raw[f"{pre}.{w}.lora_A.weight"], raw[f"{pre}.{w}.lora_B.weight"]
            return s * b[0 if b.shape[0] == 1 else e] @ a[0 if a.shape[0] == 1 else e]

        experts[f"model.layers.{layer}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([d("w1", e), d("w3", e)]) for e in range(E)])
        experts[f"model.layers.{layer}.mlp.experts.down_proj"] = torch.stack([d("w2", e) for e in range(E)])
    ref = hand_merged_logits(world["moe"], {}, experts, world["x"])
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 4, "lora_dropout": 0.0,
           "target_modules": []}
    new_t, new_cfg, _ = convert(raw, cfg, "tinker-raw", "peft-per-expert", {"num_experts": E})
    assert f"{G.format(0)}.3.up_proj.lora_B.weight" in new_t
    got = peft_logits(world["moe"], save_adapter(tmp_path / "tk", new_t, new_cfg), world["x"])
    assert (got - ref).abs().max().item() < TOL


def test_mlx_round_trip_and_reading(world, tmp_path):
    dense_dir = world["dense"]
    lora = peft_adapter(dense_dir, tmp_path / "lora", targets=["q_proj", "v_proj", "down_proj"], r=4, alpha=8)
    t, cfg = read_adapter_files(lora)
    mlx_t, mlx_cfg, _ = convert(t, cfg, "peft", "mlx-lm", {"num_hidden_layers": 2})
    assert mlx_cfg["num_layers"] == 2 and mlx_cfg["lora_parameters"] == {
        "rank": 4, "scale": 2.0, "dropout": 0.0, "keys": ["mlp.down_proj", "self_attn.q_proj", "self_attn.v_proj"]}
    k = "model.layers.0.self_attn.q_proj.lora_a"
    assert list(mlx_t[k].shape) == [32, 4]  # [in, r]
    # MLX's reading: y = x W^T + scale * (x a) b  ->  delta W = scale * (a b)^T
    sc = mlx_cfg["lora_parameters"]["scale"] * 1.5  # a different scale, so alpha = scale * r is exercised
    mlx_cfg["lora_parameters"]["scale"] = sc
    dense = {}
    for name in mlx_t:
        if name.endswith(".lora_a"):
            mod = name[: -len(".lora_a")]
            dense[mod] = sc * (mlx_t[name] @ mlx_t[mod + ".lora_b"]).T
    ref = hand_merged_logits(dense_dir, dense, {}, world["x"])
    back_t, back_cfg, notes = convert(mlx_t, mlx_cfg, "mlx-lm", "peft", {})
    got = peft_logits(dense_dir, save_adapter(tmp_path / "back", back_t, back_cfg), world["x"])
    assert (got - ref).abs().max().item() < TOL
    assert back_cfg["lora_alpha"] == sc * 4 and "lora_alpha" in notes[0]


def test_refusals_are_one_line_input_errors(world):
    t, cfg = read_adapter_files(world["fused"])
    with pytest.raises(InputError, match="needs the base model's num_experts"):
        convert(t, cfg, "unsloth-3d-blockwise", "peft-3d-linear", {})
    with pytest.raises(InputError, match="No exact conversion"):
        convert(t, cfg, "peft-3d-linear", "mlx-lm")
    with pytest.raises(InputError, match="expert LoRA do not convert"):
        convert(t, cfg, "peft", "mlx-lm")
    with pytest.raises(InputError, match="SwitchLinear"):
        convert({"model.layers.0.mlp.switch_mlp.up_proj.lora_a": torch.zeros(4, 32, 2)},
                {"lora_parameters": {"rank": 2}}, "mlx-lm", "peft")


def test_cli_port_lora_layout_mlx_to_peft(world, tmp_path, capsys):
    """`regraft port lora MLX_DIR --to BASE --layout auto:peft --out OUT`: PEFT loads OUT with MLX's outputs."""
    from regraft.cli.main import main

    dense_dir = world["dense"]
    lora = peft_adapter(dense_dir, tmp_path / "lora", targets=["q_proj", "o_proj"], r=4, alpha=8)
    t, cfg = read_adapter_files(lora)
    mlx_t, mlx_cfg, _ = convert(t, cfg, "peft", "mlx-lm", {"num_hidden_layers": 2})
    mlx_dir = save_adapter(tmp_path / "mlx", mlx_t, mlx_cfg, weights="adapters.safetensors")
    out = tmp_path / "peft-out"
    assert main(["port", "lora", str(mlx_dir), "--to", str(dense_dir), "--layout", "auto:peft", "--out", str(out)]) == 0
    assert "layout mlx-lm -> peft" in capsys.readouterr().out
    ref = peft_logits(dense_dir, lora, world["x"])
    got = peft_logits(dense_dir, out, world["x"])
    assert (got - ref).abs().max().item() < TOL
    # and back: PEFT -> MLX-LM writes adapters.safetensors
    back = tmp_path / "mlx-back"
    assert main(["port", "lora", str(out), "--to", str(dense_dir), "--layout", "peft:mlx-lm", "--out", str(back)]) == 0
    bt, bcfg = read_adapter_files(back, "adapters.safetensors")
    assert bcfg["lora_parameters"]["rank"] == 4 and all(torch.equal(bt[k], mlx_t[k]) for k in mlx_t)


def test_cli_layout_undecided_is_refused(world, tmp_path, capsys):
    from regraft.cli.main import main

    (tmp_path / "u").mkdir()
    t, cfg = read_adapter_files(world["fused"])
    gu = {k: v for k, v in t.items() if "base_layer" in k}  # gate_up only, 2*I == H, no peft_version
    cfg = {k: v for k, v in cfg.items() if k != "peft_version"}
    save_adapter(tmp_path / "u", gu, {**cfg, "target_parameters": ["mlp.experts.gate_up_proj"]})
    code = main(["port", "lora", str(tmp_path / "u"), "--to", str(world["moe"]), "--layout", "auto:peft-3d-linear",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "Cannot tell the layout" in err and "candidates: peft-3d-linear, peft-3d-positional" in err
    assert not (tmp_path / "o").exists()
