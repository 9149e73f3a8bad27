"""The ``scaling`` computation: ``run(config, inputs)``, which measures every size's alive and dead
latents and firing densities, fits their power laws in the dictionary size with a bootstrap over
evaluation contexts, and runs the feature-completeness experiment (``completeness.py``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from saeatlas.analysis.common.output import AnalysisOutput
from saeatlas.analysis.common.published import reference_metrics
from saeatlas.progress import bar
from saeatlas.analysis.common.stats import PowerLawFit, fit_power_law
from saeatlas.analysis.scaling.completeness import Completeness, Judgement, completeness, judge_concepts, num
from saeatlas.analysis.scaling.concepts import TokenizedConcept, WordBoundaries
from saeatlas.analysis.scaling.config import ScalingConfig
from saeatlas.analysis.scaling.figures import (figure_completeness, figure_densities, figure_power_law,
                                               plotly_completeness)
from saeatlas.analysis.scaling.firing import SizeStats, bootstrap_size_stats, size_stats
from saeatlas.analysis.scaling.matching import Occurrences, count_occurrences, find_occurrences

POWER_LAW_QUANTITIES = ("alive", "dead", "median_density")


@dataclass
class ScalingInputs:
    """Everything ``run`` needs, as plain arrays (the stage loads them; tests build them)."""

    sizes: tuple[int, ...]
    codes: dict[int, Any]  # size -> scipy CSR [N, size], same N evaluation rows for every size
    positions_per_context: int  # P: row r is evaluation context r // P
    eval_tokens: np.ndarray  # int [N]: the token at each code row
    train_contexts: np.ndarray  # int [n_ctx, T]: the SAE training split, for concept frequencies
    concepts: list[TokenizedConcept] = field(default_factory=list)
    train_has_bos: bool = True  # column 0 of train_contexts is BOS (not text: not counted)
    boundaries: WordBoundaries | None = None  # word-glue masks; None = no boundary check


def _validate(inputs: ScalingInputs) -> None:
    N = len(inputs.eval_tokens)
    P = inputs.positions_per_context
    if not inputs.sizes:
        raise ValueError("scaling: no dictionary sizes")
    if P < 1 or N % P:
        raise ValueError(f"scaling: {N} evaluation rows are not whole contexts of {P} positions")
    for n in inputs.sizes:
        if n not in inputs.codes:
            raise ValueError(f"scaling: no codes for size {n}")
        shape = inputs.codes[n].shape
        if shape != (N, n):
            raise ValueError(f"scaling: codes of size {n} have shape {shape}, expected {(N, n)}")
    if np.asarray(inputs.train_contexts).ndim != 2:
        raise ValueError("scaling: train_contexts must be 2-D [n_contexts, T]")


def run(config: ScalingConfig, inputs: ScalingInputs) -> AnalysisOutput:
    """Stage ``scaling``: alive/dead/density per size with power-law fits, and feature completeness."""
    _validate(inputs)
    sizes = tuple(sorted(int(n) for n in inputs.sizes))
    P = int(inputs.positions_per_context)
    N = len(inputs.eval_tokens)
    seeds = np.random.SeedSequence(config.seed).spawn(2)
    rng_ctx, rng_concepts = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])

    # concept occurrences (size-independent): counts in the training split, places in the evaluation rows
    # (frequency = both counts over both token counts, in ``completeness``)
    concepts = list(inputs.concepts)
    train = count_occurrences(concepts, inputs.train_contexts, inputs.boundaries,
                              skip_first_column=inputs.train_has_bos)
    occ = find_occurrences(concepts, np.asarray(inputs.eval_tokens), P, inputs.boundaries)

    # one pass per size: firing counts, per-context counts, judgements
    per_size, judgements, row_active = _measure_sizes(config, inputs, sizes, occ)
    n_eval = int(row_active.sum())  # rows the SAEs were applied to (outlier rows carry no code)
    if n_eval == 0:
        raise ValueError("scaling: no evaluation row has an active latent in any size")

    # (a) alive, dead, densities, and their power laws in n (CIs: bootstrap over contexts)
    tokens_per_context = np.bincount(np.arange(N) // P, weights=row_active.astype(np.float64), minlength=N // P)
    boot = bootstrap_size_stats(per_size, tokens_per_context, config.n_bootstrap, rng_ctx)
    alive = np.array([int((st.fires > 0).sum()) for st in per_size])
    dead = np.array(sizes) - alive
    med_density = np.array([np.median(st.fires[st.fires > 0]) / n_eval if a else np.nan
                            for st, a in zip(per_size, alive)])
    metrics: dict[str, float] = {"evaluated_tokens": n_eval,
                                 "density_floor_log10": math.log10(1.0 / n_eval)}  # one firing on the set
    edges = _density_edges(n_eval, config.density_bin_width)
    tables = _size_tables(metrics, sizes, per_size, alive, dead, boot, n_eval, edges)
    power_fits, tables["power_law_fits"], notes = _power_laws(
        metrics, sizes, {"alive": alive, "dead": dead, "median_density": med_density}, boot, config.ci_level)

    # (b) feature completeness
    comp = completeness(config, concepts, train, occ, N, sizes, alive, judgements, inputs.boundaries is not None,
                        rng_concepts)
    metrics.update(comp.metrics)
    metrics.update(reference_metrics("scaling"))  # SM's dead fractions and 50% point beside ours
    tables.update(comp.tables)
    notes += comp.notes

    documents = {"scaling_summary": _summary_document(config, sizes, n_eval, alive, dead, power_fits, comp, notes)}
    figures = {"alive_power_law": figure_power_law(sizes, alive, dead, power_fits),
               "density_distribution": figure_densities(sizes, per_size, n_eval, edges)}
    if comp.names:
        figures["completeness_curves"] = figure_completeness(sizes, comp.xs, comp.us, comp.ys, comp.shared,
                                                             comp.collapse)
    interactive = {"completeness": plotly_completeness(sizes, comp.xs, comp.ys, comp.names, comp.shared)}
    return AnalysisOutput(metrics=metrics, tables=tables, figures=figures, interactive=interactive,
                          documents=documents)


def _measure_sizes(config: ScalingConfig, inputs: ScalingInputs, sizes: Sequence[int],
                   occ: Occurrences) -> tuple[list[SizeStats], dict[int, Judgement], np.ndarray]:
    """Per size: firing statistics and the concept judgements; and the rows active in any size."""
    per_size: list[SizeStats] = []
    judgements: dict[int, Judgement] = {}
    row_active = np.zeros(len(inputs.eval_tokens), dtype=bool)
    for n in bar(sizes, desc="scaling: sizes", leave=True):
        st, b = size_stats(n, inputs.codes[n], int(inputs.positions_per_context))
        per_size.append(st)
        row_active |= st.row_active
        judgements[n] = judge_concepts(b, occ, config.precision_threshold, config.recall_threshold, st.fires)
        del b
    return per_size, judgements, row_active


def _density_edges(n_eval: int, width: float) -> np.ndarray:
    """Bin edges of the log10-density histograms: from the bin holding one firing up to 0."""
    lo_edge = math.floor(math.log10(1.0 / n_eval) / width) * width
    return np.arange(lo_edge, width / 2 + 1e-9, width)


def _size_tables(metrics: dict[str, float], sizes: Sequence[int], per_size: Sequence[SizeStats], alive: np.ndarray,
                 dead: np.ndarray, boot: Mapping[str, np.ndarray], n_eval: int,
                 edges: np.ndarray) -> dict[str, list[dict[str, Any]]]:
    """Per size: alive, dead and the density quantiles (table ``sizes`` and metrics ``n<size>.*``),
    and the log10-density histogram (table ``density_histogram``)."""
    size_rows, hist_rows = [], []
    for si, (n, st) in enumerate(zip(sizes, per_size)):
        logd = np.log10(st.fires[st.fires > 0] / n_eval)
        q = np.percentile(logd, [10, 50, 90]) if len(logd) else [None] * 3
        row = {"size": n, "alive": int(alive[si]), "dead": int(dead[si]), "dead_fraction": float(dead[si] / n),
               "median_log10_density": num(q[1]), "log10_density_p10": num(q[0]),
               "log10_density_p90": num(q[2]), "mean_density_alive": num(st.fires.sum() / n_eval / max(alive[si], 1)),
               "alive_bootstrap_sd": num(boot["alive"][:, si].std(ddof=1)) if len(boot["alive"]) > 1 else None,
               "alive_bootstrap_median": num(np.median(boot["alive"][:, si])) if len(boot["alive"]) else None}
        size_rows.append(row)
        key = f"n{n}"
        metrics[f"{key}.alive"] = int(alive[si])
        metrics[f"{key}.dead"] = int(dead[si])
        metrics[f"{key}.dead_fraction"] = float(dead[si] / n)
        for name in ("median_log10_density", "log10_density_p10", "log10_density_p90", "alive_bootstrap_sd"):
            if row[name] is not None:
                metrics[f"{key}.{name}"] = row[name]
        counts, _ = np.histogram(logd, bins=edges)
        hist_rows += [{"size": n, "log10_density_low": float(a), "log10_density_high": float(b), "latents": int(c)}
                      for a, b, c in zip(edges[:-1], edges[1:], counts)]
    return {"sizes": size_rows, "density_histogram": hist_rows}


def _power_laws(metrics: dict[str, float], sizes: Sequence[int], values: Mapping[str, np.ndarray],
                boot: Mapping[str, np.ndarray],
                ci_level: float) -> tuple[dict[str, PowerLawFit], list[dict[str, Any]], list[str]]:
    """v(n) = C n^alpha for the alive count, the dead count and the median density; the bootstrap
    replicates of each (dead = n - alive on the same resample) give the CI of alpha."""
    boot_values = {"alive": boot["alive"], "dead": np.array(sizes)[None, :] - boot["alive"],
                   "median_density": boot["median_density"]}
    power_fits = {q: fit_power_law(q, sizes, values[q], boot_values[q], ci_level) for q in POWER_LAW_QUANTITIES}
    fit_rows, notes = [], []
    for q, fit in power_fits.items():
        prefix = f"{q}_power_law"
        metrics[f"{prefix}.estimated"] = int(fit.estimated)
        if fit.estimated:
            metrics[f"{prefix}.exponent"] = fit.exponent
            metrics[f"{prefix}.prefactor"] = fit.prefactor
            metrics[f"{prefix}.r2"] = fit.r2
            if fit.se_fit is not None:
                metrics[f"{prefix}.exponent_se_fit"] = fit.se_fit
            if fit.ci_low is not None:
                metrics[f"{prefix}.exponent_ci_low"] = fit.ci_low
                metrics[f"{prefix}.exponent_ci_high"] = fit.ci_high
                metrics[f"{prefix}.bootstrap_shift"] = fit.bootstrap_shift
        else:
            notes.append(f"{q} power law not fitted: {fit.reason}")
        fit_rows.append({"quantity": q, "estimated": int(fit.estimated), "exponent": num(fit.exponent),
                         "prefactor": num(fit.prefactor), "r2": num(fit.r2), "se_fit": num(fit.se_fit),
                         "ci_low": num(fit.ci_low), "ci_high": num(fit.ci_high),
                         "percentile_low": num(fit.percentile_low), "percentile_high": num(fit.percentile_high),
                         "bootstrap_sd": num(fit.bootstrap_sd), "bootstrap_shift": num(fit.bootstrap_shift),
                         "bootstrap_used": fit.bootstrap_used, "reason": fit.reason})
    return power_fits, fit_rows, notes


def _summary_document(config: ScalingConfig, sizes: Sequence[int], n_eval: int, alive: np.ndarray, dead: np.ndarray,
                      power_fits: Mapping[str, PowerLawFit], comp: Completeness, notes: list[str]) -> dict[str, Any]:
    """``scaling_summary.json``: the headline numbers, the notes on what was not estimated, and
    the methods in words."""
    return {
        "sizes": list(sizes), "evaluated_tokens": n_eval,
        "alive": alive.tolist(), "dead": dead.tolist(),
        "power_laws": {q: {k: (num(v) if not isinstance(v, str) else v) for k, v in vars(f).items()}
                       for q, f in power_fits.items()},
        "completeness": comp.summary,
        "notes": notes,
        "methods": {
            "alive": "a latent is alive if it fires (activation > 0) on at least one evaluated row",
            "evaluated_rows": "rows with >= 1 active latent in some size (outlier rows carry no code)",
            "power_law_ci": "bootstrap over evaluation contexts (same resample for all sizes); "
                            "CI = estimate -+ z sd(bootstrap); bootstrap_shift = median(bootstrap) - estimate",
            "concept_feature": (f"exists iff some latent has precision >= {config.precision_threshold} "
                                f"(share of its firing tokens that are concept tokens) and recall >= "
                                f"{config.recall_threshold} (share of the concept's occurrences it fires on)"),
            "frequency": "occurrences in the training split and the evaluation tokens over both token counts",
            "exclusion": f"concepts with < {config.min_eval_occurrences} evaluation occurrences",
            "concepts": "shipped lists (" + ", ".join(config.categories) + f") and up to {config.words_per_band} "
                        "whole words of the training split per frequency band (category 'words')",
            "logistic": "Firth-penalised logistic regression of exists on x = log10(frequency x alive), pooled",
            "x50_ci": "percentile bootstrap over concepts (cluster: all sizes of a concept together)",
            "collapse": "penalised LR test: per-size curves vs one curve in x (and vs one in log10 frequency); "
                        "SD of per-size 50% points in x and in log10 frequency",
        },
    }
