"""The splitting analysis as a computation: for every adjacent pair of sizes, match the larger
SAE's features to the smaller's (and again under the null), classify them, test the split
families, and assemble metrics, tables, the split-tree document and figures.

The methods are described in the package docstring (``analysis/splitting/__init__.py``).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import sparse

from saeatlas.analysis.common.linalg import random_rotation, unit_rows
from saeatlas.analysis.common.output import AnalysisOutput
from saeatlas.analysis.common.published import reference_metrics
from saeatlas.analysis.splitting.config import SplittingConfig
from saeatlas.analysis.splitting.families import evaluate_families, family_metrics, family_rows, mean_or_nan
from saeatlas.analysis.splitting.matching import (
    CLASSES,
    IDENTICAL,
    NOVEL,
    OTHER,
    SPLIT,
    Classification,
    Matching,
    firing_binary,
    match,
)

# Edges of the split tree name the relation: a split child hangs on a "split" edge; every other
# linked feature's edge is named after its class (a lone link with cos < similar_cos is "novel").
EDGE_KINDS = {"split_child": "split"}
TREE_FORMAT = "saeatlas.split_tree/1"

# Metrics averaged over the pairs (``mean.<name>`` and ``mean.<name>_null``).
MEAN_KEYS = ("identical_fraction", "split_child_fraction", "other_similar_fraction", "novel_fraction",
             "similar_fraction", "cos_similar_fraction", "families", "match_agreement", "best_cos_mean", "best_corr_mean",
             "act_identical_fraction", "mean_children_per_parent", "parent_span_r2_mean",
             "parent_span_r2_best_child_mean", "union_jaccard_mean", "union_coverage_mean",
             "union_precision_mean", "leask_reconstruction_fraction", "leask_novel_fraction",
             "leask_reconstruction_fraction_alive", "leask_novel_fraction_alive")


@dataclass
class SplittingInputs:
    """Plain arrays: decoders (rows of any norm) and codes on the same N tokens for every size."""

    sizes: tuple[int, ...]
    decoders: dict[int, np.ndarray]  # size -> [size, d]
    codes: dict[int, sparse.csr_matrix]  # size -> [N, size] activations
    # Matryoshka: the largest SAE's inner prefix ends (``prefixes``); empty for an SAE that is not nested
    prefixes: tuple[int, ...] = ()

    def validate(self) -> None:
        from saeatlas.config import valid_prefix_ends

        sizes = tuple(int(s) for s in self.sizes)
        if len(sizes) < 2 or any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"sizes must be >= 2 strictly ascending dictionary sizes, got {sizes}")
        if self.prefixes and not valid_prefix_ends([int(m) for m in self.prefixes], sizes[-1]):
            raise ValueError(f"prefix ends {list(self.prefixes)} must be strictly increasing, each in "
                             f"1..{sizes[-1] - 1}")
        d = n_tokens = None
        for s in sizes:
            if s not in self.decoders or s not in self.codes:
                raise ValueError(f"size {s}: missing decoder or codes")
            dec, codes = self.decoders[s], self.codes[s]
            if dec.ndim != 2 or dec.shape[0] != s:
                raise ValueError(f"size {s}: decoder shape {dec.shape}, expected [{s}, d]")
            if codes.shape[1] != s:
                raise ValueError(f"size {s}: codes shape {codes.shape}, expected [N, {s}]")
            d = dec.shape[1] if d is None else d
            n_tokens = codes.shape[0] if n_tokens is None else n_tokens
            if dec.shape[1] != d or codes.shape[0] != n_tokens:
                raise ValueError(f"size {s}: decoder width {dec.shape[1]} / tokens {codes.shape[0]} "
                                 f"differ from the other sizes ({d} / {n_tokens})")
        if not n_tokens:
            raise ValueError("codes have no tokens")


@dataclass
class PairResult:
    small: int
    large: int
    metrics: dict[str, float]
    families: list[dict[str, Any]]  # table rows
    matches: list[dict[str, Any]]  # table rows
    edges: list[dict[str, Any]]  # split-tree edges
    classes: np.ndarray
    firings_small: np.ndarray
    firings_large: np.ndarray
    hist: dict[str, np.ndarray]  # best cos / corr, real and null, for the figures
    children_counts: Counter  # families per number of children


# ------------------------------------------------------------------------------------------
# One pair of sizes
# ------------------------------------------------------------------------------------------


def _firing(codes: sparse.spmatrix) -> tuple[sparse.csc_matrix, np.ndarray]:
    """Firing sets (binary CSC) and firing counts per feature."""
    fire = firing_binary(codes)
    return fire, np.asarray(fire.sum(axis=0)).ravel().round().astype(np.int64)


def _null_larger(dec_l: np.ndarray, codes_l: sparse.csr_matrix,
                 rng: np.random.Generator) -> tuple[np.ndarray, sparse.csr_matrix]:
    """The null's larger SAE: its unit decoder rows rotated by one Haar-random rotation ``W' R``,
    and its codes with the token rows permuted ``B[π]`` (the rotation is drawn first)."""
    rotation = random_rotation(dec_l.shape[1], rng)
    perm = rng.permutation(codes_l.shape[0])
    return unit_rows(dec_l) @ rotation.astype(np.float32), sparse.csr_matrix(codes_l)[perm]


def _class_fractions(c: Classification, n_alive: int, prefix: str, suffix: str) -> dict[str, float]:
    """Fraction of the alive larger features in each class; families found."""
    met: dict[str, float] = {}
    for code, name in ((IDENTICAL, "identical"), (SPLIT, "split_child"), (OTHER, "other_similar"), (NOVEL, "novel")):
        met[prefix + f"{name}_fraction{suffix}"] = float((c.classes == code).sum() / max(n_alive, 1))
    met[prefix + f"similar_fraction{suffix}"] = float(
        np.isin(c.classes, (IDENTICAL, SPLIT, OTHER)).sum() / max(n_alive, 1))
    met[prefix + f"families{suffix}"] = len(c.families)
    return met


def share_at_least(cos: np.ndarray, among: np.ndarray, cut: float) -> float:
    """Share of the features selected by ``among`` whose best decoder cosine is ≥ ``cut`` (0 if none)."""
    return float((cos[among] >= cut).sum() / max(int(among.sum()), 1))


def leask_metrics(prefix: str, suffix: str, cos: np.ndarray, alive: np.ndarray, cut: float) -> dict[str, float]:
    """Leask et al.'s rule (best decoder cosine ≥ ``cut``: reconstruction-like, else novel) over
    all the larger SAE's latents, their protocol and our headline for it, and over the alive ones
    (the population of our classes; = ``cos_similar_fraction`` when ``cut == similar_cos``)."""
    out = {}
    for tag, among in (("", np.ones(len(cos), dtype=bool)), ("_alive", alive)):
        share = share_at_least(cos, among, cut)
        out[f"{prefix}leask_reconstruction_fraction{tag}{suffix}"] = share
        out[f"{prefix}leask_novel_fraction{tag}{suffix}"] = 1.0 - share if among.any() else 0.0
    return out


def _match_metrics(config: SplittingConfig, prefix: str, real: Matching, null: Matching,
                   alive: np.ndarray) -> dict[str, float]:
    """Best-match statistics over the alive larger features, each beside its null."""
    n_alive = int(alive.sum())
    p, met = prefix, {}
    met[p + "best_cos_mean"] = mean_or_nan(real.cos[alive])
    met[p + "best_cos_mean_null"] = mean_or_nan(null.cos[alive])
    met[p + "best_corr_mean"] = mean_or_nan(real.act.best_corr[alive])
    met[p + "best_corr_mean_null"] = mean_or_nan(null.act.best_corr[alive])
    met[p + "act_identical_fraction"] = float(
        (real.act.best_corr[alive] >= config.identical_corr).sum() / max(n_alive, 1))
    met[p + "act_identical_fraction_null"] = float(
        (null.act.best_corr[alive] >= config.identical_corr).sum() / max(n_alive, 1))
    met[p + "match_agreement"] = mean_or_nan((real.parent == real.act.best)[alive].astype(float))
    met[p + "match_agreement_null"] = mean_or_nan((null.parent == null.act.best)[alive].astype(float))
    for suffix, m in (("", real), ("_null", null)):
        met[p + "cos_similar_fraction" + suffix] = share_at_least(m.cos, alive, config.similar_cos)
        met.update(leask_metrics(p, suffix, m.cos, alive, config.leask_cos))
    similar = alive & (real.cos >= config.similar_cos)
    if similar.any():
        met[p + "match_agreement_similar"] = mean_or_nan((real.parent == real.act.best)[similar].astype(float))
    return met


def _pair_metrics(config: SplittingConfig, small: int, large: int, n_tok: int, real: Matching, null: Matching,
                  firings_s: np.ndarray, firings_l: np.ndarray) -> dict[str, float]:
    """Counts, class fractions (real and null), the smaller features split or continued, match statistics."""
    alive = firings_l >= config.min_firings
    n_alive = int(alive.sum())
    n_alive_s = max(int((firings_s >= config.min_firings).sum()), 1)
    p = f"pair_{small}_{large}."
    met: dict[str, float] = {
        p + "n_small": small, p + "n_large": large, p + "n_tokens": n_tok, p + "n_large_alive": n_alive,
        p + "rare_fraction": float(1.0 - n_alive / large),
    }
    met.update(_class_fractions(real.cls, n_alive, p, ""))
    met.update(_class_fractions(null.cls, n_alive, p, "_null"))
    met[p + "small_split_fraction"] = float(len(real.cls.families) / n_alive_s)
    met[p + "small_continued_fraction"] = float(
        len(set(real.parent[real.cls.classes == IDENTICAL].tolist())) / n_alive_s)
    met.update(_match_metrics(config, p, real, null, alive))
    return met


def _match_rows(tag: str, small: int, large: int, real: Matching, firings_l: np.ndarray) -> list[dict[str, Any]]:
    """One row per larger feature: its class, decoder and activation matches."""
    return [{
        "pair": tag, "small_size": small, "large_size": large, "feature": j, "firings": int(firings_l[j]),
        "class": CLASSES[real.cls.classes[j]], "dec_parent": int(real.parent[j]), "dec_cos": float(real.cos[j]),
        "act_parent": int(real.act.best[j]), "act_corr": float(real.act.best_corr[j]),
        "containment": float(real.containment[j]), "corr_with_dec_parent": float(real.act.corr_with_parent[j]),
    } for j in range(large)]


def _edges(small: int, large: int, real: Matching) -> list[dict[str, Any]]:
    """Split-tree edges: decoder parent → every linked larger feature."""
    return [{
        "source": f"{small}:{int(real.parent[j])}", "target": f"{large}:{int(j)}",
        "kind": EDGE_KINDS.get(CLASSES[int(real.cls.classes[j])], CLASSES[int(real.cls.classes[j])]),
        "cos": round(float(real.cos[j]), 5), "containment": round(float(real.containment[j]), 5),
        "corr": round(float(real.act.corr_with_parent[j]), 5),
    } for j in np.flatnonzero(real.cls.linked)]


def _pair(config: SplittingConfig, small: int, large: int, dec_s: np.ndarray, dec_l: np.ndarray,
          codes_s: sparse.csr_matrix, codes_l: sparse.csr_matrix, rng: np.random.Generator) -> PairResult:
    """Match and classify (real and null), test the families, and tabulate one pair of sizes."""
    tag = f"{small}->{large}"
    fire_s, firings_s = _firing(codes_s)
    fire_l, firings_l = _firing(codes_l)
    real = match(config, dec_s, dec_l, codes_s, codes_l, firings_l, tag)
    # Null: rotated larger dictionary and row-permuted larger codes (see the package docstring).
    dec_l_null, codes_l_null = _null_larger(dec_l, codes_l, rng)
    null = match(config, dec_s, dec_l_null, codes_s, codes_l_null, firings_l, f"{tag} null")

    met = _pair_metrics(config, small, large, codes_s.shape[0], real, null, firings_s, firings_l)
    fam = evaluate_families(real, dec_s, dec_l, fire_s, fire_l, firing_binary(codes_l_null), rng)
    met.update(family_metrics(f"pair_{small}_{large}.", fam))
    alive = firings_l >= config.min_firings
    hist = {"cos": real.cos[alive], "cos_null": null.cos[alive], "corr": real.act.best_corr[alive],
            "corr_null": null.act.best_corr[alive]}
    return PairResult(small, large, met, family_rows(tag, small, large, real, fam, firings_s, firings_l),
                      _match_rows(tag, small, large, real, firings_l), _edges(small, large, real),
                      real.cls.classes, firings_s, firings_l, hist, fam.children_counts)


# ------------------------------------------------------------------------------------------
# All pairs: metrics, tree document, output
# ------------------------------------------------------------------------------------------


def _metrics(pairs: list[PairResult]) -> dict[str, float]:
    """Every pair's metrics, their means over the pairs that define them, the reference values;
    NaN (undefined) metrics left out."""
    metrics: dict[str, float] = {}
    for pr in pairs:
        metrics.update(pr.metrics)
    for key in MEAN_KEYS:
        for name in (key, key + "_null"):
            vals = [pr.metrics[f"pair_{pr.small}_{pr.large}.{name}"] for pr in pairs
                    if f"pair_{pr.small}_{pr.large}.{name}" in pr.metrics]
            if vals:
                metrics[f"mean.{name}"] = float(np.mean(vals))
    metrics.update(reference_metrics("splitting"))
    return {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}


def tree_document(config: SplittingConfig, sizes: tuple[int, ...], pairs: list[PairResult]) -> dict[str, Any]:
    """Nodes ``{id: "size:feature", size, feature, firings, class}`` for every feature in a link,
    edges parent → child (decoder cosine, containment, correlation as weights), across all sizes.
    Each larger feature has at most one parent (its best decoder match), so this is a forest."""
    firings = {pairs[0].small: pairs[0].firings_small}
    classes: dict[int, np.ndarray] = {}
    for pr in pairs:
        firings[pr.large] = pr.firings_large
        classes[pr.large] = pr.classes
    edges = [e for pr in pairs for e in pr.edges]
    ids = sorted({e["source"] for e in edges} | {e["target"] for e in edges},
                 key=lambda s: tuple(int(x) for x in s.split(":")))
    nodes = []
    for node in ids:
        size, feat = (int(x) for x in node.split(":"))
        cls = "base" if size == sizes[0] else CLASSES[int(classes[size][feat])]
        nodes.append({"id": node, "size": size, "feature": feat, "firings": int(firings[size][feat]), "class": cls})
    return {"format": TREE_FORMAT, "sizes": list(sizes), "config": asdict(config), "nodes": nodes, "edges": edges}


def run(config: SplittingConfig, inputs: SplittingInputs) -> AnalysisOutput:
    """Match, classify and build split families for every adjacent pair of sizes.

    Metrics: ``pair_<s>_<s'>.<name>`` and ``<name>_null`` beside it; ``mean.<name>`` averaged over
    the pairs that define it (span and union statistics are absent for a pair with no family:
    they are undefined, and JSON has no NaN); ``reference.leask2025_*``. Tables ``split_families``,
    ``matches`` (one row per larger feature and pair), ``children_per_parent``. With
    ``inputs.prefixes`` (a Matryoshka SAE), also the steps between its nested prefixes
    (``prefixes.py``): ``prefix_<a>_<b>.*``, ``prefix_mean.*`` and table ``prefix_classes``. Document
    ``split_tree``; figures ``splitting_matches`` and ``splitting_classes``; interactive
    ``split_tree`` (Plotly icicle).
    """
    from saeatlas.analysis.splitting.figures import classes_figure, icicle, match_figure

    inputs.validate()
    sizes = tuple(int(s) for s in inputs.sizes)
    rng = np.random.default_rng(config.null_seed)  # one stream for every pair's null, in pair order
    codes = {s: sparse.csr_matrix(inputs.codes[s]) for s in sizes}
    pairs = [_pair(config, s, t, np.asarray(inputs.decoders[s]), np.asarray(inputs.decoders[t]), codes[s],
                   codes[t], rng) for s, t in zip(sizes, sizes[1:])]

    doc = tree_document(config, sizes, pairs)
    children_table = [{"pair": f"{pr.small}->{pr.large}", "n_children": k, "families": v}
                      for pr in pairs for k, v in sorted(pr.children_counts.items())]
    metrics, tables = _metrics(pairs), {}
    if inputs.prefixes:  # inside the largest (Matryoshka) SAE; its own null stream: the pairs' stay as they were
        from saeatlas.analysis.splitting.prefixes import prefix_steps

        largest = sizes[-1]
        nested, tables["prefix_classes"] = prefix_steps(
            config, np.asarray(inputs.decoders[largest]), codes[largest],
            (*(int(m) for m in inputs.prefixes), largest), np.random.default_rng((config.null_seed, 1)))
        metrics.update(nested)
    return AnalysisOutput(
        metrics=metrics,
        tables={"split_families": [r for pr in pairs for r in pr.families],
                "matches": [r for pr in pairs for r in pr.matches],
                "children_per_parent": children_table, **tables},
        figures={"splitting_matches": match_figure(pairs, config), "splitting_classes": classes_figure(pairs)},
        interactive={"split_tree": icicle(doc, config.max_tree_roots)},
        documents={"split_tree": doc},
    )
