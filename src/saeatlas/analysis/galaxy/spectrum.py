"""(1) Shape: the cloud's points, its covariance spectrum, bootstrap spectra and the power-law
slope of the spectrum (see the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from saeatlas.progress import bar
from saeatlas.analysis.common.stats import PowerLawFit, fit_power_law
from saeatlas.analysis.common.threads import limit_threads


def prepare_cloud(x: np.ndarray, normalize_rows: bool, max_points: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, int]:
    """Rows as float32 points: all-zero rows dropped (a zero decoder row is no direction), a
    seeded subsample of ``max_points`` rows if there are more, rows scaled to unit norm if
    asked. Returns (points, number of zero rows dropped)."""
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("cloud has non-finite entries")
    norms = np.linalg.norm(x, axis=1)
    keep = norms > 0
    dropped = int((~keep).sum())
    x, norms = x[keep], norms[keep]
    if len(x) > max_points:
        pick = np.sort(rng.choice(len(x), max_points, replace=False))
        x, norms = x[pick], norms[pick]
    if normalize_rows:
        x = x / norms[:, None]
    return np.ascontiguousarray(x), dropped


def covariance_spectrum(x: np.ndarray, center: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigen-decomposition of the cloud's covariance, in float64.

    ``C = (X - x̄)^T (X - x̄) / (n - 1)`` if ``center`` else ``X^T X / n`` (second moments).
    Returns (eigenvalues descending [d], eigenvectors as columns [d, d], the centre [d]).
    Tiny negative round-off eigenvalues are clipped to 0.
    """
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.mean(axis=0) if center else np.zeros(x64.shape[1])
    xc = x64 - mean
    cov = xc.T @ xc / (len(x64) - 1 if center else len(x64))
    # One BLAS thread for the d x d eigen-decompositions, whoever calls them (LAPACK's
    # tridiagonalisation is a chain of small level-2 steps: threads only add synchronisation).
    with limit_threads(1, "blas"):
        vals, vecs = np.linalg.eigh(cov)
    return np.clip(vals[::-1], 0.0, None), vecs[:, ::-1], mean


def bootstrap_spectra(x: np.ndarray, n_boot: int, rng: np.random.Generator, center: bool = True,
                      top: int | None = None, desc: str = "bootstrap spectra") -> np.ndarray:
    """Eigenvalues (descending, the first ``top``) of the covariance of ``n_boot`` resamples
    of the rows drawn with replacement: ``[n_boot, top]``.

    A resample is represented by its multiplicities ``c_i`` (how often row i was drawn), so
    ``Σ_i c_i (x_i - m)(x_i - m)^T = Y^T Y - n m m^T`` with ``Y = √c ⊙ X`` over the ~63% rows
    drawn at least once, ``m = Σ c_i x_i / n``: one float32 product of the drawn rows per
    replicate, in rows centred on the full-sample mean first (so the subtraction loses nothing).
    """
    x = np.asarray(x, dtype=np.float32)
    n, d = x.shape
    top = d if top is None else top
    xc = x - x.mean(axis=0, dtype=np.float64).astype(np.float32) if center else x
    out = np.empty((n_boot, top))
    for b in bar(range(n_boot), desc=desc):
        counts = np.bincount(rng.integers(0, n, n), minlength=n)
        drawn = np.flatnonzero(counts)
        root = np.sqrt(counts[drawn].astype(np.float32))
        y = xc[drawn]
        y *= root[:, None]
        second = (y.T @ y).astype(np.float64)  # NumPy hands A.T @ A to BLAS syrk
        if center:
            m = (root @ y).astype(np.float64) / n  # Σ c_i x_i = Σ √c_i (√c_i x_i)
            cov = (second - n * np.outer(m, m)) / (n - 1)
        else:
            cov = second / n
        with limit_threads(1, "blas"):  # as in covariance_spectrum
            out[b] = np.linalg.eigvalsh(cov)[::-1][:top]
    return out


@dataclass
class SlopeFit:
    """α of ``λ_r ∝ r^(-α)`` over the window, with its bootstrap spread (see the package doc)."""

    estimated: bool
    reason: str = ""
    alpha: float | None = None
    log10_prefactor: float | None = None  # log10 λ at r = 1 on the fitted line
    r2: float | None = None
    se_fit: float | None = None  # OLS standard error (misfit of a straight line over the window)
    ci_low: float | None = None
    ci_high: float | None = None
    percentile_low: float | None = None
    percentile_high: float | None = None
    bootstrap_sd: float | None = None
    bootstrap_shift: float | None = None  # median(bootstrap α) - α: the resampling bias
    bootstrap_used: int = 0


def fit_spectrum_slope(eigenvalues: np.ndarray, rank_min: int, rank_max: int, boot: np.ndarray | None = None,
                       ci_level: float = 0.95) -> SlopeFit:
    """OLS of log λ_r on log r over ``rank_min ≤ r ≤ rank_max`` (1-based); α = -slope.

    ``boot`` [R, ≥ rank_max] are bootstrap spectra (descending); each is refitted over the same
    window. Uses ``common.stats.fit_power_law`` (same OLS, same estimate ± z·sd interval) and
    turns its exponent around: a spectrum falling as r^(-α) has exponent -α.
    """
    ranks = np.arange(rank_min, rank_max + 1)
    vals = np.asarray(eigenvalues, dtype=np.float64)[rank_min - 1:rank_max]
    if len(vals) < len(ranks):
        return SlopeFit(False, f"only {len(vals)} eigenvalues, window needs ranks {rank_min}..{rank_max}")
    floor = 1e-12 * float(np.max(eigenvalues))
    if not np.all(vals > floor):
        return SlopeFit(False, f"eigenvalues in ranks {rank_min}..{rank_max} reach zero (rank-deficient cloud)")
    b = None if boot is None else np.asarray(boot, dtype=np.float64)[:, rank_min - 1:rank_max]
    if b is not None:
        b = np.where(b > floor, b, np.nan)  # a rank-deficient resample is dropped by fit_power_law
    fit: PowerLawFit = fit_power_law("eigenvalue", ranks.tolist(), vals, b, ci_level)
    if not fit.estimated:
        return SlopeFit(False, fit.reason)
    neg = (lambda v: None if v is None else -float(v))
    return SlopeFit(True, alpha=-float(fit.exponent), log10_prefactor=math.log10(fit.prefactor), r2=fit.r2,
                    se_fit=fit.se_fit, ci_low=neg(fit.ci_high), ci_high=neg(fit.ci_low),
                    percentile_low=neg(fit.percentile_high), percentile_high=neg(fit.percentile_low),
                    bootstrap_sd=fit.bootstrap_sd,
                    bootstrap_shift=None if fit.bootstrap_shift is None else -float(fit.bootstrap_shift),
                    bootstrap_used=fit.bootstrap_used)


def participation_ratio(eigenvalues: np.ndarray) -> float:
    """Effective dimension ``(Σ λ)² / Σ λ²``: d for an isotropic cloud, 1 for a line."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return float(lam.sum() ** 2 / (lam ** 2).sum())
