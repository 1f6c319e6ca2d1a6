"""Layer matching: linear CKA between layers of two models and an order-preserving alignment (LoRASuite Alg. 1).

Pure numpy. ``align_layers(S)`` takes a similarity matrix S (L_s x L_t) and returns, for every target layer, the
source layer it receives (or None): a strictly increasing one-to-one map that maximises the summed similarity.
When the target is deeper, L_t - L_s target layers get nothing; when it is shallower, L_s - L_t source layers
are dropped (both reported by the caller).
"""

from __future__ import annotations

import numpy as np


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA of two activation matrices with the same rows (N x d1, N x d2); 0 when either is constant."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    X = X - X.mean(0, keepdims=True)
    Y = Y - Y.mean(0, keepdims=True)
    xy = np.linalg.norm(Y.T @ X) ** 2
    xx = np.linalg.norm(X.T @ X)
    yy = np.linalg.norm(Y.T @ Y)
    if xx <= 1e-30 or yy <= 1e-30:
        return 0.0
    return float(xy / (xx * yy))


def cka_matrix(xs: list[np.ndarray], ys: list[np.ndarray]) -> np.ndarray:
    return np.array([[linear_cka(x, y) for y in ys] for x in xs])


def depth_similarity(l_s: int, l_t: int) -> np.ndarray:
    """Weight-only fallback: similarity by relative depth (1 - |i/(L_s-1) - j/(L_t-1)|)."""
    a = np.arange(l_s) / max(l_s - 1, 1)
    b = np.arange(l_t) / max(l_t - 1, 1)
    return 1.0 - np.abs(a[:, None] - b[None, :])


def _monotone(S: np.ndarray) -> list[int]:
    """S (n x m), n <= m: strictly increasing j_0 < ... < j_{n-1} maximising sum S[i, j_i]."""
    n, m = S.shape
    NEG = -1e18
    f = np.full((n + 1, m + 1), NEG)
    f[0, :] = 0.0
    take = np.zeros((n + 1, m + 1), dtype=bool)
    for i in range(1, n + 1):
        for j in range(i, m + 1):
            skip = f[i, j - 1] if j - 1 >= i else NEG
            use = f[i - 1, j - 1] + S[i - 1, j - 1]
            if use >= skip:
                f[i, j], take[i, j] = use, True
            else:
                f[i, j] = skip
    out, i, j = [0] * n, n, m
    while i > 0:
        if take[i, j]:
            out[i - 1] = j - 1
            i -= 1
        j -= 1
    return out


def align_layers(S: np.ndarray) -> list[int | None]:
    """target layer -> source layer (or None), order-preserving, one-to-one, maximising total similarity."""
    S = np.asarray(S, dtype=np.float64)
    l_s, l_t = S.shape
    if l_s <= l_t:
        js = _monotone(S)
        out: list[int | None] = [None] * l_t
        for i, j in enumerate(js):
            out[j] = i
        return out
    iss = _monotone(S.T)
    return list(iss)
