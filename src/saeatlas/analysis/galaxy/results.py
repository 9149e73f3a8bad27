"""What the galaxy analysis writes: flat metrics, the ``spectra`` and ``fits`` tables and the
``galaxy_summary`` document, from the per-cloud results."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np

from saeatlas.analysis.common.published import load, reference_metrics
from saeatlas.analysis.galaxy.clouds import CloudResult, Pair
from saeatlas.analysis.galaxy.config import GalaxyConfig
from saeatlas.analysis.galaxy.goc import GOC_KNN_K, GocEntropy
from saeatlas.analysis.galaxy.spectrum import SlopeFit

# The largest size's headline numbers, repeated as ``largest.<key>``.
LARGEST_KEYS = ("slope", "slope_ci_low", "slope_ci_high", "slope_gaussian", "slope_gaussian_ci_low",
                "slope_gaussian_ci_high", "negentropy", "negentropy_ci_low", "negentropy_ci_high",
                "negentropy_gaussian", "negentropy_gaussian_ci_low", "negentropy_gaussian_ci_high",
                "participation_ratio", "participation_ratio_gaussian",
                # the published protocols beside ours (Li et al. 2024's window and entropy)
                "slope_goc", "slope_goc_ci_low", "slope_goc_ci_high", "slope_goc_gaussian",
                "slope_goc_gaussian_ci_low", "slope_goc_gaussian_ci_high", "entropy_goc", "entropy_goc_sd",
                "entropy_goc_gaussian", "entropy_goc_gaussian_sd", "clustering_goc", "clustering_goc_sd",
                "clustering_goc_gaussian", "clustering_goc_gaussian_sd", "entropy_goc_points")


def slope_metrics(key: str, f: SlopeFit) -> dict[str, float]:
    """``<key>``, ``_estimated``, ``_r2``, ``_se_fit``, ``_ci_low/high``, ``_bootstrap_shift`` of one fit."""
    out: dict[str, float] = {key + "_estimated": int(f.estimated)}
    if f.estimated:
        out[key], out[key + "_r2"] = f.alpha, f.r2
        if f.se_fit is not None:
            out[key + "_se_fit"] = f.se_fit
        if f.ci_low is not None:
            out[key + "_ci_low"], out[key + "_ci_high"] = f.ci_low, f.ci_high
            out[key + "_bootstrap_shift"] = f.bootstrap_shift
    return out


def goc_metrics(prefix: str, g: str, e: GocEntropy) -> dict[str, float]:
    """The published entropy protocol's ``entropy_goc<g>``, ``clustering_goc<g>`` and their sds."""
    out: dict[str, float] = {f"{prefix}.entropy_goc{g}_estimated": int(e.estimated)}
    if e.estimated:
        out[f"{prefix}.entropy_goc{g}"], out[f"{prefix}.entropy_goc{g}_sd"] = e.entropy, e.entropy_sd
        out[f"{prefix}.clustering_goc{g}"], out[f"{prefix}.clustering_goc{g}_sd"] = e.clustering, e.clustering_sd
        out[f"{prefix}.entropy_goc{g}_points"] = e.points
        out[f"{prefix}.entropy_goc{g}_repeats"] = e.repeats
    return out


def cloud_metrics(prefix: str, res: CloudResult, null: CloudResult) -> dict[str, float]:
    """``<prefix>.<quantity>[_gaussian][_<statistic>]`` for one cloud and its isotropic null,
    e.g. ``n18432.slope``, ``n18432.slope_ci_low``, ``n18432.slope_gaussian``,
    ``n18432.slope_gaussian_ci_low``. Undefined numbers are left out (JSON has no NaN); the
    ``*_estimated`` flags say which."""
    out: dict[str, float] = {f"{prefix}.n_points": res.n_points, f"{prefix}.zero_rows": res.zero_rows}
    for g, r in (("", res), ("_gaussian", null)):
        e, neg = r.entropy, f"{prefix}.negentropy{g}"
        out[f"{prefix}.participation_ratio{g}"] = r.participation_ratio
        out.update(slope_metrics(f"{prefix}.slope{g}", r.fit))
        out.update(slope_metrics(f"{prefix}.slope_goc{g}", r.fit_goc))
        out.update(goc_metrics(prefix, g, r.goc))
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
    """Every cloud's metrics, the largest size's headline numbers, the settings and the published
    numbers (``reference.*``, from ``analysis/published.yaml``)."""
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
                "config.published_rank_min": config.published_rank_min,
                "config.published_rank_max": config.published_rank_max, "config.goc_points": config.goc_points,
                "config.goc_dims": config.goc_dims, "config.goc_repeats": config.goc_repeats})
    out.update(reference_metrics("galaxy"))
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
                         "in_fit_window": int(config.rank_min <= r + 1 <= config.rank_max),
                         "in_published_window": int(config.published_rank_min <= r + 1 <= config.published_rank_max)})
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
            "entropy_reason": e.reason,
            **goc_row(res)}


