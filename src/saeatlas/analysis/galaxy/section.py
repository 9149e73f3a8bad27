"""The galaxy analysis in the report: the spectrum slope and the clustering negentropy of the
largest dictionary's decoder cloud, each beside its same-n isotropic Gaussian null."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

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


def section(metrics: Mapping[str, float], out_dir: Path) -> Section:
    size, layer = metric(metrics, "largest.size"), metric(metrics, "layer")
    n = "n/a" if size is None else f"{size:.0f}"
    published = metric(metrics, "reference.li2024_slope_layer12")
    slope = Number("spectrum slope α", metric(metrics, "largest.slope"), metric(metrics, "largest.slope_gaussian"),
                   _ci(metrics, "largest.slope"),
                   None if published is None else f"≈ {published:g} (Li et al. 2024, Gemma-2-2B layer 12)")
    negentropy = Number("clustering negentropy (nats)", metric(metrics, "largest.negentropy"),
                        metric(metrics, "largest.negentropy_gaussian"), _ci(metrics, "largest.negentropy"))
    activations = Number("activations' spectrum slope α", metric(metrics, "activations.slope"),
                         metric(metrics, "activations.slope_gaussian"), _ci(metrics, "activations.slope"))
    act_negentropy = Number("activations' negentropy", metric(metrics, "activations.negentropy"),
                            metric(metrics, "activations.negentropy_gaussian"), _ci(metrics, "activations.negentropy"))
    summary = " ".join([
        f"Decoder cloud of the largest dictionary (n = {n}, unit rows): {slope.text()}; {negentropy.text()}.",
        _verdict(metrics, "slope", "spectrum slope"),
        _verdict(metrics, "negentropy", "negentropy"),
        f"Raw activations: {activations.text()}; {act_negentropy.text()}.",
    ])
    figures = (
        Figure("figures/galaxy_spectrum.png",
               "Left: covariance eigenvalue spectra per dictionary size (dotted: isotropic Gaussian of the same n; "
               "black: activations), fit window shaded. Middle: power-law slope α per size with its bootstrap CI, "
               f"beside the null and Li et al.'s 0.47 / 0.03 (largest size: α = {_fmt(slope.value)}, null "
               f"{_fmt(slope.null)}). Right: clustering negentropy per size beside its null (largest size: "
               f"{_fmt(negentropy.value)}, null {_fmt(negentropy.null)})."),
        Figure("figures/galaxy_spectrum.plotly.json", "The spectra of the left panel, interactive."),
    )
    tables = (
        Table("tables/fits.csv", "Slope and negentropy of every cloud (each size, its null, the activations and "
                                 "their null), with bootstrap, percentile intervals and diagnostics."),
        Table("tables/spectra.csv", "Every eigenvalue by size and rank, beside the null's and the activations'."),
    )
    title = "Galaxy: shape and clustering of the feature cloud" + ("" if layer is None else f" (layer {layer:.0f})")
    return Section(title=title, summary=summary, numbers=(slope, negentropy, activations, act_negentropy),
                   figures=figures, tables=tables, order=70)
