"""Per-size firing statistics from the codes, and their bootstrap over evaluation contexts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from saeatlas.progress import bar


def binary(codes: Any) -> sparse.csr_matrix:
    """Firing pattern (1 where activation > 0) as float32 CSR: sums of it count exactly (< 2^24)."""
    b = sparse.csr_matrix(codes, copy=True)
    b.sum_duplicates()
    b.data = (b.data > 0).astype(np.float32)
    b.eliminate_zeros()
    return b


def _context_matrix(n_rows: int, positions_per_context: int) -> sparse.csr_matrix:
    """A [n_contexts, N]: A[c, r] = 1 iff row r belongs to context c = r // P."""
    n_ctx = n_rows // positions_per_context
    return sparse.csr_matrix((np.ones(n_rows, dtype=np.float32), (np.arange(n_rows) // positions_per_context,
                                                                   np.arange(n_rows))), shape=(n_ctx, n_rows))


def _median_of_positive_columns(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of counts [n, R]: number of positive entries, and their median (NaN if none)."""
    n = counts.shape[0]
    alive = (counts > 0).sum(axis=0)
    srt = np.sort(counts, axis=0)  # positives are the last ``alive`` entries of each column
    cols = np.arange(counts.shape[1])
    lo = np.clip(n - alive + (alive - 1) // 2, 0, n - 1)
    hi = np.clip(n - alive + alive // 2, 0, n - 1)
    med = 0.5 * (srt[lo, cols] + srt[hi, cols])
    return alive, np.where(alive > 0, med, np.nan)


@dataclass
class SizeStats:
    size: int
    fires: np.ndarray  # int64 [n]: evaluation rows on which each latent fires
    context_counts: sparse.csr_matrix  # [n_latents, n_contexts]: firings per latent per context
    row_active: np.ndarray  # bool [N]: rows with at least one active latent


def size_stats(size: int, codes: Any, positions_per_context: int) -> tuple[SizeStats, sparse.csr_matrix]:
    """One size's firing statistics, and its binary firing pattern (for judging the concepts)."""
    b = binary(codes)
    fires = np.bincount(b.indices, minlength=size).astype(np.int64)
    ctx = (_context_matrix(b.shape[0], positions_per_context) @ b).T.tocsr()
    return SizeStats(size, fires, ctx, np.diff(b.indptr) > 0), b


def bootstrap_size_stats(stats_by_size: list[SizeStats], tokens_per_context: np.ndarray, n_boot: int,
                         rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per replicate and size: alive count and median density, on a resample of contexts.

    Replicate weights w ~ Multinomial(n_ctx, 1/n_ctx) (how often each context is drawn); the
    same w for every size. Latent j's firings on the resample = sum_c w_c * count[j, c];
    tokens on the resample = sum_c w_c * tokens_c; density = firings / tokens.
    """
    n_ctx = len(tokens_per_context)
    S = len(stats_by_size)
    alive = np.zeros((n_boot, S))
    median_density = np.zeros((n_boot, S))
    if n_boot == 0 or n_ctx == 0:
        return {"alive": alive[:0], "median_density": median_density[:0]}
    weights = rng.multinomial(n_ctx, np.full(n_ctx, 1.0 / n_ctx), size=n_boot).astype(np.float32)  # [R, n_ctx]
    widest = max(s.size for s in stats_by_size)
    batch = max(1, min(n_boot, (1 << 23) // widest))  # counts [n, batch] float32 stays <= 32 MiB
    for b0 in bar(range(0, n_boot, batch), desc="bootstrap (contexts)"):
        w = weights[b0:b0 + batch].T  # [n_ctx, B]
        tokens = w.T.astype(np.float64) @ tokens_per_context  # [B]
        for si, st in enumerate(stats_by_size):
            counts = np.asarray(st.context_counts @ w)  # [n, B]
            a, med = _median_of_positive_columns(counts)
            alive[b0:b0 + batch, si] = a
            median_density[b0:b0 + batch, si] = med / tokens
    return {"alive": alive, "median_density": median_density}
