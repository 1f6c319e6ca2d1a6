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
