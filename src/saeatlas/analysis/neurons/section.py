"""The neurons analysis in the report: per size, the share of features whose most-correlated MLP
neuron has |r| at most the threshold, beside the random-direction and rotated-neuron nulls and
Templeton et al.'s 82% (``analysis/published.yaml``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from saeatlas.analysis.common.published import label
from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric

PUBLISHED = "templeton2024_frac_max_neuron_corr_le_0_3"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def _ci(metrics: Mapping[str, float], key: str) -> tuple[float, float] | None:
    low, high = metric(metrics, f"{key}.frac_le_threshold_ci_low"), metric(metrics, f"{key}.frac_le_threshold_ci_high")
    return None if low is None or high is None else (low, high)


def _sizes(metrics: Mapping[str, float]) -> list[int]:
    return sorted({int(m.group(1)) for k in metrics if (m := re.fullmatch(r"n(\d+)\.frac_le_threshold", k))})


def _verdict(metrics: Mapping[str, float], threshold: str) -> str:
    """The largest size against the random-direction null, by their Wilson intervals, with numbers."""
    own, null = _ci(metrics, "largest"), _ci(metrics, "random")
    v, nv = metric(metrics, "largest.frac_le_threshold"), metric(metrics, "random.frac_le_threshold")
    if own is None or null is None or v is None or nv is None:
        return "The largest size or the random-direction null was not estimated (no alive signals)."
    if own[1] < null[0]:
        return (f"Features of the largest size are more neuron-aligned than random residual directions: "
                f"{_pct(v)} at |r| ≤ {threshold} vs {_pct(nv)} (intervals [{_pct(own[0])}, {_pct(own[1])}] and "
                f"[{_pct(null[0])}, {_pct(null[1])}] do not overlap).")
    if own[0] > null[1]:
        return (f"Features of the largest size are less neuron-aligned than random residual directions: "
                f"{_pct(v)} vs {_pct(nv)} at |r| ≤ {threshold}.")
    return (f"The largest size does not differ from the random-direction null: {_pct(v)} vs {_pct(nv)} at "
            f"|r| ≤ {threshold} (overlapping intervals).")


def section(metrics: Mapping[str, float], out_dir: Path) -> Section:
    layer, thr = metric(metrics, "layer"), metric(metrics, "config.threshold")
    threshold = "n/a" if thr is None else f"{thr:g}"
    sizes = _sizes(metrics)
    numbers = tuple(
        Number(f"n = {s}: share of alive features with max |r| ≤ {threshold} (null: random residual directions)",
               metric(metrics, f"n{s}.frac_le_threshold"), metric(metrics, "random.frac_le_threshold"),
               _ci(metrics, f"n{s}"), published=label("neurons", PUBLISHED))
        for s in sizes)
    per_size = "; ".join(
        f"n = {s}: {_pct(metric(metrics, f'n{s}.frac_le_threshold'))} (median max |r| "
        f"{_fmt(metric(metrics, f'n{s}.median_max_corr'))}, {_fmt(metric(metrics, f'n{s}.dead'), 0)} dead "
        "left out)" for s in sizes)
    neurons, tokens = metric(metrics, "neurons"), metric(metrics, "tokens")
    summary = " ".join([
        f"For every feature, the Pearson correlation of its activation with each of the {_fmt(neurons, 0)} MLP "
        f"neurons of the layer over {_fmt(tokens, 0)} held-out ordinary tokens (massive-activation rows left out); "
        "its largest |r| is its best neuron. Features that never fired have no r and are counted apart.",
        f"Share of alive features whose best neuron has |r| ≤ {threshold}: {per_size}.",
        f"Nulls through the identical estimator: random unit directions in the residual stream "
        f"{_pct(metric(metrics, 'random.frac_le_threshold'))} (median max |r| "
        f"{_fmt(metric(metrics, 'random.median_max_corr'))}); the neurons' own directions after a random rotation "
        f"{_pct(metric(metrics, 'rotation.frac_le_threshold'))} "
        f"(median {_fmt(metric(metrics, 'rotation.median_max_corr'))}).",
        f"Published: {label('neurons', PUBLISHED)} of features ≤ 0.3.",
        _verdict(metrics, threshold),
        f"Signed reading (max r instead of max |r|): {_pct(metric(metrics, 'largest.frac_le_threshold_signed'))} "
        "for the largest size.",
    ])
    figures = (Figure("figures/neurons_max_corr.png",
                      f"Density of each feature's largest |r| with any MLP neuron, per dictionary size, beside random "
                      f"residual directions (black dashed) and rotated neurons (grey dotted); red line at {threshold}. "
                      f"Largest size: {_pct(metric(metrics, 'largest.frac_le_threshold'))} ≤ {threshold}, random "
                      f"directions {_pct(metric(metrics, 'random.frac_le_threshold'))}, published 82%."),)
    tables = (Table("tables/fractions.csv", "Per size and null: alive and dead signals, share ≤ threshold with its "
                                            "Wilson interval, signed share, median and 90th percentile of max |r|."),
              Table("tables/max_corr_histogram.csv", "The histograms of the figure (counts per bin)."),
              *(Table(f"tables/top_neurons_n{s}.csv", f"n = {s}: each feature's most-correlated neurons "
                                                       "(index, signed r), blank for dead features.") for s in sizes))
    title = "Neurons: features vs MLP neurons" + ("" if layer is None else f" (layer {layer:.0f})")
    return Section(title=title, summary=summary, numbers=numbers, figures=figures, tables=tables, order=75)


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if digits == 0 else f"{v:.{digits}g}"
