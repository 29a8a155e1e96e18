"""From scores to preferences: z-normalised advantages, pairwise and Pareto preferences, full orderings.

Paper (Sec. 3.2): Â = (L − μ_L) / sqrt(σ_L² + ε) per batch for each score, combined as
`total = Â_struct + α·Â_sem`; the lower total wins. D3PO compares two samples from the same initial
noise and condition; its listwise (Plackett–Luce) form needs a full ordering of K samples.

Conventions: every score is "lower is better". A preference is +1 when sample `a` is preferred,
−1 when `b` is, 0 for a tie (no training signal: the loss masks those pairs out). Pure NumPy functions.
"""

from __future__ import annotations

import numpy as np

from sim2real.errors import Sim2RealError


def _finite(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise Sim2RealError(f"{name} contains NaN or inf; cannot rank")
    return x


def advantages(scores: np.ndarray, eps: float = 1e-8, axis: int | None = None) -> np.ndarray:
    """Per-batch z-normalisation `(x − mean) / sqrt(var + eps)`; over all entries, or along `axis`."""
    x = _finite(scores, "scores")
    mean = x.mean(axis=axis, keepdims=axis is not None)
    var = x.var(axis=axis, keepdims=axis is not None)
    return (x - mean) / np.sqrt(var + eps)


def combined_total(struct: np.ndarray, sem: np.ndarray, alpha: float = 1.0, eps: float = 1e-8) -> np.ndarray:
    """`Â_struct + α·Â_sem` over the batch (any shape, normalised over all entries); lower is better."""
    s, m = _finite(struct, "struct"), _finite(sem, "sem")
    if s.shape != m.shape:
        raise Sim2RealError(f"struct and sem shapes differ: {s.shape} vs {m.shape}")
    return advantages(s, eps) + alpha * advantages(m, eps)


def pairwise_preferences(total_a: np.ndarray, total_b: np.ndarray, tie_tol: float = 1e-6) -> np.ndarray:
    """+1 where `a` has the lower total, −1 where `b` has, 0 where |a − b| <= tie_tol. int8 `(B,)`."""
    a, b = _finite(total_a, "total_a"), _finite(total_b, "total_b")
    if a.shape != b.shape:
        raise Sim2RealError(f"total_a and total_b shapes differ: {a.shape} vs {b.shape}")
    d = b - a
    return np.where(np.abs(d) <= tie_tol, 0, np.sign(d)).astype(np.int8)


def pareto_preferences(
    struct_a: np.ndarray, sem_a: np.ndarray, struct_b: np.ndarray, sem_b: np.ndarray, tie_tol: float = 1e-6
) -> np.ndarray:
    """Pareto dominance (as D3PO's multi-objective mode): +1 if `a` is no worse on both scores and
    better on one, −1 if `b` dominates, 0 when neither dominates (a trade-off gives no signal). int8 `(B,)`.
    """
    sa, ma = _finite(struct_a, "struct_a"), _finite(sem_a, "sem_a")
    sb, mb = _finite(struct_b, "struct_b"), _finite(sem_b, "sem_b")
    if not sa.shape == ma.shape == sb.shape == mb.shape:
        raise Sim2RealError(f"score shapes differ: {sa.shape}, {ma.shape}, {sb.shape}, {mb.shape}")
    ds, dm = sb - sa, mb - ma  # > 0: a is better on that score
    ds = np.where(np.abs(ds) <= tie_tol, 0.0, ds)
    dm = np.where(np.abs(dm) <= tie_tol, 0.0, dm)
    a_dom = (ds >= 0) & (dm >= 0) & ((ds > 0) | (dm > 0))
    b_dom = (ds <= 0) & (dm <= 0) & ((ds < 0) | (dm < 0))
    return (a_dom.astype(np.int8) - b_dom.astype(np.int8)).astype(np.int8)


def full_ordering(totals: np.ndarray) -> np.ndarray:
    """Indices best → worst along the last axis (ascending total; stable, so ties keep sample order).

    totals `(N, K)` (N groups of K samples from the same condition) → int64 `(N, K)`, the order a
    Plackett–Luce loss consumes: `order[n, 0]` is the best sample of group n.
    """
    t = _finite(totals, "totals")
    if t.ndim < 1 or t.shape[-1] < 2:
        raise Sim2RealError(f"full_ordering needs at least 2 samples per group; got shape {t.shape}")
    return np.argsort(t, axis=-1, kind="stable")


def pair_preferences_from_groups(totals: np.ndarray, tie_tol: float = 1e-6) -> np.ndarray:
    """All pairwise preferences inside groups: totals `(N, K)` → int8 `(N, K, K)`, [n, i, j] = pref(i over j)."""
    t = _finite(totals, "totals")
    d = t[..., None, :] - t[..., :, None]  # [n, i, j] = t_j − t_i > 0 → i better
    return np.where(np.abs(d) <= tie_tol, 0, np.sign(d)).astype(np.int8)
