"""The lobes analysis, step by step (the methods are in the package docstring): count, keep the
features with evidence, cluster both ways, compare against the nulls, classify, and name the
lobes by corpus domain; then the same steps under the published protocol (document windows, an
activity threshold, k up to ``goc_max_k``, Li et al.'s classifier), under ``goc.``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from saeatlas.analysis.common.output import AnalysisOutput
from saeatlas.progress import bar
from saeatlas.analysis.common.threads import limit_threads
from saeatlas.analysis.lobes.ami import agreement_metrics, density_bins
from saeatlas.analysis.common.published import reference_metrics
from saeatlas.analysis.lobes.classifier import classifier_inputs, classifier_metrics, protocol_classifier_metrics
from saeatlas.analysis.lobes.config import SMALL_PROBLEM, LobesConfig
from saeatlas.analysis.lobes.cooccurrence import (
    CooccurrenceCounts,
    count_cooccurrence,
    document_windows,
    feature_max,
    iter_code_chunks,
    known_rows,
)
from saeatlas.analysis.lobes.domains import lobe_domains
from saeatlas.analysis.lobes.figures import ami_figure, domain_heatmap
from saeatlas.analysis.lobes.spectral import (
    affinity_inplace,
    angular_affinity,
    compact_square,
    kmeans_labels,
    spectral_embedding,
)


@dataclass
class LobesInputs:
    """Codes of the evaluation tokens (streamed), the decoder, and a domain per row.

    ``codes`` is one of: a ``scipy.sparse`` matrix [N, n_latents]; a ``SparseCodes`` store (anything
    with ``csr(start, stop)`` and ``n_tokens``: read ``chunk_rows`` rows at a time); or an iterable
    of CSR chunks [rows, n_latents] that are consecutive rows from row 0 (consumed once: then the
    published-protocol variant, which reads the codes again, cannot run).
    ``doc_ids``: the corpus document of every row (-1 at BOS), in corpus order; without it the
    published-protocol variant is not run.
    """

    codes: Any
    n_latents: int
    positions_per_context: int
    decoder: np.ndarray  # [n_latents, d]: decoder rows (any norm)
    row_domains: np.ndarray | None = None  # int [N]: index into domain_names; -1 = unknown
    domain_names: tuple[str, ...] = ()
    doc_ids: np.ndarray | None = None  # int [N]: document of each row, -1 = BOS

    def validate(self) -> None:
        if self.n_latents < 2:
            raise ValueError(f"n_latents must be >= 2, got {self.n_latents}")
        if self.positions_per_context < 1:
            raise ValueError(f"positions_per_context must be >= 1, got {self.positions_per_context}")
        dec = np.asarray(self.decoder)
        if dec.ndim != 2 or dec.shape[0] != self.n_latents:
            raise ValueError(f"decoder shape {dec.shape}, expected [{self.n_latents}, d]")
        if self.row_domains is not None:
            dom = np.asarray(self.row_domains)
            if dom.ndim != 1 or not np.issubdtype(dom.dtype, np.integer):
                raise ValueError("row_domains must be a 1-d integer array")
            if dom.size and (dom.min() < -1 or dom.max() >= len(self.domain_names)):
                raise ValueError(f"row_domains must lie in [-1, {len(self.domain_names)}): one index per "
                                 f"domain name {list(self.domain_names)}")
        n_rows = known_rows(self.codes)
        if n_rows is not None and self.row_domains is not None and len(self.row_domains) != n_rows:
            raise ValueError(f"row_domains has {len(self.row_domains)} rows, codes {n_rows}")
        if self.doc_ids is not None:
            if n_rows is None:
                raise ValueError("doc_ids were given with codes that can be read only once: the published-protocol "
                                 "variant reads the codes a second time (pass a matrix or a code store)")
            if len(self.doc_ids) != n_rows:
                raise ValueError(f"doc_ids has {len(self.doc_ids)} rows, codes {n_rows}")


@dataclass
class KResult:
    """One clustered k: the co-occurrence lobes and geometric clusters of the analysed features,
    and the ``k<k>.*`` metrics."""

    k: int
    lobes: np.ndarray
    geo: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)


def run(config: LobesConfig, inputs: LobesInputs) -> AnalysisOutput:
    """Count, cluster both ways, compare against the nulls, classify, and name the lobes by domain;
    then the published protocol beside it.

    Metrics: ``n_*`` (tokens, blocks, features kept and left out), ``cooc.*``, ``eig.*``; per
    clustered k: ``k<k>.ami`` with ``_null_mean/_null_sd/_z/_p`` (label-shuffle null) and
    ``ami_density_null_mean/_sd, ami_density_z/_p`` (density-matched null),
    ``k<k>.ami_lobes_vs_density`` / ``ami_geom_vs_density``, ``largest_lobe_fraction`` /
    ``largest_geom_fraction``; for k <= classifier_k_max ``k<k>.balanced_accuracy`` /
    ``balanced_accuracy_random`` / ``balanced_accuracy_chance``; for k <= domain_k_max
    ``k<k>.domain_enrichment_max`` beside ``_null_mean/_null_sd``; ``reference.li2024_*``; and,
    with ``doc_ids`` and ``goc_enabled``, the same under ``goc.`` for the published protocol
    (``goc.n_windows`` ..., ``goc.k<k>.ami`` ..., ``goc.k<k>.balanced_accuracy`` beside
    ``_random_mean/_sd/_z/_p``).
    Tables ``lobes_summary`` (one row per k), ``lobe_domain_enrichment`` (k, lobe, domain),
    ``lobe_assignments`` (one row per analysed feature), and ``lobes_protocol_summary`` /
    ``lobes_protocol_assignments`` the same for the protocol variant. Figure ``lobes_ami``
    (matplotlib); interactive ``lobes_domains`` (Plotly heatmap).
    """
    inputs.validate()
    rng_perm, rng_rand, rng_dom, rng_sub = (np.random.default_rng(s) for s in
                                            np.random.SeedSequence(config.seed).spawn(4))
    names = tuple(inputs.domain_names)
    counts = _count(config, inputs)  # 1-2: blocks, C = BᵀB
    keep, metrics, results = _estimate(config, inputs, counts, config.cluster_ks(), rng_perm, rng_rand,
                                       rng_sub)  # 3-7
    with limit_threads(1 if keep.size < SMALL_PROBLEM else None, torch_too=True):
        domains = lobe_domains([(r.k, r.lobes) for r in results], counts.domain_firings[keep], names,
                               config.domain_k_max, config.n_permutations, rng_dom)  # 8
    for r in results:
        r.metrics.update(domains.metrics.get(r.k, {}))
        metrics.update(r.metrics)
    metrics.update(reference_metrics("lobes"))
    metrics.update(_domain_shares(inputs, counts, keep, names))
    tables = {"lobes_summary": _summary_rows(results), "lobe_domain_enrichment": domains.rows,
              "lobe_assignments": _assignment_rows(results, counts, keep)}
    del counts
    if config.goc_enabled and inputs.doc_ids is not None:
        proto_metrics, proto_results, proto_keep = published_protocol(config, inputs)
        metrics.update(proto_metrics)
        tables["lobes_protocol_summary"] = _summary_rows(proto_results)
        tables["lobes_protocol_assignments"] = [
            {"feature": f, **{f"lobe_k{r.k}": int(r.lobes[i]) for r in proto_results},
             **{f"geom_k{r.k}": int(r.geo[i]) for r in proto_results}} for i, f in enumerate(proto_keep.tolist())]
    metrics = _finite_numbers(metrics)
    return AnalysisOutput(
        metrics=metrics, tables=tables,
        figures={"lobes_ami": ami_figure([r.k for r in results], metrics)},
        interactive={"lobes_domains": domain_heatmap(domains.ylabels, list(names), domains.z, domains.text)},
    )


def _estimate(config: LobesConfig, inputs: LobesInputs, counts: CooccurrenceCounts, cluster_ks: tuple[int, ...],
              rng_perm: np.random.Generator, rng_rand: np.random.Generator,
              rng_sub: np.random.Generator) -> tuple[np.ndarray, dict[str, float], list[KResult]]:
    """Steps 3-7 on one set of counts (ours or the protocol's): the features kept, the metrics so
    far (the per-k ones are in each result's ``metrics``) and one result per clustered k."""
    keep, metrics = _features_with_evidence(config, inputs, counts)  # dead, rare, always-on left out
    buf, keep = _cooccurrence_affinity(config, counts, keep, metrics)  # 3: affinity; isolated left out
    m = int(keep.size)
    metrics["n_analysed"] = m
    ks = [k for k in cluster_ks if k * config.min_features_per_cluster <= m]
    metrics["n_k_skipped"] = len(cluster_ks) - len(ks)
    with limit_threads(1 if m < SMALL_PROBLEM else None, torch_too=True):
        emb_c, eig_c = (spectral_embedding(buf, max(ks), tol=config.eig_tol, max_restarts=config.eig_max_restarts,
                                           seed=config.seed) if ks else (np.zeros((m, 0)), {}))  # 4
        del buf  # the last reference to the n x n counts: freed before the geometric affinity is built
        results = _cluster_and_compare(config, inputs, counts, emb_c, eig_c, keep, ks, metrics,
                                       rng_perm, rng_rand, rng_sub)  # 5-7
    return keep, metrics, results


def published_protocol(config: LobesConfig,
                       inputs: LobesInputs) -> tuple[dict[str, float], list[KResult], np.ndarray]:
    """The published protocol on our data, under ``goc.``: blocks are ``goc_window``-token windows
    of one document (``document_windows``), a feature fires above ``goc_threshold`` of its largest
    code, k runs over ``goc_k_values`` up to ``goc_max_k`` with ``goc_n_permutations`` shuffles,
    and the classifier is Li et al.'s (one 80/20 split, random unit vectors). Affinity, the
    features left out, the spectral clustering and the AMI are the same steps as ours. Returns the
    ``goc.*`` metrics, one result per clustered k and the analysed features."""
    assert inputs.doc_ids is not None
    rng_perm, rng_rand, rng_sub, rng_clf = (np.random.default_rng(s) for s in
                                            np.random.SeedSequence([config.seed, 1]).spawn(4))
    win = document_windows(np.asarray(inputs.doc_ids), config.goc_window, config.goc_keep_partial)
    thresholds = None
    if config.goc_threshold > 0:
        thresholds = config.goc_threshold * feature_max(iter_code_chunks(inputs.codes, config.chunk_rows),
                                                        inputs.n_latents)
    counts = _count(config, inputs, row_blocks=win.row_blocks, thresholds=thresholds)
    cfg = replace(config, k_values=config.goc_ks() or (2,), n_permutations=config.goc_n_permutations,
                  classifier_k_max=0, domain_k_max=1)
    keep, metrics, results = _estimate(cfg, inputs, counts, config.goc_ks(), rng_perm, rng_rand, rng_sub)
    metrics["n_k_skipped"] += len(set(config.goc_k_values)) - len(config.goc_ks())
    metrics.update({"window": config.goc_window, "threshold": config.goc_threshold, "n_windows": win.n_windows,
                    "n_documents": win.n_documents, "documents_with_window": win.documents_with_window,
                    "tokens_in_windows": win.rows_in_windows})
    metrics.pop("block_size_effective", None)
    dec = np.asarray(inputs.decoder, dtype=np.float32)[keep]
    sub = np.sort(rng_sub.choice(keep.size, size=min(keep.size, config.classifier_max_features), replace=False))
    for r in results:
        if r.k <= config.goc_classifier_k_max:
            r.metrics.update(protocol_classifier_metrics(r.k, dec[sub], r.lobes[sub], config.goc_train_fraction,
                                                         config.goc_random_trials, config.classifier_max_iter,
                                                         rng_clf))
        metrics.update(r.metrics)
    return {f"goc.{key}": val for key, val in metrics.items()}, results, keep


def _count(config: LobesConfig, inputs: LobesInputs, row_blocks: np.ndarray | None = None,
           thresholds: np.ndarray | None = None) -> CooccurrenceCounts:
    """Steps 1-2: one streamed pass over the codes, ``chunk_rows`` rows at a time (blocks of one
    context, or the given ``row_blocks``)."""
    n_rows_known = known_rows(inputs.codes)
    total_chunks = -(-n_rows_known // config.chunk_rows) if n_rows_known else None
    n_domains = len(inputs.domain_names) if inputs.row_domains is not None else 0
    return count_cooccurrence(iter_code_chunks(inputs.codes, config.chunk_rows), int(inputs.n_latents),
                              inputs.positions_per_context, config.block_size, inputs.row_domains, n_domains,
                              config.count_method, total_chunks, row_blocks=row_blocks, thresholds=thresholds)


def _features_with_evidence(config: LobesConfig, inputs: LobesInputs,
                            counts: CooccurrenceCounts) -> tuple[np.ndarray, dict[str, float]]:
    """The features that fire in at least ``min_blocks`` blocks but not in every block, and the
    first metrics (tokens, blocks, features left out, the counting pass's work)."""
    big_n = counts.n_blocks
    c = counts.block_counts
    dead = c == 0
    rare = (c > 0) & (c < config.min_blocks)
    always = (c == big_n) & (big_n > 0)
    keep = np.flatnonzero(~dead & ~rare & ~always)
    metrics: dict[str, float] = {
        "n_latents": int(inputs.n_latents), "n_tokens": counts.n_rows, "n_blocks": big_n,
        "block_size_effective": min(config.block_size, inputs.positions_per_context),
        "n_dead": int(dead.sum()), "n_rare": int(rare.sum()), "n_always_on": int(always.sum()),
        "cooc.pair_increments": counts.pair_increments,
        "cooc.dense_blocks": counts.dense_blocks, "cooc.sparse_blocks": counts.sparse_blocks,
    }
    return keep, metrics


def _cooccurrence_affinity(config: LobesConfig, counts: CooccurrenceCounts, keep: np.ndarray,
                           metrics: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Step 3: the kept features' counts turned into the affinity in place (no n x n copy), the
    isolated features (no positive affinity) dropped. Returns the affinity and the analysed
    features; takes the counts matrix out of ``counts``."""
    assert counts.counts is not None
    # The count matrix is symmetric and Fortran-ordered: its transpose is the same matrix, C-ordered.
    buf = compact_square(counts.counts.T, keep)
    counts.counts = None
    if keep.size:
        # off-diagonal pairs that co-occur at least once (every kept feature's diagonal is > 0)
        pairs = max(keep.size * (keep.size - 1), 1)
        metrics["cooc.nonzero_fraction"] = float(np.count_nonzero(buf) - keep.size) / pairs
    aff_stats = affinity_inplace(buf, counts.block_counts[keep], counts.n_blocks, config.affinity) if keep.size else {}
    if aff_stats:
        metrics["cooc.positive_affinity_fraction"] = aff_stats["positive_fraction"]
        if config.affinity == "phi":
            metrics["cooc.negative_phi_fraction"] = aff_stats["negative_fraction"]
    degree = buf.sum(axis=1, dtype=np.float64) if keep.size else np.zeros(0)
    connected = degree > 0
    metrics["n_isolated"] = int((~connected).sum())
    if not connected.all():
        buf = compact_square(buf, np.flatnonzero(connected))
        keep = keep[connected]
    return buf, keep


def _cluster_and_compare(config: LobesConfig, inputs: LobesInputs, counts: CooccurrenceCounts, emb_c: np.ndarray,
                         eig_c: dict[str, float], keep: np.ndarray, ks: list[int], metrics: dict[str, float],
                         rng_perm: np.random.Generator, rng_rand: np.random.Generator,
                         rng_sub: np.random.Generator) -> list[KResult]:
    """Steps 5-7 for every k, given the co-occurrence embedding ``emb_c``: the geometric
    embedding, k-means of both, AMI and its nulls, the classifier. Adds the eigen-solver
    metrics to ``metrics``."""
    if not ks:
        return []
    dec = np.asarray(inputs.decoder, dtype=np.float32)[keep]
    emb_g = _geometric_embedding(config, dec, max(ks), eig_c, metrics)
    bins = density_bins(counts.firings[keep], config.density_bins)
    metrics["density_bins_used"] = int(bins.max()) + 1
    sub, x_dec, x_rand = classifier_inputs(dec, config.classifier_max_features, rng_sub, rng_rand)
    results: list[KResult] = []
    for k in bar(ks, "lobes per k"):
        r = KResult(k, kmeans_labels(emb_c, k, config.kmeans_n_init, config.seed),
                    kmeans_labels(emb_g, k, config.kmeans_n_init, config.seed))
        r.metrics = agreement_metrics(k, r.lobes, r.geo, bins, config.n_permutations, rng_perm)
        if k <= config.classifier_k_max:
            r.metrics.update(classifier_metrics(k, x_dec, x_rand, r.lobes[sub], config.cv_folds, config.seed,
                                                config.classifier_max_iter))
        results.append(r)
    return results


def _geometric_embedding(config: LobesConfig, dec: np.ndarray, kmax: int, eig_c: dict[str, float],
                         metrics: dict[str, float]) -> np.ndarray:
    """Step 5: the spectral embedding of the angular affinity of the analysed decoder rows; adds
    ``eig.*`` of both embeddings to ``metrics``."""
    geo_aff = angular_affinity(dec)
    emb_g, eig_g = spectral_embedding(geo_aff, kmax, tol=config.eig_tol, max_restarts=config.eig_max_restarts,
                                      seed=config.seed)
    del geo_aff
    metrics["eig.components"] = kmax
    for name, info in (("cooc", eig_c), ("geom", eig_g)):
        for key, val in info.items():
            metrics[f"eig.{name}_{key}"] = val
    return emb_g


def _domain_shares(inputs: LobesInputs, counts: CooccurrenceCounts, keep: np.ndarray,
                   names: tuple[str, ...]) -> dict[str, float]:
    """``domain.<name>.token_share`` and ``firing_share`` (of the analysed features' firings)."""
    out: dict[str, float] = {}
    if inputs.row_domains is not None and counts.domain_rows.sum():
        tok = counts.domain_rows / counts.domain_rows.sum()
        fir = counts.domain_firings[keep].sum(0) / max(counts.domain_firings[keep].sum(), 1)
        for g, name in enumerate(names):
            out[f"domain.{name}.token_share"] = float(tok[g])
            out[f"domain.{name}.firing_share"] = float(fir[g])
    return out


def _finite_numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """Integers stay integers, the rest become floats; non-finite values are dropped."""
    metrics = {k: (float(v) if not isinstance(v, (int, np.integer)) else int(v)) for k, v in metrics.items()}
    return {k: v for k, v in metrics.items() if not (isinstance(v, float) and not math.isfinite(v))}


def _summary_rows(results: list[KResult]) -> list[dict[str, Any]]:
    return [{"k": r.k, **{key.split(".", 1)[1]: val for key, val in r.metrics.items()}} for r in results]


def _assignment_rows(results: list[KResult], counts: CooccurrenceCounts, keep: np.ndarray) -> list[dict[str, Any]]:
    return [{"feature": int(f), "firings": int(counts.firings[f]), "blocks": int(counts.block_counts[f]),
             **{f"lobe_k{r.k}": int(r.lobes[i]) for r in results},
             **{f"geom_k{r.k}": int(r.geo[i]) for r in results}} for i, f in enumerate(keep)]
