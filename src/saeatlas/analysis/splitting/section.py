"""The splitting analysis in the report: class fractions against the null, Leask et al.'s
published rule run on our dictionaries beside their published fractions (from
``analysis/published.yaml``), split families and their two tests, from the written metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from saeatlas.analysis.common.published import label
from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric


def _number(metrics: Mapping[str, float], label: str, key: str, published: str | None = None) -> Number:
    """``mean.<key>`` (averaged over the pairs of sizes) beside ``mean.<key>_null``."""
    return Number(label, metric(metrics, f"mean.{key}"), metric(metrics, f"mean.{key}_null"), published=published)


def _above(n: Number) -> str:
    if n.value is None:
        return "not estimated"
    return "above" if n.null is not None and n.value > n.null else "NOT above"


def _per_pair(metrics: Mapping[str, float], pairs: list[tuple[int, ...]]) -> str:
    """Leask et al.'s reconstruction-like fraction of every pair (all latents), beside its null."""
    parts = []
    for a, b in pairs:
        own = metric(metrics, f"pair_{a}_{b}.leask_reconstruction_fraction")
        null = metric(metrics, f"pair_{a}_{b}.leask_reconstruction_fraction_null")
        if own is not None:
            parts.append(f"{a}→{b} {own:.3g}" + ("" if null is None else f" (null {null:.3g})"))
    return ", ".join(parts) or "not estimated"


def _prefix_numbers(metrics: Mapping[str, float]) -> tuple[Number, ...]:
    """The Matryoshka prefix steps' means (``prefixes.py``), each beside its null; none when the
    SAE is not nested."""
    if "prefix_mean.novel_fraction" not in metrics:
        return ()
    return tuple(Number(label, metric(metrics, f"prefix_mean.{key}"), metric(metrics, f"prefix_mean.{key}_null"))
                 for label, key in (("added latents: split-child fraction", "split_child_fraction"),
                                    ("novel by direction", "novel_fraction"),
                                    ("nested in one prefix latent's firings", "nested_fraction"),
                                    ("nested but novel by direction", "nested_novel_fraction")))


def section(metrics: Mapping[str, float], out_dir: Path) -> Section:
    pairs = sorted({tuple(int(x) for x in k.split(".")[0].split("_")[1:]) for k in metrics if k.startswith("pair_")})
    pair_list = ", ".join(f"{a}→{b}" for a, b in pairs)
    similar = _number(metrics, "similar fraction", "similar_fraction")
    novel = _number(metrics, "novel fraction", "novel_fraction")
    leask = _number(metrics, "Leask et al.'s rule, reconstruction-like fraction of all latents",
                    "leask_reconstruction_fraction", label("splitting", "leask2025_similar_fraction"))
    leask_novel = _number(metrics, "novel fraction of all latents", "leask_novel_fraction",
                          label("splitting", "leask2025_novel_fraction"))
    leask_alive = _number(metrics, "the same rule on alive latents only", "leask_reconstruction_fraction_alive")
    split = _number(metrics, "split-child fraction", "split_child_fraction")
    families = _number(metrics, "Split families per pair", "families")
    agreement = _number(metrics, "Decoder/activation match agreement", "match_agreement")
    span = _number(metrics, "parent span R²", "parent_span_r2_mean")
    coverage = _number(metrics, "union coverage", "union_coverage_mean")
    cos = _number(metrics, "mean best decoder cosine", "best_cos_mean")

    summary = (f"Over {len(pairs)} adjacent pair(s) of sizes ({pair_list}), averaged over pairs: "
               f"{similar.text()}; {novel.text()}; {split.text()}. "
               f"{agreement.text()}, {_above(agreement)} its null (rotated decoder, permuted tokens). "
               f"Published protocol (best decoder cosine to the smaller SAE >= 0.7, every latent counted): "
               f"{leask.text()}; {leask_novel.text()}; {leask_alive.text()}. Per pair: {_per_pair(metrics, pairs)}. ")
    if families.value:
        summary += (f"{families.text()}. Is a parent's direction in its children's span? {span.text()}, "
                    f"{_above(span)} the selection-conditioned null. Do its children cover its firings? "
                    f"{coverage.text()}, {_above(coverage)} the permuted-token null.")
    else:
        summary += f"No split family was found ({families.text()}): span and union tests are not estimated."
    nested = _prefix_numbers(metrics)
    tables: tuple[Table, ...] = ()
    if nested:
        steps = sorted({k.split(".")[0] for k in metrics if k.startswith("prefix_") and k[7].isdigit()},
                       key=lambda t: int(t.split("_")[1]))
        summary += (" Inside the largest (Matryoshka) SAE, the latents each nested prefix adds "
                    f"({', '.join(t.replace('prefix_', '').replace('_', '→') for t in steps)}), read against the "
                    "prefix before it (whose latents it keeps), averaged over the steps: "
                    + "; ".join(n.text() for n in nested) + ".")
        tables = (Table("tables/prefix_classes.csv", "Per step between nested prefixes of the Matryoshka SAE: the "
                        "added latents' classes against the prefix (direction), the share nested in one prefix "
                        "latent's firings, and those nested but novel by direction, each with its null."),)

    return Section(
        title="Feature splitting across dictionary sizes",
        summary=summary,
        numbers=(similar, novel, split, leask, leask_novel, leask_alive, families, agreement, span, coverage, cos,
                 *nested),
        figures=(
            Figure("figures/splitting_classes.png",
                   "Left: class fractions of the larger SAE's alive features per pair (identical, split child, "
                   "other similar, novel); stars: Leask et al.'s rule on all latents; dashed: their published "
                   f"reconstruction-like fraction. {similar.text()}; {leask.text()}. "
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
            *tables,
        ),
        order=20,
    )
