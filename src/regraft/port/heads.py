"""Head matching for attention projection: GQA-aware Hungarian assignment and RoPE-safe within-head maps.

* `head_cka`: per-head linear CKA between source and target projection outputs (N x n_heads*hd).
* `match_heads`: KV groups are matched first (Hungarian on k+v similarity plus the best within-group query
  matching), then the query heads inside each matched group pair (Hungarian). Unmatched target heads get nothing
  (zero rows in the projected B); unmatched source heads are dropped and reported.
* `fit_rope_map`: the least-squares map y_t ~= M^T y_s restricted to commute with rotary embeddings
  (transformers' rotate_half layout: dims i and i+hd/2 form one rotating pair): per pair a complex scalar
  a+ib, i.e. the 2x2 block [[a, -b], [b, a]]. Needs equal head_dim; otherwise the caller uses identity/truncation.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from regraft.port.layer_match import linear_cka


def head_cka(Ys: np.ndarray, Yt: np.ndarray, n_s: int, n_t: int) -> np.ndarray:
    hs, ht = Ys.shape[1] // n_s, Yt.shape[1] // n_t
    return np.array([[linear_cka(Ys[:, a * hs:(a + 1) * hs], Yt[:, b * ht:(b + 1) * ht]) for b in range(n_t)]
                     for a in range(n_s)])


def _hungarian(S: np.ndarray) -> list[tuple[int, int, float]]:
    rows, cols = linear_sum_assignment(S, maximize=True)
    return [(int(a), int(b), float(S[a, b])) for a, b in zip(rows, cols)]


def match_heads(sim_q: np.ndarray, sim_k: np.ndarray, sim_v: np.ndarray, nkv_s: int, nkv_t: int) -> dict:
    """Return {"kv": {t_group: (s_group, score)}, "q": {t_head: (s_head, score)}} (GQA-aware)."""
    nq_s, nq_t = sim_q.shape
    gs, gt = nq_s // nkv_s, nq_t // nkv_t

    def q_block(a, b):
        return sim_q[a * gs:(a + 1) * gs, b * gt:(b + 1) * gt]

    G = np.zeros((nkv_s, nkv_t))
    for a in range(nkv_s):
        for b in range(nkv_t):
            qa = _hungarian(q_block(a, b))
            G[a, b] = sim_k[a, b] + sim_v[a, b] + sum(s for *_, s in qa) / max(gs, 1)
    kv, q = {}, {}
    for a, b, s in _hungarian(G):
        kv[b] = (a, s / 3.0)
        for i, j, sc in _hungarian(q_block(a, b)):
            q[b * gt + j] = (a * gs + i, sc)
    return {"kv": kv, "q": q}


def fit_rope_map(Ys: np.ndarray, Yt: np.ndarray) -> np.ndarray:
    """M (hd x hd) with Yt ~= Ys M, commuting with RoPE (rotate_half pairs (i, i + hd/2))."""
    hd = Ys.shape[1]
    h = hd // 2
    zs = Ys[:, :h] + 1j * Ys[:, h:]
    zt = Yt[:, :h] + 1j * Yt[:, h:]
    den = (np.abs(zs) ** 2).sum(0)
    c = np.where(den > 1e-30, (np.conj(zs) * zt).sum(0) / np.maximum(den, 1e-30), 0)
    a, b = c.real, c.imag
    M = np.zeros((hd, hd))
    idx = np.arange(h)
    M[idx, idx] = a
    M[idx + h, idx + h] = a
    M[idx + h, idx] = -b
    M[idx, idx + h] = b
    return M


def rope_rotate(x: np.ndarray, pos: int, theta: float = 10000.0) -> np.ndarray:
    """transformers' rotate_half RoPE of rows of x (n x hd) at one position (for tests)."""
    hd = x.shape[1]
    h = hd // 2
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = np.concatenate([pos * inv, pos * inv])
    rot = np.concatenate([-x[:, h:], x[:, :h]], 1)
    return x * np.cos(ang) + rot * np.sin(ang)


def identity_map(hd_s: int, hd_t: int) -> np.ndarray:
    """Head-dim mismatch fallback: identity on the shared leading dims of each rotating half."""
    M = np.zeros((hd_s, hd_t))
    hs, ht = hd_s // 2, hd_t // 2
    k = min(hs, ht)
    M[np.arange(k), np.arange(k)] = 1
    M[hs + np.arange(k), ht + np.arange(k)] = 1
    return M
