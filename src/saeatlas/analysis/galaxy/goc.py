"""(3) The Geometry of Concepts' clustering-entropy protocol, run beside our negentropy (see the
package docstring, "Published protocols"): subsample, z-score every dimension, PCA, the
Kozachenko-Leonenko k = 1 entropy, repeated over subsamples; and its isotropic Gaussian null
through the identical steps.

Why a second entropy at all: ours (negentropy in 10 whitened PCs, k = 5, bias-cancelling
reference) is what we trust; this one is what the published numbers mean, so the two can be read
side by side. Its absolute value is not comparable across models or studies: an entropy in 100
standardised principal components depends on d (the standardisation rescales every one of the d
input dimensions), on n (the k-NN estimator's bias in 100 dimensions is tens of nats and falls
with n) and on units. The difference to the null of the same n and d is what carries meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from saeatlas.analysis.galaxy.entropy import gaussian_entropy, knn_entropy_terms
from saeatlas.analysis.galaxy.spectrum import covariance_spectrum

# The protocol's neighbour: Kozachenko and Leonenko's original k = 1 (the paper's choice).
GOC_KNN_K = 1


@dataclass
class GocEntropy:
    """The protocol's entropy of one cloud: mean and spread over its subsamples."""

    estimated: bool
    reason: str = ""
    points: int = 0  # points per evaluation (the subsample size, or all when fewer)
    repeats: int = 0  # distinct evaluations behind mean and sd
    subsampled: bool = False  # False: the cloud has no more points than the subsample, one evaluation
    entropy: float | None = None  # mean Ĥ_kNN (k = 1) in the top PCs of the z-scored points, nats
    entropy_sd: float | None = None  # sd over the subsamples (0 with one evaluation)
    clustering: float | None = None  # mean [closed-form Gaussian entropy of the same PCs - Ĥ_kNN]
    clustering_sd: float | None = None
    zero_distances: int = 0  # exact duplicates met (floored by knn_entropy_terms)


def standardise(x: np.ndarray) -> np.ndarray:
    """Every column to mean 0, sd 1 (the paper's z-score); a constant column stays 0 (it carries
    no information, and dividing by its zero sd would make NaNs)."""
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(axis=0)
    return np.divide(x - x.mean(axis=0), sd, out=np.zeros_like(x), where=sd > 0)


def entropy_once(x: np.ndarray, dims: int) -> tuple[float, float, int]:
    """One evaluation: z-score, PCA to ``dims`` components, Kozachenko-Leonenko k = 1 entropy of
    the scores. Returns (Ĥ_kNN, closed-form entropy of the Gaussian with the scores' covariance,
    duplicate points met). Raises if the top ``dims`` components include a zero-variance one
    (then the scores have no density in ``dims`` dimensions)."""
    z = standardise(x)
    lam, vecs, mean = covariance_spectrum(z, center=True)
    top = lam[:dims]
    if len(top) < dims or not np.all(top > 1e-12 * max(float(lam[0]), 1e-300)):
        raise ValueError(f"the top {dims} principal components include a zero-variance direction")
    scores = (z - mean) @ vecs[:, :dims]
    terms, const, zeros = knn_entropy_terms(scores, GOC_KNN_K)
    return const + float(terms.mean()), gaussian_entropy(top), zeros


def goc_entropy(x: np.ndarray, points: int, dims: int, repeats: int, rng: np.random.Generator) -> GocEntropy:
    """The protocol on one cloud ``x`` [n, d]: ``repeats`` subsamples of ``points`` rows drawn
    without replacement (with replacement, a k = 1 estimator meets duplicates at distance 0:
    the released notebook's resampling does, see the package docstring), mean and sd over them.
    A cloud of at most ``points`` rows is evaluated once on all of them: every "subsample" would
    be the whole cloud, so the sd is 0 and says nothing about sampling noise."""
    n = len(x)
    if repeats < 1:
        return GocEntropy(False, "galaxy.goc_repeats = 0: the published entropy protocol is switched off")
    if n <= dims + 1 or n <= GOC_KNN_K + 1:
        return GocEntropy(False, f"{n} points are too few for a k = 1 entropy in {dims} principal components")
    subsampled = n > points
    m = points if subsampled else n
    draws = [np.sort(rng.choice(n, m, replace=False)) for _ in range(repeats)] if subsampled else [None]
    return _summarise([entropy_or_reason(x if pick is None else x[pick], dims) for pick in draws], m, subsampled)


def entropy_or_reason(x: np.ndarray, dims: int) -> tuple[float, float, int] | str:
    """``entropy_once``, or the reason it is undefined (the caller reports it, not a traceback)."""
    try:
        return entropy_once(x, dims)
    except ValueError as exc:
        return str(exc)


def _summarise(evaluations: list[tuple[float, float, int] | str], points: int, subsampled: bool) -> GocEntropy:
    """Mean and sd over the evaluations (sd 0 for a single one)."""
    failed = [e for e in evaluations if isinstance(e, str)]
    if failed:
        return GocEntropy(False, failed[0], points=points, subsampled=subsampled)
    h = np.array([e[0] for e in evaluations])  # type: ignore[index]
    c = np.array([e[1] - e[0] for e in evaluations])  # type: ignore[index]
    sd = (lambda v: float(v.std(ddof=1)) if len(v) > 1 else 0.0)
    return GocEntropy(True, points=points, repeats=len(h), subsampled=subsampled, entropy=float(h.mean()),
                      entropy_sd=sd(h), clustering=float(c.mean()), clustering_sd=sd(c),
                      zero_distances=sum(int(e[2]) for e in evaluations))  # type: ignore[index]


def goc_gaussian_null(n: int, d: int, points: int, dims: int, repeats: int, rng: np.random.Generator,
                      normalize_rows: bool) -> GocEntropy:
    """The same protocol on isotropic ``N(0, I_d)`` rows (unit-normalised like the real cloud if
    asked) of the size the protocol sees: for a cloud of n ≤ ``points`` rows, one cloud of n rows
    evaluated once (as the real one is); for a larger cloud, ``repeats`` fresh clouds of ``points``
    rows. A subsample of an i.i.d. cloud is itself an i.i.d. sample, so the null of every cloud
    larger than ``points`` is the same computation and is shared (keyed by ``points`` alone); its
    sd is that of fresh samples, at least the subsample sd of a real cloud (conservative)."""
    m = min(n, points)

    def cloud() -> np.ndarray:
        g = rng.standard_normal((m, d))
        return g / np.linalg.norm(g, axis=1, keepdims=True) if normalize_rows else g

    if repeats < 1:
        return GocEntropy(False, "galaxy.goc_repeats = 0: the published entropy protocol is switched off")
    if m <= dims + 1:
        return GocEntropy(False, f"{m} points are too few for a k = 1 entropy in {dims} principal components")
    return _summarise([entropy_or_reason(cloud(), dims) for _ in range(repeats if n > points else 1)], m, n > points)
