"""What the galaxy analysis writes: flat metrics, the ``spectra`` and ``fits`` tables and the
``galaxy_summary`` document, from the per-cloud results."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np

from saeatlas.analysis.galaxy.clouds import CloudResult, Pair
from saeatlas.analysis.galaxy.config import GalaxyConfig
from saeatlas.analysis.galaxy.spectrum import LI2024_SLOPE_GAUSSIAN, LI2024_SLOPE_LAYER12

# The largest size's headline numbers, repeated as ``largest.<key>``.
LARGEST_KEYS = ("slope", "slope_ci_low", "slope_ci_high", "slope_gaussian", "slope_gaussian_ci_low",
                "slope_gaussian_ci_high", "negentropy", "negentropy_ci_low", "negentropy_ci_high",
                "negentropy_gaussian", "negentropy_gaussian_ci_low", "negentropy_gaussian_ci_high",
                "participation_ratio", "participation_ratio_gaussian")


def cloud_metrics(prefix: str, res: CloudResult, null: CloudResult) -> dict[str, float]:
    """``<prefix>.<quantity>[_gaussian][_<statistic>]`` for one cloud and its isotropic null,
    e.g. ``n18432.slope``, ``n18432.slope_ci_low``, ``n18432.slope_gaussian``,
    ``n18432.slope_gaussian_ci_low``. Undefined numbers are left out (JSON has no NaN); the
    ``*_estimated`` flags say which."""
    out: dict[str, float] = {f"{prefix}.n_points": res.n_points, f"{prefix}.zero_rows": res.zero_rows}
    for g, r in (("", res), ("_gaussian", null)):
        f, e = r.fit, r.entropy
        slope, neg = f"{prefix}.slope{g}", f"{prefix}.negentropy{g}"
        out[f"{prefix}.participation_ratio{g}"] = r.participation_ratio
        out[slope + "_estimated"] = int(f.estimated)
        if f.estimated:
            out[slope], out[slope + "_r2"] = f.alpha, f.r2
            if f.se_fit is not None:
                out[slope + "_se_fit"] = f.se_fit
            if f.ci_low is not None:
                out[slope + "_ci_low"], out[slope + "_ci_high"] = f.ci_low, f.ci_high
                out[slope + "_bootstrap_shift"] = f.bootstrap_shift
        out[neg + "_estimated"] = int(e.estimated)
        if e.estimated:
            out[neg] = e.negentropy
            if e.ci:
                out[neg + "_ci_low"], out[neg + "_ci_high"] = e.ci["ci_low"], e.ci["ci_high"]
    e = res.entropy
    if e.estimated:  # the real cloud's entropy on its own scale, and the diagnostics of (2)
        out[f"{prefix}.entropy"] = e.entropy
        out[f"{prefix}.entropy_closed_form"] = e.entropy_gaussian
        out[f"{prefix}.entropy_reference_bias"] = e.entropy_reference_bias
        if e.variance_fraction is not None:
            out[f"{prefix}.entropy_dims_variance_fraction"] = e.variance_fraction
    return {k: v for k, v in out.items() if v is not None and math.isfinite(v)}


def metrics(config: GalaxyConfig, layer: int, d: int, sizes: tuple[int, ...], pairs: list[Pair], act: Pair
            ) -> dict[str, float]:
    """Every cloud's metrics, the largest size's headline numbers, the settings and the references."""
    out: dict[str, float] = {"layer": layer, "d": d}
    for res, null in pairs:
        out.update(cloud_metrics(f"n{res.size}", res, null))
    out.update(cloud_metrics("activations", *act))
    largest = sizes[-1]
    out["largest.size"] = largest
    for key in LARGEST_KEYS:
        if f"n{largest}.{key}" in out:
            out[f"largest.{key}"] = out[f"n{largest}.{key}"]
    out.update({"config.rank_min": config.rank_min, "config.rank_max": config.rank_max,
                "config.entropy_dims": config.entropy_dims, "config.knn_k": config.knn_k,
                "config.n_bootstrap": config.n_bootstrap,
                "reference.li2024_slope_layer12": LI2024_SLOPE_LAYER12,
                "reference.li2024_slope_gaussian": LI2024_SLOPE_GAUSSIAN})
    return out


def clean(v: Any) -> Any:
    """Plain Python values for tables and documents; None for missing or non-finite numbers."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    return v


def spectra_table(config: GalaxyConfig, layer: int, d: int, pairs: list[Pair], act: Pair) -> list[dict[str, Any]]:
    """One row per size and rank: the cloud's eigenvalue beside its null's and the activations'."""
    (ares, anull), rows = act, []
    for res, null in pairs:
        for r in range(d):
            rows.append({"layer": layer, "size": res.size, "rank": r + 1,
                         "eigenvalue": clean(res.eigenvalues[r]), "eigenvalue_gaussian": clean(null.eigenvalues[r]),
                         "eigenvalue_activations": clean(ares.eigenvalues[r]),
                         "eigenvalue_activations_gaussian": clean(anull.eigenvalues[r]),
                         "in_fit_window": int(config.rank_min <= r + 1 <= config.rank_max)})
    return rows


