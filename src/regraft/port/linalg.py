"""Small linear-algebra cores of the projection (pure numpy): ridge maps and rank-preserving factor maps."""

from __future__ import annotations

import numpy as np


def ridge(X: np.ndarray, Y: np.ndarray, lam: float = 1e-4, prior: np.ndarray | None = None) -> np.ndarray:
    """W = argmin ||X W - Y||^2 + lam' ||W - W0||^2 with lam' = lam * mean(diag(X^T X)) (scale-free).

    X: N x p, Y: N x q -> W: p x q. ``prior`` W0 (default 0) is what W becomes in directions the data never
    visit (the null space of X^T X): e.g. an embedding-derived map, so that tokens absent from the calibration
    text are still mapped. Columns of X that are identically zero get W0's rows.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    G = X.T @ X
    d = np.diag(G)
    scale = float(d.mean()) if d.size and d.mean() > 0 else 1.0
    rhs = X.T @ Y if prior is None else X.T @ Y + lam * scale * prior
    return np.linalg.solve(G + lam * scale * np.eye(G.shape[0]), rhs)


def r2(X: np.ndarray, Y: np.ndarray, W: np.ndarray) -> float:
    """Fraction of the (uncentred) energy of Y explained by X W."""
    Y = np.asarray(Y, dtype=np.float64)
    den = float((Y ** 2).sum())
    if den <= 0:
        return 1.0
    return 1.0 - float(((np.asarray(X, dtype=np.float64) @ W - Y) ** 2).sum()) / den


def map_factors(A: np.ndarray, B: np.ndarray, q_in: np.ndarray | None, r_out: np.ndarray | None):
    """Rank-preserving transfer: A_t = A_s Q_in^T, B_t = R_out^T B_s.

    A: r x d_in_s, B: d_out_s x r, q_in: d_in_t x d_in_s (x_s ~= Q_in^T x_t), r_out: d_out_s x d_out_t
    (y_t ~= R_out^T y_s). None means identity (same size).
    """
    At = A if q_in is None else A @ q_in.T
    Bt = B if r_out is None else r_out.T @ B
    return At, Bt


def procrustes(X: np.ndarray, Y: np.ndarray, lam: float = 1e-6, prior: np.ndarray | None = None,
               rtol: float = 1e-11) -> np.ndarray:
    """Semi-orthogonal W (p x q) maximising tr(W^T (X^T Y + lam' W0)), i.e. the best rotation / partial permutation
    taking X's coordinates to Y's (orthogonal Procrustes; lam' = lam * mean(diag(X^T X)), W0 = ``prior``).

    Unlike `ridge` it never shrinks or mixes directions in proportion to how well they are predicted: between
    siblings (Y = X + drift) it stays ~ identity, where a regression fitted on drifted activations is diluted and
    mixes coordinates; on exact reparametrisations (permutations, zero padding) both are exact. Directions outside
    the span of X^T Y (numerical rank, ``rtol``) map to zero, or to the prior's polar factor when one is given."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    M = X.T @ Y
    if prior is not None:
        d = (X ** 2).sum(0)
        scale = float(d.mean()) if d.size and d.mean() > 0 else 1.0
        p = np.asarray(prior, dtype=np.float64)
        M = M + lam * scale * p
    U, s, Vt = np.linalg.svd(M, full_matrices=False)
    k = int((s > rtol * (s[0] if s.size else 0)).sum()) if s.size else 0
    return U[:, :k] @ Vt[:k]


def neuron_permutation(Xs: np.ndarray, Xt: np.ndarray, max_hungarian: int = 4096) -> np.ndarray:
    """P (F_s x F_t), a 0/1 partial permutation with a_t ~= P^T a_s: MLP neurons matched one-to-one by the
    correlation of their post-activation features (Hungarian; an elementwise nonlinearity is symmetric under
    permutations only, so a rotation of neurons, as Procrustes or a ridge fit would give, is not a symmetry).
    Neurons with no partner (unequal widths) get zero columns/rows. Above ``max_hungarian`` neurons the
    assignment is greedy (each target neuron takes its most correlated source neuron not taken yet)."""
    from scipy.optimize import linear_sum_assignment

    Xs = np.asarray(Xs, dtype=np.float64)
    Xt = np.asarray(Xt, dtype=np.float64)
    zs = Xs - Xs.mean(0)
    zt = Xt - Xt.mean(0)
    ns, nt = np.linalg.norm(zs, axis=0), np.linalg.norm(zt, axis=0)
    C = (zs.T @ zt) / np.maximum(ns[:, None] * nt[None, :], 1e-30)
    C[ns < 1e-12] = 0.0
    C[:, nt < 1e-12] = 0.0
    P = np.zeros((Xs.shape[1], Xt.shape[1]))
    if max(C.shape) <= max_hungarian:
        rows, cols = linear_sum_assignment(C, maximize=True)
    else:
        order = np.argsort(-C, axis=None)
        used_s, used_t, rows, cols = set(), set(), [], []
        for flat in order:
            a, b = divmod(int(flat), C.shape[1])
            if a in used_s or b in used_t:
                continue
            used_s.add(a)
            used_t.add(b)
            rows.append(a)
            cols.append(b)
            if len(rows) == min(C.shape):
                break
    for a, b in zip(rows, cols):
        if C[a, b] > 0:
            P[a, b] = 1.0
    return P
