"""Linear algebra on dictionaries (rows = decoder directions) that several analyses use."""

from __future__ import annotations

import numpy as np

from saeatlas.progress import bar


def unit_rows(w: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (float32); all-zero rows stay zero (cosine 0 with everything)."""
    w = np.asarray(w, dtype=np.float32)
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    return np.divide(w, norms, out=np.zeros_like(w), where=norms > 0)


def random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed orthogonal [d, d] matrix: QR of a Gaussian matrix with the signs of
    R's diagonal moved into Q (without that fix the distribution is not uniform; Mezzadri 2007)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def best_decoder_matches(small: np.ndarray, large: np.ndarray, chunk: int = 1024,
                         desc: str = "decoder cosines") -> tuple[np.ndarray, np.ndarray]:
    """For each row j of ``large`` [m, d]: ``argmax_i cos(large_j, small_i)`` and that cosine.

    Rows are normalised here; the [m, n] cosine matrix is formed ``chunk`` rows at a time, so
    memory is O(chunk · n) whatever m. Signed cosine: TopK activations are non-negative, so a
    feature and its negation are different features.
    """
    small_u, large_u = unit_rows(small), unit_rows(large)
    m = large_u.shape[0]
    idx = np.empty(m, dtype=np.int64)
    cos = np.empty(m, dtype=np.float64)
    for a in bar(range(0, m, chunk), desc=desc):
        sims = large_u[a:a + chunk] @ small_u.T  # [chunk, n]: cos_{ji} = <ŵ'_j, ŵ_i>
        best = sims.argmax(axis=1)
        idx[a:a + chunk] = best
        cos[a:a + chunk] = sims[np.arange(len(best)), best]
    return idx, cos
