"""Settings of the lobes analysis (params.yaml section ``lobes:``); the schema section is
generated from these fields."""

from __future__ import annotations

from dataclasses import dataclass

from saeatlas.analysis.common.config import AnalysisConfig, count, param, seed

AFFINITIES = ("phi", "jaccard", "dice")
COUNT_METHODS = ("auto", "dense", "sparse")

# Below this many features every step runs on one thread: on small operands BLAS/OpenMP threads
# cost more in hand-offs than they save, and on a busy 2-core machine far more (seen: a 240 x 240
# eigh in 0.02 s on one thread, 0.7 s on two contended ones).
SMALL_PROBLEM = 4096


@dataclass(frozen=True)
class LobesConfig(AnalysisConfig, section="lobes",
                        summary="Co-occurrence lobes vs geometric clusters, against a permutation and a "
                        "density-matched null (analysis/lobes/)."):
    """Settings of the lobes analysis (params.yaml section ``lobes:``)."""

    # Consecutive positions of one context that make a block (the paper: 256 tokens). Our contexts
    # are 128 positions, and blocks never cross a context, so 128 = one block per context.
    block_size: int = count(128, "Tokens per co-occurrence block (blocks never cross a context).")
    # Numbers of clusters. The paper's AMI rises up to ~128-256 clusters; a k with fewer than
    # min_features_per_cluster analysed features per cluster is skipped (counted in n_k_skipped).
    k_values: tuple[int, ...] = param((2, 4, 8, 16, 32, 64, 128, 256), "Numbers of lobes (clusters) to compare.",
                                      items={"minimum": 2}, minItems=1)
    # Co-occurrence affinity: "phi" (the paper's), "jaccard" or "dice".
    affinity: str = param("phi", "Co-occurrence affinity.", enum=list(AFFINITIES))
    # Features firing in fewer blocks are left out ("rare"): phi from < 5 blocks is noise.
    min_blocks: int = count(5, "Features firing in fewer blocks are left out (and counted).")
    # At least this many analysed features per cluster on average for a k to be run.
    min_features_per_cluster: int = param(4, "A k is skipped when it would leave fewer features per cluster.",
                                          minimum=1)
    # Label shuffles per null (p-values resolve down to 1/1001).
    n_permutations: int = count(1000, "Permutations of each null.")
    # Quantile bins of log firing density for the density-matched null.
    density_bins: int = count(10, "Density bins of the density-matched null.")
    # Stratified folds of the lobe classifier (5 = the paper's 80/20 split, every feature tested).
    cv_folds: int = param(5, "Cross-validation folds of the lobe classifier.", minimum=2)
    # The classifier is fitted for k <= classifier_k_max: a multinomial fit costs ∝ k and more
    # iterations (at n = 18432 the 10 fits of k = 32 took 125 s, of k = 16 16 s), and the paper's
    # headline number is at k = 2.
    classifier_k_max: int = param(16, "Largest k for which the classifier is fitted (below 2: none).", minimum=0)
    # Features used by the classifier at most (seeded subsample; accuracy ±~0.007 at 5000).
    classifier_max_features: int = param(5000, "Features subsampled for the classifier (at least 2 * cv_folds).",
                                         minimum=10)
    classifier_max_iter: int = count(200, "Iterations of the logistic regression.")
    # k-means restarts per clustering (sklearn SpectralClustering's default is 10).
    kmeans_n_init: int = count(4, "k-means restarts on the spectral embedding.")
    # Lobe x domain enrichment for k = 2 .. domain_k_max (these k are clustered even if absent
    # from k_values).
    domain_k_max: int = param(4, "Lobes are named by corpus domain for k up to this (1: no domain table).",
                              minimum=1)
    # Seed of k-means, the shuffles, the folds, the random vectors and the eigen solver.
    seed: int = seed(0, "Seed of the nulls, k-means and the classifier.")
    # Code rows per streamed chunk: [8192, 18432] CSR of 32 codes per row is ~3 MB.
    chunk_rows: int = count(8192, "Code rows per streamed chunk.")
    # "auto" picks per chunk by the cost model (cooccurrence.py); "dense" / "sparse" force one product.
    count_method: str = param("auto", "How block products are computed (auto picks by density).",
                              enum=list(COUNT_METHODS))
    # Largest eigenpair residual ‖Mv − λv‖ accepted from the block Krylov solver, relative to |λ₂|
    # (λ₁ = 1 is the trivial constant vector; λ₂ sets the scale of the structure: ~0.09 for phi and
    # ~0.0015 for the angular affinity of a random decoder at n = 18432). eig.*_max_residual and
    # eig.*_relative_residual report what was reached.
    eig_tol: float = param(1e-2, "Relative residual tolerance of the eigenvectors.", exclusiveMinimum=0)
    eig_max_restarts: int = count(30, "Restarts of the block Krylov eigen-solver.")

    # --- The published protocol (Li et al. 2024 and their released code), computed beside ours
    # with its metrics under ``goc.``; needs each row's document id (the stage passes the store's).
    goc_enabled: bool = param(True, "Also run the published protocol (document windows, threshold, k up to "
                              "goc_max_k), metrics under goc.*.")
    # Tokens per window. Windows run across our 127-token contexts but never across a document.
    goc_window: int = count(256, "Tokens per window of one document (the paper: 256).")
    # Their script drops a document's last, shorter window; true keeps it (more text, mixed lengths).
    goc_keep_partial: bool = param(False, "Keep each document's last, shorter window.")
    # Fires = code > goc_threshold x the feature's largest code on these tokens. The paper's
    # "activation > 1" is on Gemma Scope's raw scale and has no counterpart on TopK codes in our
    # normalised units; relative to each feature's maximum it means the same for every feature.
    # 0 = any firing (a TopK code is > 0 only when the feature is selected).
    goc_threshold: float = param(0.0, "A feature fires where its code exceeds this fraction of its largest code.",
                                 minimum=0, exclusiveMaximum=1)
    goc_k_values: tuple[int, ...] = param((2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
                                          "Numbers of clusters of the protocol variant (the paper: 2 .. 1024).",
                                          items={"minimum": 2}, minItems=1)
    # Eigenvectors and k-means cost grow with k: k above this is skipped (goc.n_k_skipped). 1024
    # eigenvectors of an 18432 x 18432 affinity are not affordable on 2 cores (see README).
    goc_max_k: int = param(256, "Largest k clustered by the protocol variant.", minimum=2)
    goc_n_permutations: int = count(100, "Label permutations of the protocol variant's AMI null (the paper: 100).")
    # Their classifier: one 80/20 split, plain logistic regression, against random unit vectors.
    goc_classifier_k_max: int = param(2, "Largest k for the protocol's 80/20 classifier (below 2: none).", minimum=0)
    goc_random_trials: int = param(100, "Sets of random unit vectors of the protocol's classifier baseline.",
                                   minimum=1)
    goc_train_fraction: float = param(0.8, "Training share of the protocol's single split.", exclusiveMinimum=0,
                                      exclusiveMaximum=1)

    def goc_ks(self) -> tuple[int, ...]:
        """The protocol variant's k values within ``goc_max_k``."""
        return tuple(sorted(k for k in set(self.goc_k_values) if k <= self.goc_max_k))

    def check(self) -> None:
        if self.classifier_max_features < 2 * self.cv_folds:
            raise ValueError("lobes.classifier_max_features must be >= 2 * lobes.cv_folds, got "
                             f"{self.classifier_max_features} with cv_folds {self.cv_folds}")

    def cluster_ks(self) -> tuple[int, ...]:
        """Every k clustered: ``k_values`` and 2 .. ``domain_k_max``."""
        return tuple(sorted(set(self.k_values) | set(range(2, self.domain_k_max + 1))))
