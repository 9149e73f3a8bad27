"""The neighbourhood analysis in the report: how close each feature's nearest decoder neighbour is
against isotropic random directions, how faithful the UMAP maps are against permuted maps, and
whether the joint map puts a feature beside the smaller feature it continues or splits from."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _versus(real: float | None, null: float | None, above: str, not_above: str) -> str:
    """``above`` or ``not_above`` by whether ``real`` exceeds its null (a missing value is not)."""
    return above if real is not None and null is not None and real > null else not_above


def _per_size(metrics: Mapping[str, float], sizes: list[int]) -> tuple[list[str], list[Number]]:
    """Top-1 neighbour cosine and map trustworthiness, each beside its null."""
    if not sizes:
        return ["No neighbour statistics were written."], []
    small, large = sizes[0], sizes[-1]
    nn, nn_null = metric(metrics, f"n{large}.nn_cos_mean"), metric(metrics, f"n{large}.nn_cos_mean_null")
    nn_s, nn_s_null = metric(metrics, f"n{small}.nn_cos_mean"), metric(metrics, f"n{small}.nn_cos_mean_null")
    trust = metric(metrics, f"n{large}.umap_trustworthiness")
    trust_null = metric(metrics, f"n{large}.umap_trustworthiness_null")
    sentences = [
        f"At n = {large} the mean top-1 decoder-neighbour cosine is {_fmt(nn)} against {_fmt(nn_null)} for "
        f"as many isotropic random directions (n = {small}: {_fmt(nn_s)} vs {_fmt(nn_s_null)}); "
        + _versus(nn, nn_null, "features sit in tighter neighbourhoods than chance (the gap is an upper "
                  "bound: the null also removes any shared mean direction).",
                  "the neighbourhoods are no tighter than chance."),
        f"The n = {large} UMAP map has trustworthiness {_fmt(trust)} (permuted map {_fmt(trust_null)}).",
    ]
    numbers = [Number(f"{label}, n = {s}", metric(metrics, f"n{s}.{key}"), metric(metrics, f"n{s}.{key}_null"))
               for s in sizes for label, key in (("top-1 neighbour cosine", "nn_cos_mean"),
                                                 ("UMAP trustworthiness", "umap_trustworthiness"))]
    return sentences, numbers


def _cross_size(metrics: Mapping[str, float]) -> tuple[str, list[Number]]:
    """The joint map's cross-size test, or why it was not estimated."""
    hit, hit_null = metric(metrics, "mean.map_parent_in_knn"), metric(metrics, "mean.map_parent_in_knn_null")
    if metric(metrics, "joint.umap_trustworthiness") is None:
        return ("No joint map of all sizes was made (neighbours.joint is off), so the cross-size test is not "
                "estimated."), []
    if hit is None:
        return ("No larger feature is linked to a smaller decoder match in any adjacent pair, so the cross-size "
                "test of the joint map is not estimated."), []
    linked = sum(int(v) for k, v in metrics.items() if k.startswith("pair_") and k.endswith(".linked"))
    sentence = (
        f"In the joint map of all sizes, a fraction {_fmt(hit)} of the {linked} linked larger features have "
        f"their smaller match among their k nearest smaller features (permuted maps {_fmt(hit_null)}): "
        + _versus(hit, hit_null, "the map places a feature beside the feature it continues or splits from.",
                  "the map does not place features beside their matches more often than chance."))
    return sentence, [Number("matched parent among map neighbours (mean over pairs)", hit, hit_null),
                      Number("joint-map trustworthiness", metric(metrics, "joint.umap_trustworthiness"),
                             metric(metrics, "joint.umap_trustworthiness_null"))]


def section(metrics: Mapping[str, float], out_dir: Path) -> Section:
    sizes = sorted(int(m.group(1)) for k in metrics if (m := re.fullmatch(r"n(\d+)\.nn_cos_mean", k)))
    top = f"n{sizes[-1]}.nn_cos_mean" if sizes else ""
    sentences, numbers = _per_size(metrics, sizes)
    joint_sentence, joint_numbers = _cross_size(metrics)
    return Section(
        title="Feature neighbourhoods and maps",
        summary=" ".join([*sentences, joint_sentence]),
        numbers=tuple(numbers + joint_numbers),
        figures=(
            Figure("figures/neighbours_cosines.png", "Top-1 decoder-neighbour cosine per size, beside the same "
                   f"number of isotropic random directions (largest size: mean {_fmt(metric(metrics, top))}, "
                   f"null {_fmt(metric(metrics, top + '_null'))})."),
            Figure("figures/neighbours_maps.png", "UMAP per size (colour: top-1 neighbour cosine) and of all sizes "
                   "(colour: size); trustworthiness is judged against a within-size permuted map."),
            Figure("figures/neighbours_map.plotly.json", "Interactive map: hover for a feature's nearest neighbour."),
        ),
        tables=(Table("tables/neighbours.csv", "The k nearest decoder neighbours of every feature and size."),
                Table("tables/umap_coordinates.csv", "Per-size and joint-map coordinates of every feature.")),
        order=40,
    )
