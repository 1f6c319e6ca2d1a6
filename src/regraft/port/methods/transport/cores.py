"""Pure numpy cores of the closed-form transport: scaled orthogonal Procrustes across widths, the gradient-stacked
(BiCo) alignment, relative-depth boundary interpolation, ridge and reduced-rank regression, factors for PEFT."""

from __future__ import annotations

import numpy as np


def polar(M: np.ndarray) -> np.ndarray:
    """The (semi-)orthogonal polar factor U V^T of ``M`` (d_s x d_t): orthonormal rows or columns, whichever
    is fewer."""
    U, _, Vt = np.linalg.svd(M, full_matrices=False)
    return U @ Vt


def align(Xs: np.ndarray, Xt: np.ndarray, Gs: np.ndarray | None = None, Gt: np.ndarray | None = None,
          how: str = "polar", grad_weight: float = 1.0, lam: float = 1e-3) -> np.ndarray:
    """A map P (d_s x d_t) with Xt ~= Xs P between paired rows of two residual streams (centred).

    ``how="polar"``: P = s * polar(Xs^T Xt), s the least-squares scale (orthogonal Procrustes with scaling, across
    widths: P P^T = s^2 I when d_s <= d_t). With gradients ``Gs``/``Gt`` (same rows' loss gradients w.r.t. the
    states) the rotation is fitted on both, stacked with equal Frobenius weight (BiCo): a rotation that moves the
    states moves their gradients the same way (g_t = g_s P / s^2 for P = s * orthogonal). ``how="ridge"``: an
    unconstrained ridge regression (``lam`` relative to the mean diagonal of Xs^T Xs), gradients ignored."""
    Xs = Xs - Xs.mean(0, keepdims=True)
    Xt = Xt - Xt.mean(0, keepdims=True)
    if how == "ridge":
        G = Xs.T @ Xs
        return np.linalg.solve(G + lam * max(float(np.diag(G).mean()), 1e-12) * np.eye(G.shape[0]), Xs.T @ Xt)
    ns, nt = np.linalg.norm(Xs), np.linalg.norm(Xt)
    if ns < 1e-12 or nt < 1e-12:
        return np.zeros((Xs.shape[1], Xt.shape[1]))
    M = (Xs / ns).T @ (Xt / nt)
    if Gs is not None and Gt is not None and grad_weight > 0:
        gs, gt = np.linalg.norm(Gs), np.linalg.norm(Gt)
        if gs > 1e-30 and gt > 1e-30:
            M = M + grad_weight * (Gs / gs).T @ (Gt / gt)
    O = polar(M)
    s = float(np.trace(O.T @ (Xs.T @ Xt))) / float(ns ** 2)
    return max(s, 0.0) * O


def boundary_weights(j: int, l_s: int, l_t: int) -> tuple[int, int, float]:
    """Target boundary ``j + 1`` (the output of target layer j) at the same relative depth in the source:
    (lower source boundary, upper source boundary, weight of the upper). Boundaries 0..L (0 = embeddings)."""
    u = (j + 1) * l_s / l_t
    lo = min(int(np.floor(u + 1e-9)), l_s)
    hi = min(lo + 1, l_s)
    return lo, hi, float(u - lo) if hi != lo else 0.0


def lerp(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    return a if w == 0.0 else (1.0 - w) * a + w * b


def ridge_fit(X: np.ndarray, Y: np.ndarray, lam_rel: float = 1e-2) -> np.ndarray:
    """W (d_in x d_out) minimising ||X W - Y||^2 + lam ||W||^2, lam = lam_rel * mean diag(X^T X); primal when
    d_in <= rows, else the dual (X^T (X X^T + lam I)^-1 Y) so a wide layer costs rows^2, not d_in^2."""
    n, d = X.shape
    scale = max(float((X * X).sum()) / max(d, 1), 1e-12)
    lam = lam_rel * scale
    if d <= n:
        return np.linalg.solve(X.T @ X + lam * np.eye(d), X.T @ Y)
    return X.T @ np.linalg.solve(X @ X.T + lam * np.eye(n), Y)


def reduced_rank(X: np.ndarray, W: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """The best rank-r approximation of W in the data metric (reduced-rank regression): the fitted values X W
    projected on their top-r principal directions V_r. Returns LoRA factors (A: r x d_in, B: d_out x r) with
    B A = (W V_r V_r^T)^T, i.e. the update as an out x in matrix."""
    F = X @ W
    _, _, Vt = np.linalg.svd(F, full_matrices=False)
    V = Vt[:r].T  # d_out x r
    A = (W @ V).T  # r x d_in
    return A, V


def truncate(dW: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Truncated SVD of an update dW (out x in) as LoRA factors (A r x in, B out x r), B A = best rank-r."""
    U, S, Vt = np.linalg.svd(dW, full_matrices=False)
    sq = np.sqrt(S[:r])
    return sq[:, None] * Vt[:r], U[:, :r] * sq[None, :]


def fit_fraction(X: np.ndarray, Y: np.ndarray, A: np.ndarray, B: np.ndarray) -> float:
    """Fraction of ||Y||^2 explained by the rank-r update (1 - ||Y - X A^T B^T||^2 / ||Y||^2)."""
    den = float((Y * Y).sum())
    if den <= 0:
        return 0.0
    R = Y - (X @ A.T) @ B.T
    return 1.0 - float((R * R).sum()) / den


def logit_preimage(dz, W: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """Least-squares pre-image through a head W (V x d) of logit changes dz (N x V, or a list of row chunks):
    dn = centre(dz) W (Wc^T Wc + lam)^-1, logits being defined up to a constant per row (Wc: W with its mean
    over the vocabulary removed; ``inv`` the regularised inverse). Chunked so that N x V never has to be whole."""
    chunks = dz if isinstance(dz, list) else [dz]
    out = []
    for z in chunks:
        z = z - z.mean(1, keepdims=True)
        out.append(z @ W @ inv)
    return np.concatenate(out)