def goc_row(res: CloudResult) -> dict[str, Any]:
    """The published protocols' columns of a ``fits`` row (window slope, clustering entropy)."""
    f, g = res.fit_goc, res.goc
    return {"slope_goc": f.alpha, "slope_goc_ci_low": f.ci_low, "slope_goc_ci_high": f.ci_high,
            "slope_goc_r2": f.r2, "slope_goc_bootstrap_shift": f.bootstrap_shift, "slope_goc_reason": f.reason,
            "entropy_goc": g.entropy, "entropy_goc_sd": g.entropy_sd, "clustering_goc": g.clustering,
            "clustering_goc_sd": g.clustering_sd, "entropy_goc_points": g.points, "entropy_goc_repeats": g.repeats,
            "entropy_goc_subsampled": int(g.subsampled), "entropy_goc_zero_distances": g.zero_distances,
            "entropy_goc_reason": g.reason}


def fits_table(layer: int, clouds: list[CloudResult]) -> list[dict[str, Any]]:
    """One row per cloud (each size, its null, the activations, their null): slope and negentropy."""
    return [{k: clean(v) for k, v in fit_row(c, layer).items()} for c in clouds]


def _notes(clouds: list[CloudResult]) -> list[str]:
    """What could not be estimated, and why."""
    label = (lambda c: f"{c.name} n = {c.size}" if c.size else c.name)
    notes = [f"{label(c)}: slope not fitted: {c.fit.reason}" for c in clouds if not c.fit.estimated]
    notes += [f"{label(c)}: negentropy not estimated: {c.entropy.reason}" for c in clouds if not c.entropy.estimated]
    notes += [f"{label(c)}: published-window slope not fitted: {c.fit_goc.reason}" for c in clouds
              if not c.fit_goc.estimated]
    notes += [f"{label(c)}: published entropy protocol not run: {c.goc.reason}" for c in clouds if not c.goc.estimated]
    notes += [f"{label(c)}: the published entropy protocol saw all {c.goc.points} points (no more than "
              "goc_points), so it was evaluated once and its sd is 0" for c in clouds
              if c.goc.estimated and not c.goc.subsampled]
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
        "slope_goc": (f"published protocol (Li et al. 2024): the same eigenvalues and bootstrap spectra fitted over "
                      f"ranks {config.published_rank_min}..{config.published_rank_max}"),
        "entropy_goc": (f"published protocol (Li et al. 2024): {config.goc_repeats} subsamples of {config.goc_points} "
                        f"points drawn without replacement (all points when fewer: one evaluation, sd 0), every "
                        f"dimension z-scored, PCA to {config.goc_dims}, Kozachenko-Leonenko k = {GOC_KNN_K} entropy "
                        "(nats); clustering_goc = closed-form Gaussian entropy of the same components - that; mean "
                        "and sd over the subsamples"),
        "entropy_goc_null": ("the same protocol on isotropic Gaussian rows (unit-normalised like the cloud) of the "
                             "size the protocol sees; shared by every cloud larger than goc_points (fresh samples)"),
    }


def summary_document(config: GalaxyConfig, layer: int, d: int, sizes: tuple[int, ...],
                     fits: list[dict[str, Any]], clouds: list[CloudResult]) -> dict[str, Any]:
    """The ``galaxy_summary`` document: settings, fits, notes, methods and the published references."""
    return {
        "layer": layer, "d": d, "sizes": list(sizes), "config": asdict(config), "fits": fits,
        "notes": _notes(clouds),
        "methods": _methods(config),
        "reference": {p.name: {"value": p.value, "label": p.label(), "where": p.where, "protocol": p.protocol}
                      for p in load().get("galaxy", {}).values()},
    }
