"""Steps 3-5: affinities between features (co-occurrence and decoder angle), the spectral
embedding (sklearn's, computed once for the largest k by a block Krylov method) and k-means."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from saeatlas.analysis.common.linalg import unit_rows
from saeatlas.analysis.common.threads import limit_threads
from saeatlas.analysis.lobes.config import AFFINITIES, SMALL_PROBLEM

# Blocks of the Krylov basis per restart: [X, mX, m²X].
KRYLOV_DEPTH = 3


def affinity_inplace(c: np.ndarray, block_counts: np.ndarray, n_blocks: int, kind: str = "phi",
                     chunk: int = 1024) -> dict[str, float]:
    """Turn co-occurrence counts ``c`` [m, m] (C-contiguous, the pairs of these features) into an
    affinity, in place: phi / Jaccard / Dice (formulas in the package docstring, step 3), negatives
    clipped to 0, diagonal 0. Returns the fraction of off-diagonal pairs that were negative (phi
    only) and that are positive after clipping."""
    if kind not in AFFINITIES:
        raise ValueError(f"affinity must be one of {AFFINITIES}, got {kind!r}")
    m = c.shape[0]
    ci = np.asarray(block_counts, dtype=np.float64)
    big_n = float(n_blocks)
    negative = positive = 0
    if kind == "phi":
        spread = np.sqrt(ci * (big_n - ci))  # √(c_i (N − c_i))
        inv = np.divide(1.0, spread, out=np.zeros_like(spread), where=spread > 0)
    for a in range(0, m, chunk):
        cij = c[a:a + chunk].astype(np.float64)
        rows = slice(a, min(a + chunk, m))
        if kind == "phi":
            val = (big_n * cij - np.outer(ci[rows], ci)) * np.outer(inv[rows], inv)
            negative += int((val < 0).sum())
        elif kind == "jaccard":
            union = ci[rows, None] + ci[None, :] - cij
            val = np.divide(cij, union, out=np.zeros_like(cij), where=union > 0)
        else:
            tot = ci[rows, None] + ci[None, :]
            val = np.divide(2.0 * cij, tot, out=np.zeros_like(cij), where=tot > 0)
        np.maximum(val, 0.0, out=val)
        val[np.arange(val.shape[0]), np.arange(a, a + val.shape[0])] = 0.0
        positive += int((val > 0).sum())
        c[a:a + chunk] = val
    pairs = max(m * (m - 1), 1)
    return {"negative_fraction": negative / pairs, "positive_fraction": positive / pairs}


def affinity(counts: np.ndarray, block_counts: np.ndarray, n_blocks: int, kind: str = "phi") -> np.ndarray:
    """``affinity_inplace`` on a float32 copy (for small inputs and tests)."""
    out = np.array(counts, dtype=np.float32, order="C")
    affinity_inplace(out, block_counts, n_blocks, kind)
    return out


def angular_affinity(decoder: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """``1 − arccos(cos θ_ij) / π`` between unit decoder rows (float32 [n, n], diagonal 0)."""
    u = unit_rows(decoder)
    n = u.shape[0]
    out = np.empty((n, n), dtype=np.float32)
    for a in range(0, n, chunk):
        cos = np.clip(u[a:a + chunk] @ u.T, -1.0, 1.0)
        out[a:a + chunk] = 1.0 - np.arccos(cos) / np.pi
    np.fill_diagonal(out, 0.0)
    return out


def compact_square(buf: np.ndarray, keep: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """``buf[keep][:, keep]`` written into the front of ``buf``'s own memory (``buf`` is C-contiguous
    square; ``keep`` ascending indices). Safe because destination rows ``[a·m, b·m)`` end before
    the source rows of later chunks start (``keep[b]·n ≥ b·n ≥ b·m``); no n x n temporary."""
    n = buf.shape[0]
    keep = np.asarray(keep, dtype=np.int64)
    m = keep.size
    if m == n:
        return buf
    flat = buf.reshape(-1)
    for a in range(0, m, chunk):
        block = buf[keep[a:a + chunk]][:, keep]  # a copy, taken before anything is overwritten
        flat[a * m:a * m + block.size] = block.reshape(-1)
    return flat[:m * m].reshape(m, m)




def top_eigenpairs(m: np.ndarray, k: int, *, tol: float = 1e-2, max_restarts: int = 30, seed: int = 0,
                   dense_below: int = 2000) -> tuple[np.ndarray, np.ndarray, float, int]:
    """The ``k`` largest (algebraic) eigenvalues of the symmetric ``m`` [n, n] and their unit
    eigenvectors [n, k] (descending), the largest residual ``‖m v − λ v‖`` and the restarts used.

    Small ``n``: LAPACK ``eigh`` (exact). Otherwise a restarted block Krylov method: from a block
    ``X`` of ``b = k + max(k/2, 16)`` vectors, the orthonormal basis ``Q`` of
    ``[X, mX, m²X]`` (each block orthogonalised twice against the previous ones), Rayleigh-Ritz on
    ``QᵀmQ`` (each block's image ``mQ_j`` is computed once: it seeds the next block and enters
    ``QᵀmQ``), Ritz pairs ``(θ, Qs)``; stop when every top-``k`` residual is below ``tol·|θ₂|`` (the second
    Ritz value sets the scale: for a normalised affinity the first is the trivial 1), else restart
    from the top ``b`` Ritz vectors; the best iterate is returned after ``max_restarts``. All
    products are GEMMs ([n, n] x [n, b], float32 like ``m``), so the
    matrix is read once per ``b`` vectors instead of once per vector as in ARPACK.
    """
    import torch

    n = m.shape[0]
    if k >= n:
        raise ValueError(f"asked for {k} eigenpairs of a {n} x {n} matrix")
    b = min(k + max(k // 2, 16), n)
    threads = 1 if n < SMALL_PROBLEM else None
    if n <= max(dense_below, KRYLOV_DEPTH * b + 1):
        return _dense_eigenpairs(m, k, threads)
    mt = torch.from_numpy(np.ascontiguousarray(m))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, b, generator=gen, dtype=torch.float64)
    best = (np.inf, None, None)
    restarts = 0
    for restarts in range(1, max_restarts + 1):
        qa, ima = _krylov_block(mt, x, threads)
        theta, s, v, res = _rayleigh_ritz(qa, ima, k, threads)
        if res < best[0]:
            best = (res, theta[:k].numpy().copy(), v.numpy().copy())
        if res <= tol * max(abs(float(theta[min(1, k - 1)])), 1e-12):
            break
        x = qa @ s[:, :b]  # restart from the top b Ritz vectors
    res, vals, vecs = best
    norms = np.linalg.norm(vecs, axis=0)
    return vals, vecs / norms, float(res), restarts


def _dense_eigenpairs(m: np.ndarray, k: int, threads: int | None) -> tuple[np.ndarray, np.ndarray, float, int]:
    """``top_eigenpairs`` of a small matrix: LAPACK ``eigh`` in float64 (exact; no restarts)."""
    import torch

    with limit_threads(threads, torch_too=True):
        md = torch.from_numpy(np.asarray(m, dtype=np.float64))
        vals_t, vecs_t = torch.linalg.eigh(md)
        vals_t, vecs_t = vals_t.flip(0)[:k], vecs_t.flip(1)[:, :k]
        res = torch.linalg.norm(md @ vecs_t - vecs_t * vals_t, dim=0)
    return vals_t.numpy().copy(), vecs_t.numpy().copy(), float(res.max()), 0


def _krylov_block(mt: Any, x: Any, threads: int | None) -> tuple[Any, Any]:
    """One restart's orthonormal basis ``Q = [Q_0, Q_1, Q_2]`` of ``[X, mX, m²X]`` and its image
    ``mQ`` (torch float64 [n, depth·b] each); ``mt`` is the matrix as a torch tensor."""
    import torch

    with limit_threads(threads, torch_too=True):
        q, _ = torch.linalg.qr(x)
    basis, images = [q], []
    for j in range(KRYLOV_DEPTH):
        with limit_threads(threads, torch_too=True):
            w = (mt @ basis[-1].to(mt.dtype)).double()
        images.append(w)
        if j == KRYLOV_DEPTH - 1:
            break
        qa = torch.cat(basis, 1)
        with limit_threads(threads, torch_too=True):
            for _ in range(2):  # block Gram-Schmidt, twice: "twice is enough" (Giraud et al. 2005)
                w = w - qa @ (qa.T @ w)
            q, _ = torch.linalg.qr(w)
        basis.append(q)
    return torch.cat(basis, 1), torch.cat(images, 1)


def _rayleigh_ritz(qa: Any, ima: Any, k: int, threads: int | None) -> tuple[Any, Any, Any, float]:
    """Ritz values ``θ`` (descending) and vectors ``s`` of ``QᵀmQ``, the top-``k`` Ritz vectors
    ``v = Qs`` and their largest residual ``‖mv − θv‖``."""
    import torch

    with limit_threads(threads, torch_too=True):
        t = qa.T @ ima
    with limit_threads(1, torch_too=True):  # a small eigh: one thread is as fast, and immune to a busy machine
        theta, s = torch.linalg.eigh((t + t.T) / 2)
    theta, s = theta.flip(0), s.flip(1)
    v, mv = qa @ s[:, :k], ima @ s[:, :k]
    res = float(torch.linalg.norm(mv - v * theta[:k], dim=0).max())
    return theta, s, v, res


def spectral_embedding(a: np.ndarray, k: int, *, tol: float = 1e-2, max_restarts: int = 30, seed: int = 0,
                       dense_below: int = 2000) -> tuple[np.ndarray, dict[str, float]]:
    """sklearn's spectral embedding (``norm_laplacian=True, drop_first=False``) of the affinity
    ``a`` [n, n] (non-negative, diagonal ignored, every degree > 0), with ``k`` components.

    ``a`` is overwritten with ``M = D^{-1/2} A D^{-1/2}`` (no second n x n matrix). The top ``k``
    eigenvectors ``v`` of ``M`` are the bottom ones of the normalised Laplacian ``I − M``; the
    embedding is ``v_i / √d_i`` with each column's sign fixed so that its largest-magnitude entry
    is positive (sklearn's ``_deterministic_vector_sign_flip``).
    """
    np.fill_diagonal(a, 0.0)
    deg = a.sum(axis=1, dtype=np.float64)
    if (deg <= 0).any():
        raise ValueError(f"{int((deg <= 0).sum())} nodes have no positive affinity; drop them first")
    dd = np.sqrt(deg)
    inv = (1.0 / dd).astype(a.dtype)
    for s in range(0, a.shape[0], 2048):
        a[s:s + 2048] *= inv[s:s + 2048, None]
        a[s:s + 2048] *= inv[None, :]
    vals, vecs, res, restarts = top_eigenpairs(a, k, tol=tol, max_restarts=max_restarts, seed=seed,
                                               dense_below=dense_below)
    emb = vecs / dd[:, None]
    top = np.abs(emb).argmax(axis=0)
    emb *= np.sign(emb[top, np.arange(emb.shape[1])])
    lam2 = float(vals[1]) if vals.size > 1 else math.nan
    return emb, {"max_residual": res, "relative_residual": res / abs(lam2) if lam2 else math.nan,
                 "restarts": float(restarts), "eigenvalue_2": lam2, "eigenvalue_last": float(vals[-1])}


def kmeans_labels(embedding: np.ndarray, k: int, n_init: int, seed: int) -> np.ndarray:
    """sklearn k-means on the first ``k`` columns of the spectral embedding."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    return km.fit_predict(np.ascontiguousarray(embedding[:, :k])).astype(np.int64)
