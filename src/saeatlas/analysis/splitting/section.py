"""The splitting analysis in the report: class fractions against the null and Leask et al.'s
reference, split families and their two tests, from the written metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric


def _number(metrics: Mapping[str, float], label: str, key: str, published: str | None = None) -> Number:
    """``mean.<key>`` (averaged over the pairs of sizes) beside ``mean.<key>_null``."""
    return Number(label, metric(metrics, f"mean.{key}"), metric(metrics, f"mean.{key}_null"), published=published)


def _above(n: Number) -> str:
    if n.value is None:
        return "not estimated"
    return "above" if n.null is not None and n.value > n.null else "NOT above"


def section(metrics: Mapping[str, float], out_dir: Path) -> Section:
    pairs = sorted({tuple(int(x) for x in k.split(".")[0].split("_")[1:]) for k in metrics if k.startswith("pair_")})
    pair_list = ", ".join(f"{a}→{b}" for a, b in pairs)
    ref_similar = metric(metrics, "reference.leask2025_similar_fraction")
    ref_novel = metric(metrics, "reference.leask2025_novel_fraction")
    similar = _number(metrics, "similar fraction", "similar_fraction",
                      None if ref_similar is None else f"≈ {ref_similar:.2f} (Leask et al. 2025)")
    novel = _number(metrics, "novel fraction", "novel_fraction",
                    None if ref_novel is None else f"≈ {ref_novel:.2f} (Leask et al. 2025)")
    split = _number(metrics, "split-child fraction", "split_child_fraction")
    families = _number(metrics, "Split families per pair", "families")
    agreement = _number(metrics, "Decoder/activation match agreement", "match_agreement")
    span = _number(metrics, "parent span R²", "parent_span_r2_mean")
    coverage = _number(metrics, "union coverage", "union_coverage_mean")
    cos = _number(metrics, "mean best decoder cosine", "best_cos_mean")

    summary = (f"Over {len(pairs)} adjacent pair(s) of sizes ({pair_list}), averaged over pairs: "
               f"{similar.text()}; {novel.text()}; {split.text()}. "
               f"{agreement.text()}, {_above(agreement)} its null (rotated decoder, permuted tokens). ")
    if families.value:
        summary += (f"{families.text()}. Is a parent's direction in its children's span? {span.text()}, "
                    f"{_above(span)} the selection-conditioned null. Do its children cover its firings? "
                    f"{coverage.text()}, {_above(coverage)} the permuted-token null.")
    else:
        summary += f"No split family was found ({families.text()}): span and union tests are not estimated."

    return Section(
        title="Feature splitting across dictionary sizes",
        summary=summary,
        numbers=(similar, novel, split, families, agreement, span, coverage, cos),
        figures=(
            Figure("figures/splitting_classes.png",
                   "Left: class fractions of the larger SAE's alive features per pair (identical, split child, "
                   f"other similar, novel), dashed: Leask et al. 2025's similar fraction; {similar.text()}. "
                   "Right: split families by number of children (symlog)."),
            Figure("figures/splitting_matches.png",
                   "Best decoder cosine (top) and best activation correlation (bottom) of each alive larger "
                   "feature, real vs null (Haar-rotated decoder, row-permuted codes); dashed: similar_cos, "
                   f"identical_corr. {cos.text()}."),
            Figure("figures/split_tree.plotly.json",
                   "The split forest across all sizes (node = size:feature; the largest trees), as an icicle: "
                   "hover a node for its class and match, click it to open its feature page; "
                   "split_tree.json holds the whole forest."),
        ),
        tables=(
            Table("tables/split_families.csv", "One row per split family: parent, children, their cosines, "
                  "containment, span R² and union statistics, each with its null."),
            Table("tables/children_per_parent.csv", "Split families per number of children, per pair."),
            Table("tables/matches.csv", "Every larger feature's class, decoder and activation match."),
        ),
        order=20,
    )
