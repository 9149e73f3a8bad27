"""(2) Clustering: the Kozachenko-Leonenko k-nearest-neighbour entropy and the cloud's
negentropy in its top whitened principal components, with the bias-cancelling same-estimator
Gaussian reference and the term bootstrap (see the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import special

from saeatlas.analysis.common.stats import spread_ci
from saeatlas.analysis.galaxy.spectrum import covariance_spectrum


def knn_entropy_terms(y: np.ndarray, k: int) -> tuple[np.ndarray, float, int]:
    """Per-point terms and constant of the Kozachenko-Leonenko estimator:
    ``Ĥ = const + mean(terms)``, ``terms_i = D log r_i``, ``const = ψ(n) - ψ(k) + log V_D``,
    ``V_D = π^(D/2) / Γ(D/2 + 1)`` the volume of the unit D-ball (Euclidean distances).

    ``r_i`` = distance to the k-th nearest *other* point, by exact brute-force search (sklearn,
    chunked BLAS): KD-trees gain nothing beyond ~10 dimensions. A duplicate point has r = 0;
    it is floored at 1e-12 of the median distance and counted (returned third).
    """
    from sklearn.neighbors import NearestNeighbors

    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    n, dim = y.shape
    if n <= k:
        raise ValueError(f"k-NN entropy needs more than k = {k} points, got {n}")
    dist, _ = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(y).kneighbors(y)
    # Column 0 is the point itself (distance 0) unless it has exact duplicates; in both cases the
    # (k+1)-th smallest distance to the whole set is the k-th smallest to the other points.
    r = dist[:, k]
    floor = 1e-12 * max(float(np.median(r)), 1e-300)
    zeros = int((r <= floor).sum())
    terms = dim * np.log(np.maximum(r, floor))
    log_unit_ball = 0.5 * dim * math.log(math.pi) - special.gammaln(0.5 * dim + 1.0)
    const = float(special.digamma(n) - special.digamma(k) + log_unit_ball)
    return terms, const, zeros


def knn_entropy(y: np.ndarray, k: int = 5) -> float:
    """Kozachenko-Leonenko differential entropy estimate (nats) of the sample ``y`` [n, D]."""
    terms, const, _ = knn_entropy_terms(y, k)
    return const + float(terms.mean())


def gaussian_entropy(eigenvalues: np.ndarray) -> float:
    """Closed form ``H = (D/2) log(2πe) + ½ Σ log λ_i`` of a Gaussian with covariance spectrum λ."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return float(0.5 * len(lam) * math.log(2 * math.pi * math.e) + 0.5 * np.log(lam).sum())


@dataclass
class EntropyResult:
    """Clustering (neg)entropy of one cloud in its top-D whitened principal components."""

    estimated: bool
    reason: str = ""
    dims: int = 0
    negentropy: float | None = None  # Ĥ_kNN(N(0, I_D) sample) - Ĥ_kNN(whitened cloud), nats
    entropy: float | None = None  # Ĥ_kNN of the cloud in its own units (top-D PC scores)
    entropy_gaussian: float | None = None  # closed form, same covariance (top-D eigenvalues)
    entropy_reference_bias: float | None = None  # Ĥ_kNN(N(0, I_D) sample) - closed form: the cancelled bias
    negentropy_closed_form: float | None = None  # closed form - Ĥ_kNN(cloud): J without bias cancellation
    variance_fraction: float | None = None  # share of the total variance in the D components
    zero_distances: int = 0
    ci: dict[str, float] = field(default_factory=dict)  # negentropy CI (see spread_ci)


def whiten(z: np.ndarray) -> np.ndarray:
    """Centre and whiten by the sample's own covariance: ``(z - z̄) U Λ^(-1/2)``."""
    lam, vecs, mean = covariance_spectrum(z, center=True)
    return (np.asarray(z, dtype=np.float64) - mean) @ vecs / np.sqrt(lam)


