"""The galaxy analysis in the report: the spectrum slope and the clustering negentropy of the
largest dictionary's decoder cloud, each beside its same-n isotropic Gaussian null; and the
published protocols (Li et al. 2024's rank window and clustering entropy) beside them, with the
published values (``analysis/published.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from saeatlas.analysis.common.published import label
from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def _ci(metrics: Mapping[str, float], key: str) -> tuple[float, float] | None:
    low, high = metric(metrics, f"{key}_ci_low"), metric(metrics, f"{key}_ci_high")
    return None if low is None or high is None else (low, high)


def _verdict(metrics: Mapping[str, float], key: str, what: str) -> str:
    """Whether the cloud's interval lies above its null's interval, said with the numbers."""
    own, null = _ci(metrics, f"largest.{key}"), _ci(metrics, f"largest.{key}_gaussian")
    if metric(metrics, f"largest.{key}") is None:
        return f"The {what} was not estimated (see the notes in galaxy_summary.json)."
    if own is None or null is None:
        return f"The {what} has no bootstrap interval (n_bootstrap = 0), so it is not tested against its null."
    if own[0] > null[1]:
        return f"The {what} lies above its isotropic null (interval {own[0]:.3g} > null's upper end {null[1]:.3g})."
    return f"The {what} is not above its isotropic null (interval {own[0]:.3g} ≤ null's upper end {null[1]:.3g})."


def _window(metrics: Mapping[str, float], low: str, high: str, default: str) -> str:
    lo, hi = metric(metrics, f"config.{low}"), metric(metrics, f"config.{high}")
    return default if lo is None or hi is None else f"{lo:.0f}-{hi:.0f}"


def _difference(metrics: Mapping[str, float], key: str) -> str:
    own, null = metric(metrics, f"largest.{key}"), metric(metrics, f"largest.{key}_gaussian")
    return "n/a" if own is None or null is None else f"{own - null:+.3g}"


def _published_protocol(metrics: Mapping[str, float]) -> tuple[Number, Number, Number]:
    """Li et al.'s rank window and clustering-entropy protocol run on our largest cloud, each beside
    its null run through the identical protocol, with the published value where one exists."""
    window = _window(metrics, "published_rank_min", "published_rank_max", "10-150")
    slope = Number(f"spectrum slope α over the published window (ranks {window})",
                   metric(metrics, "largest.slope_goc"), metric(metrics, "largest.slope_goc_gaussian"),
                   _ci(metrics, "largest.slope_goc"),
                   label("galaxy", "li2024_slope_layer12"))
    entropy = Number("published-protocol k = 1 entropy (nats)", metric(metrics, "largest.entropy_goc"),
                     metric(metrics, "largest.entropy_goc_gaussian"))
    clustering = Number("published-protocol clustering (Gaussian - k-NN entropy, nats)",
                        metric(metrics, "largest.clustering_goc"), metric(metrics, "largest.clustering_goc_gaussian"),
                        published=label("galaxy", "li2024_entropy_peak"))
    return slope, entropy, clustering


def section(metrics: Mapping[str, float], out_dir: Path) -> Section:
    size, layer = metric(metrics, "largest.size"), metric(metrics, "layer")
    n = "n/a" if size is None else f"{size:.0f}"
    window = _window(metrics, "rank_min", "rank_max", "1-100")
    slope = Number(f"spectrum slope α (ranks {window})", metric(metrics, "largest.slope"),
                   metric(metrics, "largest.slope_gaussian"), _ci(metrics, "largest.slope"))
    negentropy = Number("clustering negentropy (nats)", metric(metrics, "largest.negentropy"),
                        metric(metrics, "largest.negentropy_gaussian"), _ci(metrics, "largest.negentropy"))
    activations = Number("activations' spectrum slope α", metric(metrics, "activations.slope"),
                         metric(metrics, "activations.slope_gaussian"), _ci(metrics, "activations.slope"))
    act_negentropy = Number("activations' negentropy", metric(metrics, "activations.negentropy"),
                            metric(metrics, "activations.negentropy_gaussian"), _ci(metrics, "activations.negentropy"))
    slope_goc, entropy_goc, clustering_goc = _published_protocol(metrics)
    summary = " ".join([
        f"Decoder cloud of the largest dictionary (n = {n}, unit rows): {slope.text()}; {negentropy.text()}.",
        _verdict(metrics, "slope", "spectrum slope"),
        _verdict(metrics, "negentropy", "negentropy"),
        f"Raw activations: {activations.text()}; {act_negentropy.text()}.",
        f"Published protocols on the same cloud: {slope_goc.text()} (their isotropic Gaussian "
        f"{label('galaxy', 'li2024_slope_gaussian')}, at n = 65536, d = 2304: a null's slope falls with n/d, so "
        "read ours against our null of the same n).",
        _verdict(metrics, "slope_goc", "published-window slope"),
        f"{entropy_goc.text()} ± {_fmt(metric(metrics, 'largest.entropy_goc_sd'))} (sd over subsamples); "
        f"{clustering_goc.text()}. Absolute entropies in 100 standardised components depend on d, n and units "
        "(and the published values came from resampling with replacement, where duplicated points sit at "
        "distance 0), so only the difference to the null of the same n and d compares across models: here "
        f"{_difference(metrics, 'clustering_goc')} nats of clustering above the null.",
    ])
    figures = (
        Figure("figures/galaxy_spectrum.png",
               "Left: covariance eigenvalue spectra per dictionary size (dotted: isotropic Gaussian of the same n; "
               "black: activations), fit window shaded. Middle: power-law slope α per size with its bootstrap CI, "
               f"beside the null and Li et al.'s published values (largest size: α = {_fmt(slope.value)}, null "
               f"{_fmt(slope.null)}); orange: the same spectra over the published window "
               f"(α = {_fmt(slope_goc.value)}, null {_fmt(slope_goc.null)}, published "
               f"{label('galaxy', 'li2024_slope_layer12')}). Right: clustering negentropy per size beside its null "
               f"(largest size: {_fmt(negentropy.value)}, null {_fmt(negentropy.null)})."),
        Figure("figures/galaxy_spectrum.plotly.json", "The spectra of the left panel, interactive."),
    )
    tables = (
        Table("tables/fits.csv", "Slope and negentropy of every cloud (each size, its null, the activations and "
                                 "their null), with bootstrap, percentile intervals and diagnostics."),
        Table("tables/spectra.csv", "Every eigenvalue by size and rank, beside the null's and the activations'."),
    )
    title = "Galaxy: shape and clustering of the feature cloud" + ("" if layer is None else f" (layer {layer:.0f})")
    return Section(title=title, summary=summary,
                   numbers=(slope, negentropy, activations, act_negentropy, slope_goc, entropy_goc, clustering_goc),
                   figures=figures, tables=tables, order=70)