def fit_row(res: CloudResult, layer: int) -> dict[str, Any]:
    f, e = res.fit, res.entropy
    return {"layer": layer, "cloud": res.name, "size": res.size, "n_points": res.n_points,
            "slope": f.alpha, "slope_ci_low": f.ci_low, "slope_ci_high": f.ci_high,
            "slope_percentile_low": f.percentile_low, "slope_percentile_high": f.percentile_high,
            "slope_bootstrap_sd": f.bootstrap_sd, "slope_bootstrap_shift": f.bootstrap_shift,
            "slope_bootstrap_used": f.bootstrap_used, "slope_r2": f.r2, "slope_se_fit": f.se_fit,
            "log10_prefactor": f.log10_prefactor, "slope_reason": f.reason,
            "participation_ratio": res.participation_ratio,
            "negentropy": e.negentropy, "negentropy_ci_low": e.ci.get("ci_low"),
            "negentropy_ci_high": e.ci.get("ci_high"), "negentropy_percentile_low": e.ci.get("percentile_low"),
            "negentropy_percentile_high": e.ci.get("percentile_high"),
            "negentropy_bootstrap_sd": e.ci.get("bootstrap_sd"), "negentropy_closed_form": e.negentropy_closed_form,
            "entropy": e.entropy, "entropy_gaussian_closed_form": e.entropy_gaussian,
            "entropy_reference_bias": e.entropy_reference_bias, "entropy_dims": e.dims,
            "entropy_dims_variance_fraction": e.variance_fraction, "zero_distances": e.zero_distances,
            "entropy_reason": e.reason}


def fits_table(layer: int, clouds: list[CloudResult]) -> list[dict[str, Any]]:
    """One row per cloud (each size, its null, the activations, their null): slope and negentropy."""
    return [{k: clean(v) for k, v in fit_row(c, layer).items()} for c in clouds]


def _notes(clouds: list[CloudResult]) -> list[str]:
    """What could not be estimated, and why."""
    label = (lambda c: f"{c.name} n = {c.size}" if c.size else c.name)
    notes = [f"{label(c)}: slope not fitted: {c.fit.reason}" for c in clouds if not c.fit.estimated]
    notes += [f"{label(c)}: negentropy not estimated: {c.entropy.reason}" for c in clouds if not c.entropy.estimated]
    return notes


def _methods(config: GalaxyConfig) -> dict[str, str]:
    return {
        "cloud": ("decoder rows" + (", unit-normalised" if config.normalize_rows else "") + ", zero rows dropped, "
                  f"at most {config.max_points} rows (seeded subsample); activations processed the same way"),
        "spectrum": ("eigenvalues of the " + ("centred covariance" if config.center else "second-moment matrix")
                     + " of the cloud"),
        "slope": (f"alpha = -slope of the OLS line of log eigenvalue on log rank, ranks {config.rank_min}.."
                  f"{config.rank_max}"),
        "slope_ci": (f"bootstrap over points ({config.n_bootstrap} resamples): estimate -+ z sd; the bootstrap "
                     "widens the Marchenko-Pastur spread, so its shift is reported, not used"),
        "null": "isotropic Gaussian N(0, I_d), same n and d, processed identically",
        "entropy": (f"Kozachenko-Leonenko k-NN estimator (k = {config.knn_k}) in the top {config.entropy_dims} "
                    "whitened principal components"),
        "negentropy": ("H_kNN(N(0, I_D) sample of the same n) - H_kNN(whitened cloud): the estimator's bias "
                       "cancels; the closed-form Gaussian entropy is reported beside it"),
        "negentropy_ci": ("bootstrap of the per-point k-NN terms (neighbourhoods fixed) minus 0.5 ||z||^2, whose "
                          "mean whitening pins: estimate -+ z sd"),
    }


def summary_document(config: GalaxyConfig, layer: int, d: int, sizes: tuple[int, ...],
                     fits: list[dict[str, Any]], clouds: list[CloudResult]) -> dict[str, Any]:
    """The ``galaxy_summary`` document: settings, fits, notes, methods and the published references."""
    return {
        "layer": layer, "d": d, "sizes": list(sizes), "config": asdict(config), "fits": fits,
        "notes": _notes(clouds),
        "methods": _methods(config),
        "reference": {"li2024_slope_layer12": LI2024_SLOPE_LAYER12, "li2024_slope_gaussian": LI2024_SLOPE_GAUSSIAN,
                      "source": "Li, Michaud, Baek, Engels, Sun, Tegmark 2024, The Geometry of Concepts, section 5"},
    }