def reference_terms(n: int, dims: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
    """k-NN terms of an ``N(0, I_D)`` sample of n points, whitened by its own sample covariance
    exactly as the cloud is: the bias-cancelling reference. (Without that step the cloud, whose
    sample covariance is made exactly I, would look slightly more spread than the reference,
    whose sample covariance only approximates I: a negentropy bias of about -0.03 nats at
    n = 2000, D = 10.)"""
    z = whiten(rng.standard_normal((n, dims)))
    terms, const, _ = knn_entropy_terms(z, k)
    return terms, const, np.einsum("ij,ij->i", z, z)


def clustering_negentropy(x: np.ndarray, eigenvalues: np.ndarray, eigenvectors: np.ndarray, mean: np.ndarray,
                          dims: int, k: int, reference: tuple[np.ndarray, float, np.ndarray], n_boot: int,
                          rng: np.random.Generator, ci_level: float) -> EntropyResult:
    """Negentropy of the cloud ``x`` in its top ``dims`` principal components (package doc, (2)).

    ``eigenvalues``/``eigenvectors``/``mean`` are the cloud's covariance decomposition
    (``covariance_spectrum``); ``reference`` = ``reference_terms(n, dims, k, ·)`` for the same n.
    Whitened scores ``z = (x - x̄) U_D / √λ_D`` have identity covariance, so the Gaussian with the
    same covariance is ``N(0, I_D)``. Bootstrap: the per-point terms of the cloud and of the
    reference are resampled independently (neighbourhoods fixed), ``n_boot`` times, each as
    ``u_i = t_i - ½||z_i||²`` with the whitening-pinned mean of ``½||z_i||²`` added back
    (package doc, (2)).
    """
    n = len(x)
    lam = np.asarray(eigenvalues[:dims], dtype=np.float64)
    if n <= max(dims + 1, k + 1):
        return EntropyResult(False, f"{n} points are too few for a k-NN entropy in {dims} dimensions (k = {k})")
    if not np.all(lam > 1e-12 * float(eigenvalues[0])):
        return EntropyResult(False, f"the top {dims} principal components include a zero-variance direction")
    z = (np.asarray(x, dtype=np.float64) - mean) @ eigenvectors[:, :dims] / np.sqrt(lam)
    terms, const, zeros = knn_entropy_terms(z, k)
    ref_terms, ref_const, ref_z2 = reference
    if len(ref_terms) != n:
        raise ValueError(f"reference has {len(ref_terms)} points, cloud {n}: the bias cancels only at equal n")
    h_white = const + float(terms.mean())
    h_ref = ref_const + float(ref_terms.mean())
    half_logdet = 0.5 * float(np.log(lam).sum())
    h_gauss_white = gaussian_entropy(np.ones(dims))
    neg = h_ref - h_white
    boot = np.empty(0)
    if n_boot:
        z2 = np.einsum("ij,ij->i", z, z)
        u_cloud, u_ref = terms - 0.5 * z2, ref_terms - 0.5 * ref_z2
        h_cloud_b = const + 0.5 * z2.mean() + u_cloud[rng.integers(0, n, (n_boot, n))].mean(axis=1)
        h_ref_b = ref_const + 0.5 * ref_z2.mean() + u_ref[rng.integers(0, n, (n_boot, n))].mean(axis=1)
        boot = h_ref_b - h_cloud_b
    total = float(np.asarray(eigenvalues, dtype=np.float64).sum())
    return EntropyResult(
        True, dims=dims, negentropy=neg, entropy=h_white + half_logdet,
        entropy_gaussian=h_gauss_white + half_logdet, entropy_reference_bias=h_ref - h_gauss_white,
        negentropy_closed_form=h_gauss_white - h_white,
        variance_fraction=float(lam.sum() / total) if total > 0 else None,
        zero_distances=zeros, ci=spread_ci(neg, boot, ci_level) if n_boot else {})
