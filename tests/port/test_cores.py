"""Pure cores of the transfer methods, with ground truth (numpy only, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from regraft.port import heads as H
from regraft.port import prompts as P
from regraft.port.layer_match import align_layers, depth_similarity, linear_cka
from regraft.port.linalg import map_factors, neuron_permutation, procrustes, ridge


def test_cka_invariant_to_rotation_and_scale():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 16))
    Q = np.linalg.qr(rng.standard_normal((16, 16)))[0]
    assert linear_cka(X, 3.0 * X @ Q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(X, rng.standard_normal((500, 16))) < 0.2
    assert linear_cka(X, np.zeros((500, 4))) == 0.0


def test_align_layers_order_preserving():
    S = np.eye(3)
    assert align_layers(S) == [0, 1, 2]
    # deeper target with an inserted copy after layer 0: the duplicate gets nothing
    S = np.array([[1.0, 0.9, 0.1, 0.0], [0.1, 0.2, 1.0, 0.1], [0.0, 0.1, 0.2, 1.0]])
    assert align_layers(S) == [0, None, 1, 2]
    # order wins over a higher crossing score: 0->1 and 1->0 would score more but cross
    S = np.array([[0.5, 0.9], [0.9, 0.5]])
    m = align_layers(S)
    assert m in ([0, 1],) and sum(S[i, j] for j, i in enumerate(m)) == pytest.approx(1.0)
    # shallower target: a source layer is dropped, still monotone
    S = depth_similarity(4, 2)
    assert align_layers(S) == [0, 3]


def test_rank_preserving_projection_recovers_basis_change():
    """research perm_check.py: exact basis changes are recovered to machine precision, rank <= r."""
    rng = np.random.default_rng(1)
    d_in, d_out, r, N = 48, 40, 4, 2000
    Ws = rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)
    B, A = rng.standard_normal((d_out, r)) * 0.1, rng.standard_normal((r, d_in)) * 0.1
    Gx = np.linalg.qr(rng.standard_normal((d_in, d_in)))[0]
    Gy = np.linalg.qr(rng.standard_normal((d_out, d_out)))[0] * 1.7
    Wt = Gy @ Ws @ Gx.T
    Xs = rng.standard_normal((N, d_in))
    Xt = Xs @ Gx.T
    Qin = ridge(Xt, Xs, lam=1e-12)
    Rout = ridge(Xs @ Ws.T, Xt @ Wt.T, lam=1e-12)
    At, Bt = map_factors(A, B, Qin, Rout)
    Xtest = rng.standard_normal((200, d_in))
    lhs = (Xtest @ Gx.T) @ (Bt @ At).T
    rhs = (Xtest @ (B @ A).T) @ Gy.T
    assert np.abs(lhs - rhs).max() < 1e-8
    assert np.linalg.matrix_rank(Bt @ At) <= r
    assert At.shape == (r, d_in) and Bt.shape == (d_out, r)


def test_ridge_zero_padded_columns_get_zero_weight():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 6))
    Xt = np.concatenate([X, np.zeros((300, 2))], 1)[:, [3, 6, 0, 1, 7, 2, 4, 5]]
    Q = ridge(Xt, X, lam=1e-9)
    assert np.abs(Q[[1, 4]]).max() < 1e-12
    assert np.abs(Xt @ Q - X).max() < 1e-6


def test_rope_map_commutes_with_rope_and_recovers_scaled_rotation():
    rng = np.random.default_rng(3)
    hd = 16
    Ys = rng.standard_normal((400, hd))
    ang = rng.uniform(0, 2 * np.pi, hd // 2)
    c = 1.3 * np.exp(1j * ang)
    z = (Ys[:, :8] + 1j * Ys[:, 8:]) * c
    Yt = np.concatenate([z.real, z.imag], 1)
    M = H.fit_rope_map(Ys, Yt)
    assert np.abs(Ys @ M - Yt).max() < 1e-10
    x = rng.standard_normal((5, hd))
    for pos in (0, 3, 17, 100):
        assert np.abs(H.rope_rotate(x @ M, pos) - H.rope_rotate(x, pos) @ M).max() < 1e-10
    # a general (unconstrained) map does not commute: this is what the constraint buys
    G = rng.standard_normal((hd, hd))
    assert np.abs(H.rope_rotate(x @ G, 5) - H.rope_rotate(x, 5) @ G).max() > 1e-3


def test_gqa_head_matching_recovers_permutation():
    rng = np.random.default_rng(4)
    nkv_s, gs, hd, N = 2, 2, 8, 600
    nq = nkv_s * gs
    Ks = rng.standard_normal((N, nkv_s * hd))
    Vs = rng.standard_normal((N, nkv_s * hd))
    Qs = rng.standard_normal((N, nq * hd))
    # target: kv groups swapped, q heads swapped inside each group, one extra zero head per group
    kv_perm = [1, 0]
    q_t = []
    for g in kv_perm:
        q_t += [g * gs + 1, g * gs + 0, -1]

    def take(Y, heads):
        return np.concatenate([Y[:, h * hd:(h + 1) * hd] if h >= 0 else np.zeros((N, hd)) for h in heads], 1)

    Kt, Vt, Qt = take(Ks, kv_perm), take(Vs, kv_perm), take(Qs, q_t)
    sq, sk, sv = H.head_cka(Qs, Qt, nq, 6), H.head_cka(Ks, Kt, 2, 2), H.head_cka(Vs, Vt, 2, 2)
    m = H.match_heads(sq, sk, sv, 2, 2)
    assert {b: a for b, (a, _) in m["kv"].items()} == {0: 1, 1: 0}
    assert {b: a for b, (a, _) in m["q"].items()} == {b: a for b, a in enumerate(q_t) if a >= 0}


def test_synthetic_prompts_keep_the_seed_frame_and_guard_leakage():
    seeds = ["T: abcde = ", "T: qwertyu = ", "T: zzkkpp = "]
    test = ["T: hello = "]
    out = P.from_seeds(seeds, 200, seed=0, exclude=test)
    assert len(out) == 200 and len(set(out)) == 200
    assert all(p.startswith("T: ") and p.endswith(" = ") for p in out)
    # seed middles of 5-7 letters: lengths 4-8 (the range widened by the expected sampling gap), all of them used
    assert all(p[3:-3].isalpha() and p[3:-3].islower() and 4 <= len(p[3:-3]) <= 8 for p in out)
    assert {len(p[3:-3]) for p in out} == {4, 5, 6, 7, 8}
    assert not set(out) & set(test)
    lk = P.leakage(out + test, test)
    assert lk["exact"] == 1
    t = P.from_template("mod {choice:7|10}: {digits:1-1}+{digits:1-1} = ", 30, seed=1)
    assert all(x.startswith("mod ") and x.endswith(" = ") for x in t)


def test_length_range_widens_a_few_seeds_by_the_expected_gap():
    assert P.length_range([6, 7, 8, 9, 10]) == (5, 11)  # five seeds that missed the 5-letter items
    assert P.length_range([6, 9]) == (3, 12)
    assert P.length_range([5, 5, 5]) == (5, 5)  # one length: a fixed-length format stays fixed
    assert P.length_range([1, 2]) == (1, 3)  # never below one character
    assert P.length_range([7]) == (7, 7)


def test_excess_selection_and_token_mask():
    import torch

    assert P.select_by_excess([0.1, 3.0, -1.0, 2.0], 0.5) == [1, 3]
    e = torch.arange(10.0)
    m = P.token_mask(e, 0.7)
    assert int(m.sum()) == 7 and bool(m[3:].all())


def test_topk_kl_matches_full_kl_when_k_is_vocab():
    import torch

    from regraft.port.fidelity import topk_kl

    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(torch.randn(5, 12, generator=g), -1)
    lq = torch.log_softmax(torch.randn(5, 12, generator=g), -1)
    tv, ti = lp.topk(12, -1)
    full = (lp.exp() * (lp - lq)).sum(-1)
    assert torch.allclose(topk_kl(tv, ti, lq), full, atol=1e-5)
    tv, ti = lp.topk(3, -1)  # truncated: a lower bound (tail bucket), never negative
    k3 = topk_kl(tv, ti, lq)
    assert bool((k3 >= -1e-6).all()) and bool((k3 <= full + 1e-5).all())


def test_procrustes_exact_on_partial_permutation_and_identity_under_drift():
    """Orthogonal maps: exact on permutation + zero padding; ~ identity between siblings (no regression dilution)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2000, 12)) @ np.diag(np.linspace(0.2, 3, 12))  # anisotropic, as trained activations
    perm = rng.permutation(16)
    P = np.zeros((12, 16))
    for a in range(12):
        P[a, perm[a]] = 1.0
    assert np.allclose(procrustes(X, X @ P), P, atol=1e-9)
    Y = X + 0.3 * rng.standard_normal(X.shape) + 0.2 * X @ rng.standard_normal((12, 12)) / np.sqrt(12)
    W_o, W_r = procrustes(X, Y), ridge(X, Y, 1e-6)
    assert np.linalg.norm(W_o - np.eye(12)) < np.linalg.norm(W_r - np.eye(12))
    assert np.allclose(W_o.T @ W_o, np.eye(12), atol=1e-9)


def test_neuron_permutation_recovers_a_padded_permutation():
    rng = np.random.default_rng(2)
    A = np.maximum(rng.standard_normal((3000, 20)), 0)  # post-activation-like features
    perm = rng.permutation(24)
    At = np.zeros((3000, 24))
    At[:, perm[:20]] = A
    P = neuron_permutation(A, At)
    assert np.array_equal(P.argmax(1), perm[:20]) and P.sum() == 20
    noisy = neuron_permutation(A, At + 0.1 * rng.standard_normal(At.shape))
    assert np.array_equal(noisy.argmax(1), perm[:20])
