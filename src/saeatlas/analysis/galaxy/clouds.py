"""One cloud, end to end: its spectrum, slope with bootstrap CI (over our window and the
published one) and clustering negentropy, and the published clustering-entropy protocol; and the
isotropic Gaussian null cloud of the same n and d."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from saeatlas.analysis.galaxy.config import GalaxyConfig
from saeatlas.analysis.galaxy.entropy import EntropyResult, clustering_negentropy, reference_terms
from saeatlas.analysis.galaxy.goc import GocEntropy, goc_entropy, goc_gaussian_null
from saeatlas.analysis.galaxy.spectrum import (SlopeFit, bootstrap_spectra, covariance_spectrum, fit_spectrum_slope,
                                               participation_ratio, prepare_cloud)

# Independent random streams, one per purpose, keyed by (seed, purpose, cloud, n): a cloud's
# numbers do not depend on which other sizes are analysed, or in which order.
SUBSAMPLE, NULL_SAMPLE, SPECTRUM_BOOT, REFERENCE, ENTROPY_BOOT, GOC_SUBSAMPLE, GOC_NULL = range(7)
DECODER, NULL, ACTIVATIONS, ACTIVATIONS_NULL = range(4)

# The bias-cancelling k-NN references, one per cloud size n (shared by every cloud of that n).
References = dict[int, tuple[np.ndarray, float, np.ndarray]]
# The published entropy protocol's Gaussian nulls, one per number of points it sees (see goc.py).
GocNulls = dict[int, GocEntropy]


def stream(seed: int, purpose: int, cloud: int, n: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, purpose, cloud, n]))


@dataclass
class CloudResult:
    name: str  # "decoder", "gaussian" (the null), "activations", "activations_gaussian"
    size: int  # dictionary size (0 for the activations and their null)
    n_points: int
    zero_rows: int
    eigenvalues: np.ndarray
    fit: SlopeFit
    entropy: EntropyResult
    participation_ratio: float
    fit_goc: SlopeFit  # the same spectrum over the published window (Li et al. 2024: ranks 10-150)
    goc: GocEntropy  # the published clustering-entropy protocol (for a null cloud: its protocol null)


Pair = tuple[CloudResult, CloudResult]  # a cloud and its isotropic Gaussian null


def analyse_cloud(name: str, size: int, points: np.ndarray, zero_rows: int, config: GalaxyConfig, cloud: int,
                  references: References, goc: GocEntropy) -> CloudResult:
    """Spectrum, slopes (our window and the published one, on the same eigenvalues and the same
    bootstrap spectra) with bootstrap CIs, and clustering negentropy of one prepared cloud;
    ``goc`` is its published-protocol entropy (computed by the caller: a null's is shared)."""
    n = len(points)
    lam, vecs, mean = covariance_spectrum(points, config.center)
    boot = None
    if config.n_bootstrap:
        # kept to the deeper of the two windows, so both fits share the replicates
        boot = bootstrap_spectra(points, config.n_bootstrap, stream(config.seed, SPECTRUM_BOOT, cloud, n),
                                 config.center, top=min(max(config.rank_max, config.published_rank_max),
                                                        points.shape[1]),
                                 desc=f"bootstrap spectra ({name} {size or ''})")
    fit = fit_spectrum_slope(lam, config.rank_min, config.rank_max, boot, config.ci_level)
    fit_goc = fit_spectrum_slope(lam, config.published_rank_min, config.published_rank_max, boot, config.ci_level)
    # Negentropy compares with the Gaussian of the same mean and covariance: always centred.
    lam_c, vecs_c, mean_c = (lam, vecs, mean) if config.center else covariance_spectrum(points, True)
    if n not in references and n > max(config.entropy_dims + 1, config.knn_k + 1):
        references[n] = reference_terms(n, config.entropy_dims, config.knn_k,
                                        stream(config.seed, REFERENCE, 0, n))
    ent = (clustering_negentropy(points, lam_c, vecs_c, mean_c, config.entropy_dims, config.knn_k, references[n],
                                 config.n_bootstrap, stream(config.seed, ENTROPY_BOOT, cloud, n), config.ci_level)
           if n in references else
           EntropyResult(False, f"{n} points are too few for a k-NN entropy in {config.entropy_dims} dimensions"))
    return CloudResult(name, size, n, zero_rows, lam, fit, ent, participation_ratio(lam), fit_goc, goc)


def published_entropy(points: np.ndarray, config: GalaxyConfig, cloud: int) -> GocEntropy:
    """The published clustering-entropy protocol on a real cloud (its own subsample stream)."""
    return goc_entropy(points, config.goc_points, config.goc_dims, config.goc_repeats,
                       stream(config.seed, GOC_SUBSAMPLE, cloud, len(points)))


def published_entropy_null(n: int, d: int, config: GalaxyConfig, nulls: GocNulls) -> GocEntropy:
    """The protocol's isotropic null for a cloud of n points, computed once per number of points
    the protocol sees (n, or goc_points for every larger cloud) from a stream keyed by it alone,
    so a size's numbers do not depend on the other sizes."""
    key = n if n <= config.goc_points else config.goc_points + 1  # every larger cloud shares one
    if key not in nulls:
        nulls[key] = goc_gaussian_null(n, d, config.goc_points, config.goc_dims, config.goc_repeats,
                                       stream(config.seed, GOC_NULL, 0, key), config.normalize_rows)
    return nulls[key]


def gaussian_null_cloud(n: int, d: int, config: GalaxyConfig, cloud: int) -> np.ndarray:
    """``N(0, I_d)`` sample of n rows, prepared exactly like the real cloud."""
    g = stream(config.seed, NULL_SAMPLE, cloud, n).standard_normal((n, d)).astype(np.float32)
    points, _ = prepare_cloud(g, config.normalize_rows, config.max_points, stream(config.seed, SUBSAMPLE, cloud, n))
    return points


def prepared(x: np.ndarray, config: GalaxyConfig, cloud: int, n: int) -> tuple[np.ndarray, int]:
    """A real cloud's points (``prepare_cloud`` with its own subsample stream, keyed by ``n``)."""
    return prepare_cloud(x, config.normalize_rows, config.max_points, stream(config.seed, SUBSAMPLE, cloud, n))
