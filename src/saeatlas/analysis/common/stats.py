"""Statistics several analyses share: permutation p-values, multiple-testing correction,
bootstrap intervals, and the log-log power-law fit (dictionary-size scaling and the galaxy's
eigenvalue spectrum use the same estimator and the same interval)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats


def permutation_p(observed: float, null: np.ndarray) -> float:
    """One-sided ``(1 + #{null ≥ observed}) / (1 + P)``; ties count against the observation."""
    null = np.asarray(null)
    tol = 1e-12 * max(1.0, abs(observed))
    return float((1 + np.sum(null >= observed - tol)) / (1 + len(null)))


def null_summary(observed: float, null: np.ndarray) -> dict[str, float]:
    """Mean, sd, ``z = (obs − mean)/sd`` and the permutation ``p`` of ``observed`` in ``null``."""
    mean, sd = float(null.mean()), float(null.std(ddof=1)) if null.size > 1 else 0.0
    z = (observed - mean) / sd if sd > 0 else math.nan
    return {"mean": mean, "sd": sd, "z": z, "p": permutation_p(observed, null)}


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: ``p̃_(i) = max_{j ≤ i} min(1, (T - j + 1) p_(j))``."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p)
    adj = np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order])
    out = np.empty_like(p)
    out[order] = np.maximum.accumulate(adj)
    return out


def spread_ci(estimate: float, boot: np.ndarray, ci_level: float) -> dict[str, float]:
    """``estimate ± z·sd(boot)``, with the percentile interval and the bootstrap's shift
    (median − estimate) beside it, so a skewed bootstrap shows; {} with fewer than 2 finite
    replicates."""
    boot = np.asarray(boot, dtype=np.float64)
    boot = boot[np.isfinite(boot)]
    if len(boot) < 2:
        return {}
    z = float(stats.norm.ppf(0.5 + ci_level / 2))
    sd = float(boot.std(ddof=1))
    tail = 100 * (1 - ci_level) / 2
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return {"ci_low": estimate - z * sd, "ci_high": estimate + z * sd, "bootstrap_sd": sd,
            "percentile_low": float(lo), "percentile_high": float(hi),
            "bootstrap_shift": float(np.median(boot) - estimate)}


@dataclass(frozen=True)
class PowerLawFit:
    """v(n) = prefactor * n^exponent, fitted by OLS on log10 v = log10 C + alpha log10 n."""

    quantity: str
    estimated: bool
    reason: str = ""
    exponent: float | None = None
    prefactor: float | None = None
    r2: float | None = None
    se_fit: float | None = None  # OLS standard error of alpha across sizes (needs >= 3 sizes)
    ci_low: float | None = None  # estimate -+ z * sd(bootstrap)
    ci_high: float | None = None
    percentile_low: float | None = None  # the percentile interval, for comparison
    percentile_high: float | None = None
    bootstrap_sd: float | None = None
    bootstrap_shift: float | None = None  # median(bootstrap) - estimate
    bootstrap_used: int = 0


def ols_loglog(sizes: np.ndarray, values: np.ndarray) -> tuple[float, float, float | None, float]:
    """Slope alpha, intercept log10 C, se(alpha), R^2 of log10 v = log10 C + alpha log10 n."""
    x, y = np.log10(sizes), np.log10(values)
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    resid = y - (intercept + slope * x)
    ssr, sst = float((resid ** 2).sum()), float(((y - ym) ** 2).sum())
    se = math.sqrt(ssr / (len(x) - 2) / sxx) if len(x) > 2 else None  # se(alpha)^2 = s^2 / Sxx
    r2 = 1.0 - ssr / sst if sst > 0 else 1.0
    return slope, intercept, se, r2


def fit_power_law(quantity: str, sizes: Sequence[int], values: Sequence[float], boot: np.ndarray | None,
                  ci_level: float) -> PowerLawFit:
    """Fit v = C n^alpha; CI ``alpha ± z·sd`` over the bootstrap replicates ``boot`` [R, S]
    (replicates with a non-positive or non-finite value are dropped)."""
    n = np.asarray(sizes, dtype=float)
    v = np.asarray(values, dtype=float)
    if len(n) < 2:
        return PowerLawFit(quantity, False, f"a power law needs >= 2 sizes, have {len(n)}")
    if not np.all(np.isfinite(v) & (v > 0)):
        return PowerLawFit(quantity, False, f"{quantity} is not positive at every size ({v.tolist()}): no log-log fit")
    slope, intercept, se, r2 = ols_loglog(n, v)
    fit: dict[str, float | int | None] = dict(exponent=slope, prefactor=10.0 ** intercept, r2=r2, se_fit=se)
    if boot is not None and len(boot):
        ok = np.all(np.isfinite(boot) & (boot > 0), axis=1)
        slopes = np.array([ols_loglog(n, row)[0] for row in boot[ok]])
        interval = spread_ci(slope, slopes, ci_level)
        if interval:
            fit.update(interval, bootstrap_used=int(len(slopes)))
    return PowerLawFit(quantity, True, **fit)  # type: ignore[arg-type]


def wilson_interval(successes: int, n: int, ci_level: float) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (e.g. a classifier's test accuracy):
    ``(p̂ + z²/2n ± z √(p̂(1-p̂)/n + z²/4n²)) / (1 + z²/n)``. Unlike p̂ ± z·se it stays inside
    [0, 1] and keeps its coverage near 0 and 1, where good probes sit. (nan, nan) for n = 0."""
    if n <= 0:
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + ci_level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
