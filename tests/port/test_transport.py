"""Closed-form transport (issue 17): pure cores, the streamed passes against whole-model references, and the
variants on tiny real models built at test time (exact on a reparametrisation; MoE source and target)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regraft.errors import InputError
from regraft.port.methods.transport import cores as C
from tests import factories as T

SEEDS = ["q: abc = ", "q: hello = ", "q: zzyx = ", "q: mnop = ", "q: qrstu = "]
MOE = {"moe_intermediate_size": 16, "num_experts": 4, "num_experts_per_tok": 2}


# --------------------------------------------------------------------------- pure cores
def _semi_orthogonal(d_s, d_t, seed=0):
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d_t, d_s)))
    return Q.T  # d_s x d_t, orthonormal rows


def test_align_recovers_a_scaled_rotation_across_widths():
    rng = np.random.default_rng(1)
    Xs = rng.normal(size=(200, 6)) * np.arange(1, 7)
    P0 = 2.5 * _semi_orthogonal(6, 9)
    Xt = Xs @ P0
    P = C.align(Xs, Xt)
    assert np.allclose(P, P0, atol=1e-8)
    # gradients transform with the same rotation (over the scale squared): stacking them changes nothing when exact
    Gs = rng.normal(size=(200, 6))
    assert np.allclose(C.align(Xs, Xt, Gs, Gs @ P0 / 2.5 ** 2), P0, atol=1e-8)
    # and decide the rotation when the activations alone do not (a degenerate, isotropic pair of directions)
    Xs2 = rng.normal(size=(200, 6)) * np.array([1, 1, 0, 0, 0, 0])  # rank 2: four directions unseen
    Gs2 = rng.normal(size=(200, 6))
    only_x = C.align(Xs2, Xs2 @ P0)
    with_g = C.align(Xs2, Xs2 @ P0, Gs2, Gs2 @ P0 / 2.5 ** 2)
    assert np.linalg.norm(with_g / 2.5 - P0 / 2.5) < 1e-6 < np.linalg.norm(only_x / 2.5 - P0 / 2.5)


def test_ridge_and_reduced_rank_recover_a_low_rank_update():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 20))
    W0 = rng.normal(size=(20, 3)) @ rng.normal(size=(3, 12))  # rank 3, d_in x d_out
    Y = X @ W0
    W = C.ridge_fit(X, Y, 1e-10)
    A, B = C.reduced_rank(X, W, 3)
    assert np.allclose((B @ A).T, W0, atol=1e-6)
    assert C.fit_fraction(X, Y, A, B) > 1 - 1e-10
    # dual form (more inputs than rows) gives the primal's answer at the same lambda
    Xw = rng.normal(size=(15, 40))
    Yw = rng.normal(size=(15, 4))
    lam = 1e-3
    scale = float((Xw * Xw).sum()) / 40
    primal = np.linalg.solve(Xw.T @ Xw + lam * scale * np.eye(40), Xw.T @ Yw)
    assert np.allclose(C.ridge_fit(Xw, Yw, lam), primal, atol=1e-8)
    A2, B2 = C.truncate(W0.T, 3)
    assert np.allclose(B2 @ A2, W0.T, atol=1e-8)


@pytest.mark.parametrize("j,l_s,l_t,expect", [(0, 4, 4, (1, 2, 0.0)), (3, 4, 4, (4, 4, 0.0)), (0, 4, 6, (0, 1, 0.667)),
                                              (1, 4, 6, (1, 2, 0.333)), (5, 4, 6, (4, 4, 0.0)), (0, 6, 3, (2, 3, 0.0))])
def test_boundary_weights_relative_depth(j, l_s, l_t, expect):
    lo, hi, w = C.boundary_weights(j, l_s, l_t)
    assert (lo, hi, round(w, 3)) == expect


# --------------------------------------------------------------------------- tiny models
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("transport")
    S = T.make_dense(d / "S")
    Pk = T.reparametrise(S, d / "Pk")
    Tg = T.make_dense(d / "T", "qwen3", seed=3, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                      num_key_value_heads=2)
    SM = T.make_dense(d / "SM", "qwen3_moe", seed=4, **MOE)
    TM = T.make_dense(d / "TM", "qwen3_moe", seed=5, hidden_size=40, num_hidden_layers=3, **MOE)
    T.save_tokenizer(S, Pk, Tg, SM, TM)
    Ad = T.random_adapter(S, d / "Ad", targets=["down_proj"], std=0.5)
    Aall = T.random_adapter(S, d / "Aall", std=0.3)
    AM = T.random_adapter(SM, d / "AM", targets=T.ATTN, std=0.5)
    return {"d": d, "S": S, "Pk": Pk, "T": Tg, "SM": SM, "TM": TM, "Ad": Ad, "Aall": Aall, "AM": AM}


def _kl(world, target, out, adapter="Ad", source="S"):
    from regraft.port import prompts as P
    from regraft.port.fidelity import teacher_fidelity
    from regraft.port.teacher import LocalTeacher

    key = ("items", source, adapter)
    if key not in world:
        world[key] = LocalTeacher(world[source], world[adapter], T.tokenizer()).label(P.from_seeds(SEEDS, 8, seed=99))
    items = world[key]
    base = teacher_fidelity(T.load(target), items)["kl"]
    got = teacher_fidelity(T.with_adapter(target, out), items)["kl"] if out is not None else None
    return base, got


def test_streamed_gradients_equal_autograd_on_the_whole_model(world):
    from regraft.port.methods.transport.passes import streamed_grads

    seqs = T.calib(n_seq=2, L=10, vocab=43)
    G = streamed_grads(world["S"], seqs)
    m = T.load(world["S"])
    for p in m.parameters():
        p.requires_grad_(False)
    keep = {}
    hooks = [lay.register_forward_hook(lambda mod, a, o, i=i: keep.__setitem__(i + 1, o[0] if isinstance(o, tuple) else o))
             for i, lay in enumerate(m.model.layers)]
    ref = []
    for s in seqs:
        x = torch.tensor([s])
        emb = m.get_input_embeddings()(x).detach().requires_grad_(True)
        logits = m(inputs_embeds=emb).logits[0]
        outs = [keep[b] for b in sorted(keep)]
        loss = torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:], reduction="sum")
        ref.append([g[0] for g in torch.autograd.grad(loss, outs[:-1])])  # boundaries 1..L-1 (L: after the norm)
    for h in hooks:
        h.remove()
    for b in range(1, len(G) - 1):
        want = torch.cat([r[b - 1] for r in ref]).double().numpy()
        assert np.allclose(G[b], want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_streamed_source_states_equal_the_whole_model_path(world):
    from regraft.port.methods.transport.passes import source_boundaries

    seqs = T.calib(n_seq=3, L=12, vocab=43)
    b1, a1, how1 = source_boundaries(world["S"], world["Aall"], seqs, stream=True)
    b2, a2, how2 = source_boundaries(world["S"], world["Aall"], seqs, stream=False)
    assert how1.startswith("streamed") and how2.startswith("whole")
    for x, y in zip(b1 + a1, b2 + a2):
        assert np.allclose(x, y, atol=1e-4)
    assert np.abs(a1[-1] - b1[-1]).max() > 1e-2  # the adapter moves the states


@pytest.mark.parametrize("variant", ["ariadne", "bico", "theseus"])
def test_every_variant_is_exact_on_a_reparametrisation(world, variant):
    """Pk is S with permuted/padded width: an adapter on down_proj has an exact image, and every variant finds it."""
    out = world["d"] / f"pk-{variant}"
    kw = {} if variant == "theseus" else {"final": "residual"}
    rep = transport_adapter_(world, "Pk", out, variant, lam_rel=1e-4, stream=variant == "ariadne", **kw)
    base, got = _kl(world, world["Pk"], out)
    assert got < 1e-3 * base, (variant, base, got)
    assert rep.method == f"transport:{variant}" and rep.flags[0].startswith("closed-form")


def test_logit_space_final_target_is_near_exact_on_a_reparametrisation(world):
    """The last layer fitted to the source adapter's logit change pulled back through the target's head (shared
    vocabulary, no alignment): near the exact answer on Pk (the ridge of the pre-image costs a little)."""
    out = world["d"] / "pk-logits"
    transport_adapter_(world, "Pk", out, "ariadne", lam_rel=1e-4, final="logits")
    base, got = _kl(world, world["Pk"], out)
    print("KL", base, got)
    assert got < 0.05 * base


def transport_adapter_(world, target, out, variant, adapter="Ad", source="S", **kw):
    from regraft.port.methods.transport import transport_adapter

    return transport_adapter(world[adapter], world[source], world[target], out, variant=variant, seeds=SEEDS,
                             calib_texts=T.generic_texts(16), n_task=8, n_generic=16, force=True,
                             stream=kw.pop("stream", False), **kw)


def test_ariadne_onto_other_shapes_writes_rank_r_peft_and_moves_towards_the_teacher(world):
    import json

    from safetensors import safe_open

    out = world["d"] / "t-ariadne"
    rep = transport_adapter_(world, "T", out, "ariadne")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and sorted(cfg["target_modules"]) == [f"model.layers.{j}.mlp.down_proj" for j in range(3)]
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        for k in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
            assert 4 in f.get_tensor(k).shape
    base, got = _kl(world, world["T"], out)
    assert got < base  # an unrelated random target: some of the way, not all of it
    assert all(0 < rep.details["layers"][j]["mlp.down_proj"]["explained"] <= 1 for j in range(3))


def test_moe_source_and_moe_target(world):
    """MoE source: the displacement is measured on the whole MoE source+adapter (experts included); MoE target:
    the experts are not Linear modules, so each layer's update goes to the dense attention output o_proj."""
    out = world["d"] / "moe"
    rep = transport_adapter_(world, "TM", out, "ariadne", adapter="AM", source="SM")
    assert rep.details["modules_written"] == 3
    assert all("self_attn.o_proj" in json_key for json_key in rep.details["layers"][0] if "proj" in json_key)
    _, got = _kl(world, world["TM"], out, adapter="AM", source="SM")
    assert got is not None and np.isfinite(got)
    out2 = world["d"] / "moe-dense"
    transport_adapter_(world, "T", out2, "ariadne", adapter="AM", source="SM")
    assert T.with_adapter(world["T"], out2) is not None  # loads in PEFT


def test_refusals(world, tmp_path):
    from regraft.port.methods.transport import transport_adapter

    with pytest.raises(InputError, match="variant"):
        transport_adapter(world["Ad"], world["S"], world["Pk"], tmp_path / "x", variant="nope", seeds=SEEDS)
    with pytest.raises(InputError, match="calibration"):
        transport_adapter(world["Ad"], world["S"], world["Pk"], tmp_path / "x", variant="ariadne")
    assert not (tmp_path / "x").exists()


def test_the_variants_are_in_the_method_table():
    from regraft.port.methods import get, names

    assert {"transport-ariadne", "transport-bico", "transport-theseus"} <= set(names())
    m = get("transport-bico")
    assert m.reads == frozenset({"source", "calib", "prompts"}) and m.trains
