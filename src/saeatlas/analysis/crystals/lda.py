"""LDA on the distractor labels: the words' classes, their PCA from the Gram matrix, the
discriminant axes of each distractor (refit over ``lda_iterations`` passes) and the projection
onto the axes' orthogonal complement. Everything works on the [W, W] Gram matrix; the [W, D]
words (dense or sparse) are only multiplied, never copied or cleaned.

scipy.linalg and scikit-learn are imported here, with the module, so that their BLAS and
OpenMP pools are loaded before ``limit_threads`` first scans the process's libraries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import scipy.linalg
import sklearn.discriminant_analysis
from scipy import sparse

from saeatlas.analysis.common.threads import limit_threads
from saeatlas.analysis.crystals.config import CrystalsConfig

VARIANTS = ("raw", "lda")  # the words as read, and cleaned of the distractors' LDA axes


def distractor_classes(values: np.ndarray, categorical: bool, n_bins: int, min_class: int) -> np.ndarray:
    """Class labels 0..K-1 for LDA from per-word distractor values.

    Numeric values: the distinct values themselves if there are at most ``n_bins``, otherwise
    quantile bins; then, while a class has fewer than ``min_class`` words, it is merged into its
    smaller neighbour (order is kept: bins stay intervals). Categorical values: each value with
    at least ``min_class`` words is a class, the rest are pooled into one "other" class (which is
    merged into the largest class if it is itself too small).
    """
    values = np.asarray(values)
    if categorical:
        _, inv, counts = np.unique(values, return_inverse=True, return_counts=True)
        big = counts >= min_class
        labels = np.where(big[inv], inv, -1)
        if 0 < (labels == -1).sum() < min_class and big.any():
            labels[labels == -1] = int(np.argmax(counts))
        return np.unique(labels, return_inverse=True)[1].astype(np.int64)
    v = values.astype(np.float64)
    uniq = np.unique(v)
    if len(uniq) <= n_bins:
        labels = np.searchsorted(uniq, v)
    else:
        edges = np.quantile(v, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
        labels = np.searchsorted(edges, v, side="right")
    return _merge_small_bins(np.unique(labels, return_inverse=True)[1], min_class)


def _merge_small_bins(labels: np.ndarray, min_class: int) -> np.ndarray:
    """While a bin has fewer than ``min_class`` words, merge it into its smaller neighbour."""
    while True:
        counts = np.bincount(labels)
        if len(counts) < 2 or counts.min() >= min_class:
            break
        c = int(np.argmin(counts))
        if c == 0:
            other = 1
        elif c == len(counts) - 1:
            other = c - 1
        else:
            other = c - 1 if counts[c - 1] <= counts[c + 1] else c + 1
        labels[labels == c] = other
        labels = np.unique(labels, return_inverse=True)[1]
    return labels.astype(np.int64)


@dataclass
class WordPCA:
    """PCA of the word vectors from the centred Gram matrix ``H G H = U Λ Uᵀ`` (H centres):
    the scores are ``U √Λ`` and the principal axes ``V = Xcᵀ U Λ^{-1/2}``, never formed."""

    scores: np.ndarray  # [W, r] principal-component scores, variance descending
    coef: np.ndarray  # [W, r] U Λ^{-1/2}: axis j in the space is Xcᵀ coef[:, j]


def word_pca(gram: np.ndarray, max_dims: int) -> WordPCA:
    """Top ``max_dims`` principal components of the W words whose Gram matrix is ``gram``."""
    n = gram.shape[0]
    hgh = centre_gram(gram)
    k = min(max_dims, n)
    if k == 0:
        return WordPCA(np.zeros((n, 0)), np.zeros((n, 0)))
    evals, evecs = scipy.linalg.eigh(hgh, subset_by_index=[n - k, n - 1])  # the k largest, ascending
    evals, evecs = evals[::-1], evecs[:, ::-1]
    top = float(np.trace(hgh)) if n else 0.0  # ≥ λ_max: the tolerance is relative to total variance
    r = int(np.sum(evals > max(top, 0.0) * 1e-10))
    lam = evals[:r]
    return WordPCA(scores=evecs[:, :r] * np.sqrt(lam), coef=evecs[:, :r] / np.sqrt(lam))


def lda_axes(pca: WordPCA, classes: np.ndarray, max_directions: int) -> np.ndarray:
    """LDA discriminant directions in PCA coordinates, ``[r, k]``, k = min(K-1, max, r).

    ``LinearDiscriminantAnalysis`` (SVD solver: exact Fisher LDA, no covariance estimate to
    regularise) on the PCA scores; its ``scalings_`` columns are the discriminant directions
    ``w`` (sorted by between-class variance): the discriminant score is ``w · z``.
    """
    k_classes = len(np.unique(classes))
    r = pca.scores.shape[1]
    if k_classes < 2 or r == 0:
        return np.zeros((r, 0))
    lda = sklearn.discriminant_analysis.LinearDiscriminantAnalysis(solver="svd").fit(pca.scores, classes)
    k = min(k_classes - 1, max_directions, lda.scalings_.shape[1])
    return np.asarray(lda.scalings_[:, :k], dtype=np.float64)


def _matmul_t(x: Any, y: np.ndarray) -> np.ndarray:
    """``xᵀ y`` for dense or sparse ``x`` [W, D] and dense ``y`` [W, k] -> [D, k]."""
    return np.asarray(x.T @ y) if sparse.issparse(x) else np.asarray(x, dtype=np.float64).T @ y


def orthonormal_basis(directions: np.ndarray, rtol: float = 1e-8) -> np.ndarray:
    """Orthonormal basis ``[D, k']`` of the span of the columns (SVD; near-dependent ones dropped)."""
    if directions.shape[1] == 0:
        return directions
    norms = np.linalg.norm(directions, axis=0)
    d = directions[:, norms > 0] / norms[norms > 0]
    if d.shape[1] == 0:
        return d
    u, s, _ = np.linalg.svd(d, full_matrices=False)
    return u[:, s > s[0] * rtol]


@dataclass
class LdaResult:
    """The distractor axes of one space: ``basis`` [D, k] orthonormal, and per distractor the
    number of classes and of axes it contributed."""

    basis: np.ndarray
    n_classes: dict[str, int]
    n_directions: dict[str, int]


def lda_projector(x: Any, classes: Mapping[str, np.ndarray], config: CrystalsConfig,
                  gram: np.ndarray | None = None) -> LdaResult:
    """Fit LDA per distractor on the words ``x`` [W, D] (dense or sparse) and return the
    orthonormal basis of all their discriminant axes, mapped back to the space.

    An axis ``w`` (PCA coordinates) is the direction ``Vᵣ w = Xcᵀ (U Λ^{-1/2} w)`` in the space
    (Xc: words centred), so the [D, r] axis matrix is never formed. With ``lda_iterations > 1``
    LDA is refit on the words already cleaned of the axes found so far (Gram
    ``G' = G - (X B)(X B)ᵀ``; an axis of the cleaned words is ``(I - B Bᵀ) Xcᵀ c``), so a
    distractor whose axis the first fit mis-estimated is removed further (as in iterative
    nullspace projection, Ravfogel et al. 2020).
    """
    gram = gram_matrix(x) if gram is None else gram
    with limit_threads(1):  # [W, W]-sized work: see compute.run on BLAS threads
        return _lda_passes(x, gram, classes, config)


def _lda_passes(x: Any, gram: np.ndarray, classes: Mapping[str, np.ndarray], config: CrystalsConfig) -> LdaResult:
    mean_row = np.asarray(x.mean(axis=0)).ravel()
    d = x.shape[1]
    basis = np.zeros((d, 0))
    n_classes = {name: int(len(np.unique(labels))) for name, labels in classes.items()}
    n_dirs = {name: 0 for name in classes}
    for _ in range(config.lda_iterations):
        xb = np.asarray(x @ basis) if basis.shape[1] else np.zeros((gram.shape[0], 0))
        pca = word_pca(gram - xb @ xb.T, config.lda_pca_dims)
        dirs = []
        for name, labels in classes.items():
            w = lda_axes(pca, labels, config.lda_max_directions)
            n_dirs[name] += int(w.shape[1])
            if w.shape[1]:
                c = pca.coef @ w  # [W, k]
                v = _matmul_t(x, c) - np.outer(mean_row, c.sum(axis=0))  # Xcᵀ c = Xᵀ c - x̄ ⊗ Σ_i c_i
                dirs.append(v - basis @ (basis.T @ v))  # the cleaned words' axis: (I - B Bᵀ) Xcᵀ c
        if not dirs:
            break
        basis = orthonormal_basis(np.hstack([basis, *dirs]))
    return LdaResult(basis, n_classes, n_dirs)


def project_out(x: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``x - (x U) Uᵀ``: each row's part in the orthogonal complement of span(U) (U orthonormal)."""
    x = np.asarray(x, dtype=np.float64)
    return x - (x @ basis) @ basis.T if basis.shape[1] else x.copy()


def centre_gram(gram: np.ndarray) -> np.ndarray:
    """``H G H`` with ``H = I - 11ᵀ/W``: the Gram matrix of the centred words, in O(W²)."""
    row = gram.mean(axis=1, keepdims=True)
    return gram - row - row.T + gram.mean()


def gram_matrix(x: Any) -> np.ndarray:
    """``X Xᵀ`` in float64 (sparse-aware)."""
    if sparse.issparse(x):
        xs = sparse.csr_matrix(x, dtype=np.float64)
        return np.asarray((xs @ xs.T).toarray())
    xd = np.asarray(x, dtype=np.float64)
    return xd @ xd.T
