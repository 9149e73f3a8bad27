"""Functional "lobes": do features that fire together also point the same way?

The intermediate ("brain") scale of Li, Michaud, Baek, Engels, Sun & Tegmark, *The Geometry of
Concepts: Sparse Autoencoder Feature Structure* (arXiv 2410.19750; Entropy 27(4):344, 2025).

What the paper does (Gemma-2-2B, Gemma Scope residual SAE at layer 12). Confirmed in the text
available to us: co-occurrence clusters are found by spectral clustering of an affinity built from
co-occurrence counts, the phi coefficient being the affinity used (an appendix compares several
co-occurrence measures); geometric clusters are found the same way from an affinity computed from
the cosine similarity of decoder vectors; agreement is the adjusted mutual information (AMI,
scikit-learn) between the two labelings; and a logistic regression predicts a feature's
co-occurrence lobe from its decoder vector (80/20 train/test split, balanced test accuracy),
compared with random vectors. From our recollection of the paper, not re-checked against its text:
features co-occur when both fire within the same block of 256 tokens of Pile documents, and the
co-occurrence measures compared were simple matching, Jaccard, Dice, overlap and phi. Published
numbers (read from their figures, approximate): lobe AMI ~0.06 at 2 clusters rising to ~0.23 near
128-256 clusters; balanced accuracy ~0.85 at 2 lobes against ~0.50 for random vectors. They are in
the metrics as ``reference.li2024_*``.

Our estimator, step by step (the formula is next to the code of each step):

1. **Blocks.** Row ``r`` of the code store is position ``r mod P`` of context ``r div P``
   (``P = positions_per_context``). A block is ``block_size`` consecutive positions of one context;
   blocks never cross a context (the last block of a context may be shorter), so a block is at most
   one 128-token context here: the closest we can get to the paper's 256 tokens.
2. **Counting, streamed.** Per chunk of rows: the binary block x feature matrix ``B`` (``B[b, i] = 1``
   iff feature ``i`` fires on some row of block ``b``) is built *sparse* from the TopK codes, and
   ``C += BᵀB`` (``C[i, j]`` = blocks where both fire; ``C[i, i] = c_i``, the blocks where ``i``
   fires). ``C`` is n x n whatever the token count, so memory does not grow with tokens. At
   n = 18432 dense ``C`` is 1.36 GB (float32): accepted on this 23 GB machine (the whole analysis
   peaks at ~2.8 GB). Sparse would not be smaller at our token counts: a sparse entry costs 8 bytes
   against 4, and measured on synthetic TopK codes ``C`` is 43% full at 50k tokens (CSR 1.17 GB),
   65% at 200k (1.76 GB); the default study's 100k evaluation tokens sit between (CSR ≈ 1.5 GB,
   and a sparse accumulation is ~12x slower per increment at 128-position blocks, see below). float32 holds integer
   counts exactly up to 2²⁴ = 16.7M blocks (beyond that ``C`` is switched to float64). The product
   is done one of two ways, chosen per chunk by cost: a dense ``syrk`` on the densified chunk
   (``m·n²`` multiply-adds for ``m`` blocks, at BLAS speed, upper triangle only) or a sparse
   ``BᵀB`` (``Σ_b u_b²`` increments for ``u_b`` features in block ``b``, at sparse speed).
3. **Affinity** between features, from ``N`` blocks, ``c_i``, ``c_ij = C[i, j]``:
   phi ``= (N c_ij − c_i c_j) / √(c_i (N − c_i) c_j (N − c_j))`` (default), Jaccard
   ``= c_ij / (c_i + c_j − c_ij)``, Dice ``= 2 c_ij / (c_i + c_j)``. Negative phi (a pair that
   avoids each other) is clipped to 0: spectral clustering needs a non-negative affinity, and
   avoidance is no evidence of belonging together. The diagonal is 0 (as scipy's normalised
   Laplacian, which sklearn uses, ignores it).
   Features left out, each counted in the metrics: *dead* (fire in no block), *rare* (fewer than
   ``min_blocks`` blocks: their affinities are noise), *always on* (every block: phi is 0/0) and
   *isolated* (no positive affinity with any analysed feature: no graph edge to cluster on).
4. **Spectral clustering**, as sklearn's ``SpectralClustering(affinity="precomputed")``: the
   embedding of ``k`` clusters is the ``k`` eigenvectors of the largest eigenvalues of
   ``M = D^{-1/2} A D^{-1/2}`` (the smallest of the normalised Laplacian ``I − M``), each entry
   divided by ``√d_i``, then k-means on those ``k`` columns. We compute the ``K = max k``
   leading eigenvectors once and cluster each ``k`` on the first ``k`` columns. This is the same
   embedding sklearn builds for that ``k``: the eigenvectors are ordered by eigenvalue and an
   eigenvector does not depend on how many others are requested, so the first ``k`` of ``K`` are
   the ``k`` sklearn asks ARPACK for, up to each column's sign (k-means distances do not see
   signs) and a rotation inside an eigenvalue that is repeated exactly at the cut (where sklearn's
   own answer is arbitrary as well). The k-means step is sklearn's ``KMeans``. The eigenvectors come
   from a block Krylov method (``top_eigenpairs``: GEMM-based, restarted until every residual
   ``‖Mv − λv‖`` is below ``eig_tol·|λ₂|``; the achieved residual is a metric): ARPACK's one-vector
   Lanczos (what sklearn calls) reads the whole matrix once per matrix-vector product; measured here
   at n = 4608 for 128 eigenvectors: 40-60 s for scipy's ``eigsh``, 9 s for the block method.
   Tests check the embedding and the labels against sklearn's on small inputs.
5. **Geometric clusters**: the same spectral clustering of the decoder directions with the angular
   similarity ``1 − arccos(cos θ_ij) / π`` (in [0, 1]; cosine itself would give negative weights).
6. **Agreement**: AMI (sklearn's, arithmetic normalisation) between co-occurrence lobes and
   geometric clusters, for every ``k``, against two nulls in which the geometric labels are
   shuffled ``n_permutations`` times (seeded): (a) among all analysed features; (b) only among
   features of similar firing density (``density_bins`` quantile bins of log token firings),
   because density shapes both co-occurrence (frequent features co-occur with everything) and
   geometry. Each null gives mean, sd, ``z = (AMI − mean) / sd`` and
   ``p = (1 + #{null ≥ AMI}) / (1 + n_permutations)``. A shuffle keeps both labelings' cluster
   sizes, so the expected MI term of AMI is the same for every shuffle: it is computed once
   (``expected_mutual_information``, tested equal to sklearn) and each shuffle costs one O(n)
   contingency table. The AMI of each labeling with the density bins is reported too.
7. **Logistic regression** predicting a feature's lobe from its unit decoder vector (×√d):
   out-of-fold predictions of stratified ``cv_folds``-fold cross-validation (every feature tested
   once; 5 folds is the paper's 80/20 split, repeated), balanced accuracy, beside the same with
   random Gaussian vectors in place of decoder rows (the chance level of this classifier on this
   data, ~1/k). ``classifier_max_features`` features at most (a seeded subsample: the accuracy is
   then known to about ±1/√(4·5000) = ±0.007, and the fits ~3x cheaper at n = 18432).
8. **What the lobes are**: for ``k = 2 .. domain_k_max``, per lobe ``l`` and corpus domain ``g``:
   ``share_lg`` = firings of the lobe's features on rows of domain ``g`` / all firings of the
   lobe's features; ``base_g`` = the same over all analysed features (≈ the token share of ``g``:
   every row has k firings); ``enrichment = share / base``. Null: lobe labels shuffled among the
   analysed features (mean, sd, z per cell; and the null distribution of the largest cell).
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from scipy import sparse
from scipy.special import gammaln
from tqdm import tqdm

from saeatlas.analysis.config import config_from_section
from saeatlas.analysis.output import AnalysisOutput

AFFINITIES = ("phi", "jaccard", "dice")
COUNT_METHODS = ("auto", "dense", "sparse")

# Published reference (Li et al. 2024, Gemma-2-2B, Gemma Scope layer 12; read from their figures).
LI2024_AMI_K2 = 0.06
LI2024_AMI_K128_256 = 0.23
LI2024_BALANCED_ACCURACY_K2 = 0.85
LI2024_BALANCED_ACCURACY_RANDOM_K2 = 0.50

# float32 adds integers exactly up to 2^24; more blocks than that and C switches to float64.
EXACT_FLOAT32 = 2 ** 24
# Cost model of the two products (measured on this machine's 2 cores, n = 18432): syrk does
# ~1.5e10 multiply-adds/s on a densified chunk; scipy's sparse BᵀB 4e6-1.5e7 increments/s (more
# for fuller blocks). Equal at u/n = √(1e7 / 3e10) ≈ 1.8%: ~300 firing latents per block at
# n = 18432 (blocks of 128 positions have ~1500: dense; blocks of 2 have ~60: sparse).
DENSE_MADDS_PER_S = 1.5e10
SPARSE_INCREMENTS_PER_S = 1e7
# Rows of a densified block chunk per syrk call: [256, 18432] float32 = 19 MB.
DENSE_BATCH = 256
# Pair increments per sparse product: its COO temporaries are ~20 bytes per increment (100 MB).
SPARSE_BATCH = 5_000_000
# Below this many features every step runs on one thread: on small operands BLAS/OpenMP threads
# cost more in hand-offs than they save, and on a busy 2-core machine far more (seen: a 240 x 240
# eigh in 0.02 s on one thread, 0.7 s on two contended ones).
SMALL_PROBLEM = 4096


@contextmanager
def _threads(single: bool) -> Iterator[None]:
    """Limit torch, BLAS and OpenMP to one thread inside the block when ``single``."""
    if not single:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(prev)


@dataclass(frozen=True)
class LobesConfig:
    """Settings of the lobes analysis (params.yaml section ``lobes:``)."""

    # Consecutive positions of one context that make a block (the paper: 256 tokens). Our contexts
    # are 128 positions, and blocks never cross a context, so 128 = one block per context.
    block_size: int = 128
    # Numbers of clusters. The paper's AMI rises up to ~128-256 clusters; a k with fewer than
    # min_features_per_cluster analysed features per cluster is skipped (counted in n_k_skipped).
    k_values: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256)
    # Co-occurrence affinity: "phi" (the paper's), "jaccard" or "dice".
    affinity: str = "phi"
    # Features firing in fewer blocks are left out ("rare"): phi from < 5 blocks is noise.
    min_blocks: int = 5
    # At least this many analysed features per cluster on average for a k to be run.
    min_features_per_cluster: int = 4
    # Label shuffles per null (p-values resolve down to 1/1001).
    n_permutations: int = 1000
    # Quantile bins of log firing density for the density-matched null.
    density_bins: int = 10
    # Stratified folds of the lobe classifier (5 = the paper's 80/20 split, every feature tested).
    cv_folds: int = 5
    # The classifier is fitted for k <= classifier_k_max: a multinomial fit costs ∝ k and more
    # iterations (at n = 18432 the 10 fits of k = 32 took 125 s, of k = 16 16 s), and the paper's
    # headline number is at k = 2.
    classifier_k_max: int = 16
    # Features used by the classifier at most (seeded subsample; accuracy ±~0.007 at 5000).
    classifier_max_features: int = 5000
    classifier_max_iter: int = 200
    # k-means restarts per clustering (sklearn SpectralClustering's default is 10).
    kmeans_n_init: int = 4
    # Lobe x domain enrichment for k = 2 .. domain_k_max (these k are clustered even if absent
    # from k_values).
    domain_k_max: int = 4
    # Seed of k-means, the shuffles, the folds, the random vectors and the eigen solver.
    seed: int = 0
    # Code rows per streamed chunk: [8192, 18432] CSR of 32 codes per row is ~3 MB.
    chunk_rows: int = 8192
    # "auto" picks per chunk by the cost model above; "dense" / "sparse" force one product.
    count_method: str = "auto"
    # Largest eigenpair residual ‖Mv − λv‖ accepted from the block Krylov solver, relative to |λ₂|
    # (λ₁ = 1 is the trivial constant vector; λ₂ sets the scale of the structure: ~0.09 for phi and
    # ~0.0015 for the angular affinity of a random decoder at n = 18432). eig.*_max_residual and
    # eig.*_relative_residual report what was reached.
    eig_tol: float = 1e-2
    eig_max_restarts: int = 30

    def __post_init__(self) -> None:
        for name in ("block_size", "min_blocks", "min_features_per_cluster", "n_permutations", "density_bins",
                     "classifier_max_iter", "kmeans_n_init", "chunk_rows", "eig_max_restarts"):
            if getattr(self, name) < 1:
                raise ValueError(f"lobes.{name} must be >= 1, got {getattr(self, name)}")
        if not self.k_values or any(k < 2 for k in self.k_values):
            raise ValueError(f"lobes.k_values must be a non-empty list of integers >= 2, got {self.k_values}")
        if self.affinity not in AFFINITIES:
            raise ValueError(f"lobes.affinity must be one of {AFFINITIES}, got {self.affinity!r}")
        if self.count_method not in COUNT_METHODS:
            raise ValueError(f"lobes.count_method must be one of {COUNT_METHODS}, got {self.count_method!r}")
        if self.cv_folds < 2:
            raise ValueError(f"lobes.cv_folds must be >= 2, got {self.cv_folds}")
        if self.classifier_max_features < 2 * self.cv_folds:
            raise ValueError("lobes.classifier_max_features must be >= 2 * cv_folds, got "
                             f"{self.classifier_max_features}")
        if self.domain_k_max < 1:
            raise ValueError(f"lobes.domain_k_max must be >= 1 (1 = no domain table), got {self.domain_k_max}")
        if self.classifier_k_max < 0:
            raise ValueError(f"lobes.classifier_k_max must be >= 0, got {self.classifier_k_max}")
        if not self.eig_tol > 0:
            raise ValueError(f"lobes.eig_tol must be > 0, got {self.eig_tol}")

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> "LobesConfig":
        """From params.yaml's ``lobes:`` section (missing keys take the defaults)."""
        return config_from_section(cls, section, "lobes")

    def cluster_ks(self) -> tuple[int, ...]:
        """Every k clustered: ``k_values`` and 2 .. ``domain_k_max``."""
        return tuple(sorted(set(self.k_values) | set(range(2, self.domain_k_max + 1))))


@dataclass
class LobesInputs:
    """Codes of the evaluation tokens (streamed), the decoder, and a domain per row.

    ``codes`` is one of: a ``scipy.sparse`` matrix [N, n_latents]; a ``SparseCodes`` store (anything
    with ``csr(start, stop)`` and ``n_tokens``: read ``chunk_rows`` rows at a time); or an iterable
    of CSR chunks [rows, n_latents] that are consecutive rows from row 0 (consumed once).
    """

    codes: Any
    n_latents: int
    positions_per_context: int
    decoder: np.ndarray  # [n_latents, d]: decoder rows (any norm)
    row_domains: np.ndarray | None = None  # int [N]: index into domain_names; -1 = unknown
    domain_names: tuple[str, ...] = ()

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
        n_rows = _known_rows(self.codes)
        if n_rows is not None and self.row_domains is not None and len(self.row_domains) != n_rows:
            raise ValueError(f"row_domains has {len(self.row_domains)} rows, codes {n_rows}")


def _known_rows(codes: Any) -> int | None:
    if sparse.issparse(codes):
        return int(codes.shape[0])
    if hasattr(codes, "csr") and hasattr(codes, "n_tokens"):
        return int(codes.n_tokens)
    return None


def iter_code_chunks(codes: Any, rows: int) -> Iterator[sparse.csr_matrix]:
    """CSR chunks of consecutive rows from a sparse matrix, a ``SparseCodes`` store or an iterable."""
    if sparse.issparse(codes):
        mat = sparse.csr_matrix(codes)
        for start in range(0, mat.shape[0], rows):
            yield mat[start:start + rows]
    elif hasattr(codes, "csr") and hasattr(codes, "n_tokens"):
        for start in range(0, int(codes.n_tokens), rows):
            yield codes.csr(start, start + rows)
    else:
        for chunk in codes:
            yield sparse.csr_matrix(chunk)


# ------------------------------------------------------------------------------------------
# 1-2. Co-occurrence counting (streamed, memory independent of the token count)
# ------------------------------------------------------------------------------------------


@dataclass
class CooccurrenceCounts:
    """What one pass over the codes gives."""

    counts: np.ndarray | None  # float32 (float64 past 2^24 blocks) [n, n], symmetric: C = BᵀB
    block_counts: np.ndarray  # int64 [n]: c_i, blocks in which feature i fires (= diag C)
    firings: np.ndarray  # int64 [n]: rows on which feature i fires
    domain_firings: np.ndarray  # int64 [n, n_domains]: firings on rows of each domain
    domain_rows: np.ndarray  # int64 [n_domains]: rows of each domain
    n_blocks: int  # N: blocks with at least one row (fired or not)
    n_rows: int
    pair_increments: int  # Σ_b u_b (u_b + 1) / 2: distinct upper-triangle increments of C
    dense_blocks: int = 0  # blocks multiplied by the dense syrk
    sparse_blocks: int = 0  # blocks multiplied by the sparse BᵀB


def block_ids(rows: np.ndarray, positions_per_context: int, block_size: int) -> np.ndarray:
    """Global block id of each global row: ``(r div P)·⌈P/s⌉ + (r mod P) div s`` (``s`` = block size,
    capped at ``P``): blocks never cross a context."""
    s = min(block_size, positions_per_context)
    per_context = -(-positions_per_context // s)
    rows = np.asarray(rows, dtype=np.int64)
    return (rows // positions_per_context) * per_context + (rows % positions_per_context) // s


def _syrk(c: np.ndarray, dense_block: np.ndarray) -> np.ndarray:
    """``C[upper] += Bᵀ B`` in place for a Fortran-ordered C (BLAS syrk: half the FLOPs of GEMM)."""
    from scipy.linalg import blas

    fn = blas.ssyrk if c.dtype == np.float32 else blas.dsyrk
    out = fn(1.0, np.asfortranarray(dense_block.T, dtype=c.dtype), beta=1.0, c=c, trans=0, lower=0, overwrite_c=1)
    if out is not c and not np.shares_memory(out, c):  # pragma: no cover - scipy copies only a non-F array
        c[...] = out
    return c


class _Accumulator:
    """C += BᵀB for complete blocks; per-feature block counts."""

    def __init__(self, n: int, method: str):
        self.n, self.method = n, method
        # Fortran order so that syrk updates C in place; zeros pages are allocated lazily.
        self.c = np.zeros((n, n), dtype=np.float32, order="F")
        self.block_counts = np.zeros(n, dtype=np.int64)
        self.n_blocks_added = 0
        self.pair_increments = 0
        self.dense_blocks = self.sparse_blocks = 0
        self.rows = self.n_blocks_seen = 0  # set by the pass when it ends

    def add(self, b: sparse.csr_matrix) -> None:
        """``b``: binary CSR [m, n], one row per complete block."""
        m = b.shape[0]
        if m == 0:
            return
        self.n_blocks_added += m
        if self.c.dtype == np.float32 and self.n_blocks_added >= EXACT_FLOAT32:
            self.c = np.asfortranarray(self.c, dtype=np.float64)  # counts would stop being exact
        u = np.diff(b.indptr).astype(np.int64)
        self.pair_increments += int((u * (u + 1) // 2).sum())
        self.block_counts += np.bincount(b.indices, minlength=self.n)
        method = self.method
        if method == "auto":  # cost model: dense m·n²/2 multiply-adds vs sparse Σ u² increments
            dense_s = m * self.n * self.n / 2 / DENSE_MADDS_PER_S
            sparse_s = float((u * u).sum()) / SPARSE_INCREMENTS_PER_S
            method = "sparse" if sparse_s < dense_s else "dense"
        if method == "dense":
            self.dense_blocks += m
            for a in range(0, m, DENSE_BATCH):
                self.c = _syrk(self.c, b[a:a + DENSE_BATCH].toarray().astype(self.c.dtype, copy=False))
        else:
            self.sparse_blocks += m
            flat = self.c.reshape(-1, order="F")  # a view: C is Fortran-contiguous
            # batches of blocks with at most SPARSE_BATCH increments bound the product's temporaries
            cuts = np.searchsorted(np.cumsum(u * u), np.arange(SPARSE_BATCH, int((u * u).sum()), SPARSE_BATCH))
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, m]):
                if hi <= lo:
                    continue
                bf = b[lo:hi].astype(self.c.dtype)
                prod = (bf.T.tocsr() @ bf).tocoo()  # [n, n], each (i, j) once
                keep = prod.row <= prod.col
                flat[prod.col[keep].astype(np.int64) * self.n + prod.row[keep]] += prod.data[keep]

    def finish(self) -> np.ndarray:
        """Mirror the upper triangle into the lower one, tile by tile (no n x n temporary)."""
        c, n, t = self.c, self.n, 256  # 256 x 256 float32 tiles (256 KB) transpose in cache: 3x faster than 2048
        for a in range(0, n, t):
            for b0 in range(a, n, t):
                if b0 == a:
                    tile = c[a:a + t, a:a + t]
                    tile[...] = np.triu(tile) + np.triu(tile, 1).T
                else:
                    c[b0:b0 + t, a:a + t] = c[a:a + t, b0:b0 + t].T
        return c


def count_cooccurrence(chunks: Iterable[sparse.spmatrix], n_latents: int, positions_per_context: int,
                       block_size: int, row_domains: np.ndarray | None = None, n_domains: int = 0,
                       method: str = "auto", progress: bool = False, total_chunks: int | None = None,
                       ) -> CooccurrenceCounts:
    """One streaming pass: block co-occurrence counts ``C = BᵀB``, per-feature block and token
    firing counts, and firings per corpus domain.

    ``chunks`` are CSR [rows, n_latents] of consecutive code rows starting at row 0 (any chunk
    boundaries: a block cut by a chunk boundary is carried over to the next chunk). A feature
    fires on a row where its code is > 0. Memory: ``C`` (n x n) plus one chunk.
    """
    if method not in COUNT_METHODS:
        raise ValueError(f"method must be one of {COUNT_METHODS}, got {method!r}")
    n = int(n_latents)
    acc = _Accumulator(n, method)
    dom = None if row_domains is None else np.asarray(row_domains, dtype=np.int64)
    n_dom = int(n_domains)
    firings = np.zeros(n, dtype=np.int64)
    domain_firings = np.zeros(n * max(n_dom, 1), dtype=np.int64)
    domain_rows = np.zeros(max(n_dom, 1), dtype=np.int64)
    with _threads(n < SMALL_PROBLEM):
        _count_pass(chunks, acc, n, positions_per_context, block_size, dom, n_dom, firings, domain_firings,
                    domain_rows, progress, total_chunks)
    start, n_blocks = acc.rows, acc.n_blocks_seen
    if dom is not None and start != dom.size:
        raise ValueError(f"codes have {start} rows, row_domains {dom.size}")
    counts = acc.finish()
    return CooccurrenceCounts(
        counts=counts, block_counts=acc.block_counts, firings=firings,
        domain_firings=domain_firings.reshape(n, max(n_dom, 1))[:, :n_dom],
        domain_rows=domain_rows[:n_dom], n_blocks=n_blocks, n_rows=start,
        pair_increments=acc.pair_increments, dense_blocks=acc.dense_blocks, sparse_blocks=acc.sparse_blocks)


def _count_pass(chunks: Iterable[sparse.spmatrix], acc: "_Accumulator", n: int, positions_per_context: int,
                block_size: int, dom: np.ndarray | None, n_dom: int, firings: np.ndarray, domain_firings: np.ndarray,
                domain_rows: np.ndarray, progress: bool, total_chunks: int | None) -> None:
    """The loop of ``count_cooccurrence``: accumulates into ``acc`` and the arrays in place."""
    start = 0
    pending: np.ndarray | None = None  # feature ids of the block cut by the last chunk boundary
    pending_id = -1
    for chunk in tqdm(chunks, desc="co-occurrence", total=total_chunks, disable=not progress, mininterval=5,
                      leave=False):
        x = sparse.csr_matrix(chunk)
        rows = x.shape[0]
        if x.shape[1] != n:
            raise ValueError(f"code chunk has {x.shape[1]} columns, expected n_latents = {n}")
        if rows == 0:
            continue
        x.sum_duplicates()
        fired = x.data > 0
        row_of = np.repeat(np.arange(rows, dtype=np.int64), np.diff(x.indptr))[fired]
        feat = x.indices[fired].astype(np.int64)
        firings += np.bincount(feat, minlength=n)
        if dom is not None:
            if start + rows > dom.size:
                raise ValueError(f"codes have more rows than row_domains ({dom.size})")
            d = dom[start:start + rows]
            known = d >= 0
            if n_dom:
                domain_rows += np.bincount(d[known], minlength=n_dom)
                dr = d[row_of]
                ok = dr >= 0
                domain_firings += np.bincount(feat[ok] * n_dom + dr[ok], minlength=n * n_dom)
        ids = block_ids(np.arange(start, start + rows), positions_per_context, block_size)
        first = int(ids[0])
        local = ids[row_of] - first
        n_local = int(ids[-1]) - first + 1
        if pending is not None:
            if pending_id == first:  # the carried block continues in this chunk
                local = np.concatenate([np.zeros(pending.size, dtype=np.int64), local])
                feat = np.concatenate([pending, feat])
            else:
                acc.add(_binary_rows(np.zeros(pending.size, dtype=np.int64), pending, 1, n))
        b = _binary_rows(local, feat, n_local, n)
        end = start + rows
        complete = block_ids(np.array([end]), positions_per_context, block_size)[0] != ids[-1]
        if complete:
            acc.add(b)
            pending, pending_id = None, -1
        else:
            acc.add(b[:-1])
            last = b[n_local - 1]
            pending, pending_id = last.indices.astype(np.int64), int(ids[-1])
        start = end
    if pending is not None:
        acc.add(_binary_rows(np.zeros(pending.size, dtype=np.int64), pending, 1, n))
    acc.rows = start
    acc.n_blocks_seen = int(block_ids(np.array([start - 1]), positions_per_context, block_size)[0]) + 1 if start else 0


def _binary_rows(block: np.ndarray, feat: np.ndarray, n_blocks: int, n: int) -> sparse.csr_matrix:
    """Binary CSR [n_blocks, n]: 1 where a feature fires anywhere in the block (duplicates merged)."""
    b = sparse.csr_matrix((np.ones(feat.size, dtype=np.float32), (block, feat)), shape=(n_blocks, n))
    b.sum_duplicates()
    b.data[:] = 1.0
    return b


# ------------------------------------------------------------------------------------------
# 3. Affinities
# ------------------------------------------------------------------------------------------


def affinity_inplace(c: np.ndarray, block_counts: np.ndarray, n_blocks: int, kind: str = "phi",
                     chunk: int = 1024) -> dict[str, float]:
    """Turn co-occurrence counts ``c`` [m, m] (C-contiguous, the pairs of these features) into an
    affinity, in place: phi / Jaccard / Dice (formulas in the module docstring), negatives
    clipped to 0, diagonal 0. Returns the fraction of off-diagonal pairs that were negative (phi
    only) and that are positive after clipping."""
    if kind not in AFFINITIES:
        raise ValueError(f"affinity must be one of {AFFINITIES}, got {kind!r}")
    m = c.shape[0]
    ci = np.asarray(block_counts, dtype=np.float64)
    big_n = float(n_blocks)
    negative = positive = 0
    if kind == "phi":
        spread = np.sqrt(ci * (big_n - ci))  # √(c_i (N − c_i))
        inv = np.divide(1.0, spread, out=np.zeros_like(spread), where=spread > 0)
    for a in range(0, m, chunk):
        cij = c[a:a + chunk].astype(np.float64)
        rows = slice(a, min(a + chunk, m))
        if kind == "phi":
            val = (big_n * cij - np.outer(ci[rows], ci)) * np.outer(inv[rows], inv)
            negative += int((val < 0).sum())
        elif kind == "jaccard":
            union = ci[rows, None] + ci[None, :] - cij
            val = np.divide(cij, union, out=np.zeros_like(cij), where=union > 0)
        else:
            tot = ci[rows, None] + ci[None, :]
            val = np.divide(2.0 * cij, tot, out=np.zeros_like(cij), where=tot > 0)
        np.maximum(val, 0.0, out=val)
        val[np.arange(val.shape[0]), np.arange(a, a + val.shape[0])] = 0.0
        positive += int((val > 0).sum())
        c[a:a + chunk] = val
    pairs = max(m * (m - 1), 1)
    return {"negative_fraction": negative / pairs, "positive_fraction": positive / pairs}


def affinity(counts: np.ndarray, block_counts: np.ndarray, n_blocks: int, kind: str = "phi") -> np.ndarray:
    """``affinity_inplace`` on a float32 copy (for small inputs and tests)."""
    out = np.array(counts, dtype=np.float32, order="C")
    affinity_inplace(out, block_counts, n_blocks, kind)
    return out


def angular_affinity(decoder: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """``1 − arccos(cos θ_ij) / π`` between unit decoder rows (float32 [n, n], diagonal 0)."""
    u = _unit_rows(decoder)
    n = u.shape[0]
    out = np.empty((n, n), dtype=np.float32)
    for a in range(0, n, chunk):
        cos = np.clip(u[a:a + chunk] @ u.T, -1.0, 1.0)
        out[a:a + chunk] = 1.0 - np.arccos(cos) / np.pi
    np.fill_diagonal(out, 0.0)
    return out


def _unit_rows(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32)
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    return np.divide(w, norms, out=np.zeros_like(w), where=norms > 0)


def compact_square(buf: np.ndarray, keep: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """``buf[keep][:, keep]`` written into the front of ``buf``'s own memory (``buf`` is C-contiguous
    square; ``keep`` ascending indices). Safe because destination rows ``[a·m, b·m)`` end before
    the source rows of later chunks start (``keep[b]·n ≥ b·n ≥ b·m``); no n x n temporary."""
    n = buf.shape[0]
    keep = np.asarray(keep, dtype=np.int64)
    m = keep.size
    if m == n:
        return buf
    flat = buf.reshape(-1)
    for a in range(0, m, chunk):
        block = buf[keep[a:a + chunk]][:, keep]  # a copy, taken before anything is overwritten
        flat[a * m:a * m + block.size] = block.reshape(-1)
    return flat[:m * m].reshape(m, m)


# ------------------------------------------------------------------------------------------
# 4. Spectral embedding (sklearn's, once for the largest k)
# ------------------------------------------------------------------------------------------


def top_eigenpairs(m: np.ndarray, k: int, *, tol: float = 1e-2, max_restarts: int = 30, seed: int = 0,
                   dense_below: int = 2000) -> tuple[np.ndarray, np.ndarray, float, int]:
    """The ``k`` largest (algebraic) eigenvalues of the symmetric ``m`` [n, n] and their unit
    eigenvectors [n, k] (descending), the largest residual ``‖m v − λ v‖`` and the restarts used.

    Small ``n``: LAPACK ``eigh`` (exact). Otherwise a restarted block Krylov method: from a block
    ``X`` of ``b = k + max(k/2, 16)`` vectors, the orthonormal basis ``Q`` of
    ``[X, mX, m²X]`` (each block orthogonalised twice against the previous ones), Rayleigh-Ritz on
    ``QᵀmQ`` (each block's image ``mQ_j`` is computed once: it seeds the next block and enters
    ``QᵀmQ``), Ritz pairs ``(θ, Qs)``; stop when every top-``k`` residual is below ``tol·|θ₂|`` (the second
    Ritz value sets the scale: for a normalised affinity the first is the trivial 1), else restart
    from the top ``b`` Ritz vectors; the best iterate is returned after ``max_restarts``. All
    products are GEMMs ([n, n] x [n, b], float32 like ``m``), so the
    matrix is read once per ``b`` vectors instead of once per vector as in ARPACK.
    """
    import torch

    n = m.shape[0]
    if k >= n:
        raise ValueError(f"asked for {k} eigenpairs of a {n} x {n} matrix")
    b = min(k + max(k // 2, 16), n)
    depth = 3
    small = n < SMALL_PROBLEM
    if n <= max(dense_below, depth * b + 1):
        with _threads(small):
            md = torch.from_numpy(np.asarray(m, dtype=np.float64))
            vals_t, vecs_t = torch.linalg.eigh(md)
            vals_t, vecs_t = vals_t.flip(0)[:k], vecs_t.flip(1)[:, :k]
            res = torch.linalg.norm(md @ vecs_t - vecs_t * vals_t, dim=0)
        return vals_t.numpy().copy(), vecs_t.numpy().copy(), float(res.max()), 0
    mt = torch.from_numpy(np.ascontiguousarray(m))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, b, generator=gen, dtype=torch.float64)
    best = (np.inf, None, None)
    restarts = 0
    for restarts in range(1, max_restarts + 1):
        with _threads(small):
            q, _ = torch.linalg.qr(x)
        basis, images = [q], []
        for j in range(depth):
            with _threads(small):
                w = (mt @ basis[-1].to(mt.dtype)).double()
            images.append(w)
            if j == depth - 1:
                break
            qa = torch.cat(basis, 1)
            with _threads(small):
                for _ in range(2):  # block Gram-Schmidt, twice: "twice is enough" (Giraud et al. 2005)
                    w = w - qa @ (qa.T @ w)
                q, _ = torch.linalg.qr(w)
            basis.append(q)
        qa, ima = torch.cat(basis, 1), torch.cat(images, 1)
        with _threads(small):
            t = qa.T @ ima
        with _threads(True):  # a small eigh: one thread is as fast, and immune to a busy machine
            theta, s = torch.linalg.eigh((t + t.T) / 2)
        theta, s = theta.flip(0), s.flip(1)
        v, mv = qa @ s[:, :k], ima @ s[:, :k]
        res = float(torch.linalg.norm(mv - v * theta[:k], dim=0).max())
        if res < best[0]:
            best = (res, theta[:k].numpy().copy(), v.numpy().copy())
        if res <= tol * max(abs(float(theta[min(1, k - 1)])), 1e-12):
            break
        x = qa @ s[:, :b]
    res, vals, vecs = best
    norms = np.linalg.norm(vecs, axis=0)
    return vals, vecs / norms, float(res), restarts


def spectral_embedding(a: np.ndarray, k: int, *, tol: float = 1e-2, max_restarts: int = 30, seed: int = 0,
                       dense_below: int = 2000) -> tuple[np.ndarray, dict[str, float]]:
    """sklearn's spectral embedding (``norm_laplacian=True, drop_first=False``) of the affinity
    ``a`` [n, n] (non-negative, diagonal ignored, every degree > 0), with ``k`` components.

    ``a`` is overwritten with ``M = D^{-1/2} A D^{-1/2}`` (no second n x n matrix). The top ``k``
    eigenvectors ``v`` of ``M`` are the bottom ones of the normalised Laplacian ``I − M``; the
    embedding is ``v_i / √d_i`` with each column's sign fixed so that its largest-magnitude entry
    is positive (sklearn's ``_deterministic_vector_sign_flip``).
    """
    np.fill_diagonal(a, 0.0)
    deg = a.sum(axis=1, dtype=np.float64)
    if (deg <= 0).any():
        raise ValueError(f"{int((deg <= 0).sum())} nodes have no positive affinity; drop them first")
    dd = np.sqrt(deg)
    inv = (1.0 / dd).astype(a.dtype)
    for s in range(0, a.shape[0], 2048):
        a[s:s + 2048] *= inv[s:s + 2048, None]
        a[s:s + 2048] *= inv[None, :]
    vals, vecs, res, restarts = top_eigenpairs(a, k, tol=tol, max_restarts=max_restarts, seed=seed,
                                               dense_below=dense_below)
    emb = vecs / dd[:, None]
    top = np.abs(emb).argmax(axis=0)
    emb *= np.sign(emb[top, np.arange(emb.shape[1])])
    lam2 = float(vals[1]) if vals.size > 1 else math.nan
    return emb, {"max_residual": res, "relative_residual": res / abs(lam2) if lam2 else math.nan,
                 "restarts": float(restarts), "eigenvalue_2": lam2, "eigenvalue_last": float(vals[-1])}


def kmeans_labels(embedding: np.ndarray, k: int, n_init: int, seed: int) -> np.ndarray:
    """sklearn k-means on the first ``k`` columns of the spectral embedding."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    return km.fit_predict(np.ascontiguousarray(embedding[:, :k])).astype(np.int64)


# ------------------------------------------------------------------------------------------
# 6. Adjusted mutual information with fast permutation nulls
# ------------------------------------------------------------------------------------------


def _entropy(sizes: np.ndarray) -> float:
    p = sizes[sizes > 0] / sizes.sum()
    return float(-(p * np.log(p)).sum())


def expected_mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """E[MI] of two labelings with cluster sizes ``a`` and ``b`` under random relabelling
    (hypergeometric model; Vinh, Epps & Bailey 2010):
    ``Σ_ij Σ_{n_ij} (n_ij/N) log(N n_ij / (a_i b_j)) · P(n_ij | a_i, b_j, N)``,
    ``n_ij`` from ``max(1, a_i + b_j − N)`` to ``min(a_i, b_j)``, ``P`` the hypergeometric pmf."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    a, b = a[a > 0], b[b > 0]
    n = int(a.sum())
    if int(b.sum()) != n:
        raise ValueError("the two labelings have different sample counts")
    lg = gammaln
    total = 0.0
    rows_per = max(1, 2_000_000 // max(int(np.minimum(b, a.max()).sum()), 1))
    for s in range(0, a.size, rows_per):
        ai = np.repeat(a[s:s + rows_per], b.size).astype(np.float64)
        bj = np.tile(b, min(rows_per, a.size - s)).astype(np.float64)
        lo = np.maximum(1, ai + bj - n).astype(np.int64)
        hi = np.minimum(ai, bj).astype(np.int64)
        length = np.maximum(hi - lo + 1, 0)
        if not length.sum():
            continue
        pair = np.repeat(np.arange(ai.size), length)
        offset = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
        nij = (lo[pair] + offset).astype(np.float64)
        aa, bb = ai[pair], bj[pair]
        log_p = (lg(aa + 1) + lg(bb + 1) + lg(n - aa + 1) + lg(n - bb + 1) - lg(n + 1) - lg(nij + 1)
                 - lg(aa - nij + 1) - lg(bb - nij + 1) - lg(n - aa - bb + nij + 1))
        total += float((nij / n * (np.log(n * nij) - np.log(aa * bb)) * np.exp(log_p)).sum())
    return total


class AMIScorer:
    """AMI of a fixed labeling ``u`` against relabelings of ``v`` that keep ``v``'s cluster sizes.

    ``AMI = (MI − E[MI]) / (mean(H_u, H_v) − E[MI])`` (sklearn's arithmetic normalisation). Shuffling
    ``v`` keeps both sets of cluster sizes, so ``E[MI]`` and the normaliser are fixed: computed
    once, and each shuffled MI is one contingency table (``bincount``)."""

    def __init__(self, u: np.ndarray, v: np.ndarray):
        self.u = np.unique(u, return_inverse=True)[1].astype(np.int64)
        self.v = np.unique(v, return_inverse=True)[1].astype(np.int64)
        self.n = self.u.size
        self.ku, self.kv = int(self.u.max()) + 1, int(self.v.max()) + 1
        self.a = np.bincount(self.u, minlength=self.ku).astype(np.float64)
        self.b = np.bincount(self.v, minlength=self.kv).astype(np.float64)
        self.trivial = self.ku == self.kv == 1
        self.emi = 0.0 if self.trivial else expected_mutual_information(self.a, self.b)
        self.normalizer = (_entropy(self.a) + _entropy(self.b)) / 2

    def mutual_information(self, v: np.ndarray) -> float:
        """``MI = Σ_ij (n_ij/N) log(N n_ij / (a_i b_j))`` of ``u`` and the relabeled ``v``."""
        table = np.bincount(self.u * self.kv + v, minlength=self.ku * self.kv).astype(np.float64)
        ij = np.flatnonzero(table)
        nij = table[ij]
        ai, bj = self.a[ij // self.kv], self.b[ij % self.kv]
        return float((nij / self.n * (np.log(self.n * nij) - np.log(ai * bj))).sum())

    def ami(self, v: np.ndarray | None = None) -> float:
        if self.trivial:
            return 1.0
        mi = self.mutual_information(self.v if v is None else v)
        den = self.normalizer - self.emi
        eps = np.finfo(np.float64).eps
        den = min(den, -eps) if den < 0 else max(den, eps)
        return float((mi - self.emi) / den)

    def null(self, n_perm: int, rng: np.random.Generator, groups: np.ndarray | None = None) -> np.ndarray:
        """AMI of ``n_perm`` shuffles of ``v``: over all items, or only within each group."""
        members = [np.flatnonzero(groups == g) for g in np.unique(groups)] if groups is not None else None
        out = np.empty(n_perm)
        for p in range(n_perm):
            if members is None:
                v = self.v[rng.permutation(self.n)]
            else:
                v = self.v.copy()
                for idx in members:
                    v[idx] = self.v[rng.permutation(idx)]
            out[p] = self.ami(v)
        return out


def null_summary(observed: float, null: np.ndarray) -> dict[str, float]:
    """Mean, sd, ``z = (obs − mean)/sd`` and ``p = (1 + #{null ≥ obs}) / (1 + P)``."""
    mean, sd = float(null.mean()), float(null.std(ddof=1)) if null.size > 1 else 0.0
    z = (observed - mean) / sd if sd > 0 else math.nan
    p = (1 + int((null >= observed - 1e-12).sum())) / (1 + null.size)
    return {"mean": mean, "sd": sd, "z": z, "p": p}


def density_bins(firings: np.ndarray, bins: int) -> np.ndarray:
    """Quantile bins (0 .. bins−1) of log firing counts; ties share a bin."""
    x = np.log(np.maximum(np.asarray(firings, dtype=np.float64), 1.0))
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, x, side="right").astype(np.int64)


# ------------------------------------------------------------------------------------------
# 7. Lobe classifier
# ------------------------------------------------------------------------------------------


def lobe_balanced_accuracy(x: np.ndarray, y: np.ndarray, folds: int, seed: int, max_iter: int) -> float:
    """Balanced accuracy (mean per-class recall) of out-of-fold multinomial logistic regression
    predictions of ``y`` from ``x`` (stratified ``folds``-fold CV; classes weighted inversely to
    their size, since the score weights every class equally)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    clf = LogisticRegression(max_iter=max_iter, class_weight="balanced")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        pred = cross_val_predict(clf, x, y, cv=cv)
    return float(balanced_accuracy_score(y, pred))


# ------------------------------------------------------------------------------------------
# 8. Lobe x domain enrichment
# ------------------------------------------------------------------------------------------


def domain_enrichment(labels: np.ndarray, k: int, domain_firings: np.ndarray) -> np.ndarray:
    """[k, n_domains]: ``(F_lg / Σ_g F_lg) / (F_g / Σ_g F_g)``, ``F_lg`` = firings of lobe ``l``'s
    features on domain ``g``; NaN for an empty lobe or a domain without firings."""
    f = np.asarray(domain_firings, dtype=np.float64)
    per = np.stack([np.bincount(labels, weights=f[:, g], minlength=k) for g in range(f.shape[1])], axis=1)
    base = f.sum(0) / max(f.sum(), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = per / per.sum(1, keepdims=True)
        return np.where(base > 0, share / base, np.nan)


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------


@dataclass
class _KResult:
    k: int
    lobes: np.ndarray
    geo: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)


def run(config: LobesConfig, inputs: LobesInputs, *, progress: bool = True) -> AnalysisOutput:
    """Count, cluster both ways, compare against the nulls, classify, and name the lobes by domain.

    Metrics: ``n_*`` (tokens, blocks, features kept and left out), ``cooc.*``, ``eig.*``; per
    clustered k: ``k<k>.ami`` with ``_null_mean/_null_sd/_z/_p`` (label-shuffle null) and
    ``ami_density_null_mean/_sd, ami_density_z/_p`` (density-matched null),
    ``k<k>.ami_lobes_vs_density`` / ``ami_geom_vs_density``, ``largest_lobe_fraction`` /
    ``largest_geom_fraction``; for k <= classifier_k_max ``k<k>.balanced_accuracy`` /
    ``balanced_accuracy_random`` / ``balanced_accuracy_chance``; for k <= domain_k_max
    ``k<k>.domain_enrichment_max`` beside ``_null_mean/_null_sd``; ``reference.li2024_*``.
    Tables ``lobes_summary`` (one row per k), ``lobe_domain_enrichment`` (k, lobe, domain) and
    ``lobe_assignments`` (one row per analysed feature). Figure ``lobes_ami`` (matplotlib);
    interactive ``lobes_domains`` (Plotly heatmap).
    """
    inputs.validate()
    n = int(inputs.n_latents)
    ss = np.random.SeedSequence(config.seed)
    rng_perm, rng_rand, rng_dom, rng_sub = (np.random.default_rng(s) for s in ss.spawn(4))
    names = tuple(inputs.domain_names)
    n_rows_known = _known_rows(inputs.codes)
    total_chunks = -(-n_rows_known // config.chunk_rows) if n_rows_known else None
    n_domains = len(names) if inputs.row_domains is not None else 0
    counts = count_cooccurrence(iter_code_chunks(inputs.codes, config.chunk_rows), n, inputs.positions_per_context,
                                config.block_size, inputs.row_domains, n_domains, config.count_method, progress,
                                total_chunks)
    big_n = counts.n_blocks
    c = counts.block_counts
    dead = c == 0
    rare = (c > 0) & (c < config.min_blocks)
    always = (c == big_n) & (big_n > 0)
    keep = np.flatnonzero(~dead & ~rare & ~always)

    metrics: dict[str, float] = {
        "n_latents": n, "n_tokens": counts.n_rows, "n_blocks": big_n,
        "block_size_effective": min(config.block_size, inputs.positions_per_context),
        "n_dead": int(dead.sum()), "n_rare": int(rare.sum()), "n_always_on": int(always.sum()),
        "cooc.pair_increments": counts.pair_increments,
        "cooc.dense_blocks": counts.dense_blocks, "cooc.sparse_blocks": counts.sparse_blocks,
    }
    assert counts.counts is not None
    # The count matrix is symmetric and Fortran-ordered: its transpose is the same matrix, C-ordered.
    buf = compact_square(counts.counts.T, keep)
    counts.counts = None
    if keep.size:
        # off-diagonal pairs that co-occur at least once (every kept feature's diagonal is > 0)
        pairs = max(keep.size * (keep.size - 1), 1)
        metrics["cooc.nonzero_fraction"] = float(np.count_nonzero(buf) - keep.size) / pairs
    aff_stats = affinity_inplace(buf, c[keep], big_n, config.affinity) if keep.size else {}
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
    m = int(keep.size)
    metrics["n_analysed"] = m
    ks = [k for k in config.cluster_ks() if k * config.min_features_per_cluster <= m]
    metrics["n_k_skipped"] = len(config.cluster_ks()) - len(ks)

    results: list[_KResult] = []
    with _threads(m < SMALL_PROBLEM):
        emb_c, eig_c = (spectral_embedding(buf, max(ks), tol=config.eig_tol, max_restarts=config.eig_max_restarts,
                                           seed=config.seed) if ks else (np.zeros((m, 0)), {}))
        del buf  # the last reference to the n x n counts: freed before the geometric affinity is built
        _cluster_and_compare(config, inputs, counts, emb_c, eig_c, keep, ks, metrics, results, rng_perm, rng_rand,
                             rng_sub, progress)
        enrichment_rows, heat = _domains(config, results, counts, keep, names, rng_dom)

    for r in results:
        metrics.update(r.metrics)
    metrics.update({"reference.li2024_ami_k2": LI2024_AMI_K2, "reference.li2024_ami_k128_256": LI2024_AMI_K128_256,
                    "reference.li2024_balanced_accuracy_k2": LI2024_BALANCED_ACCURACY_K2,
                    "reference.li2024_balanced_accuracy_random_k2": LI2024_BALANCED_ACCURACY_RANDOM_K2})
    if inputs.row_domains is not None and counts.domain_rows.sum():
        tok = counts.domain_rows / counts.domain_rows.sum()
        fir = counts.domain_firings[keep].sum(0) / max(counts.domain_firings[keep].sum(), 1)
        for g, name in enumerate(names):
            metrics[f"domain.{name}.token_share"] = float(tok[g])
            metrics[f"domain.{name}.firing_share"] = float(fir[g])
    metrics = {k: (float(v) if not isinstance(v, (int, np.integer)) else int(v)) for k, v in metrics.items()}
    metrics = {k: v for k, v in metrics.items() if not (isinstance(v, float) and not math.isfinite(v))}

    summary = [{"k": r.k, **{key.split(".", 1)[1]: val for key, val in r.metrics.items()}} for r in results]
    assignments = [{"feature": int(f), "firings": int(counts.firings[f]), "blocks": int(c[f]),
                    **{f"lobe_k{r.k}": int(r.lobes[i]) for r in results},
                    **{f"geom_k{r.k}": int(r.geo[i]) for r in results}} for i, f in enumerate(keep)]
    return AnalysisOutput(
        metrics=metrics,
        tables={"lobes_summary": summary, "lobe_domain_enrichment": enrichment_rows,
                "lobe_assignments": assignments},
        figures={"lobes_ami": _ami_figure(results, metrics)},
        interactive={"lobes_domains": heat},
    )


def _cluster_and_compare(config: LobesConfig, inputs: LobesInputs, counts: CooccurrenceCounts, emb_c: np.ndarray,
                         eig_c: dict[str, float], keep: np.ndarray, ks: list[int], metrics: dict[str, float],
                         results: list[_KResult], rng_perm: np.random.Generator, rng_rand: np.random.Generator,
                         rng_sub: np.random.Generator, progress: bool) -> None:
    """Steps 5-7 for every k, given the co-occurrence embedding ``emb_c``: the geometric
    embedding, k-means of both, AMI and its nulls, the classifier. Appends to ``results``, adds the
    eigen-solver metrics to ``metrics``."""
    if not ks:
        return
    m = int(keep.size)
    kmax = max(ks)
    dec = np.asarray(inputs.decoder, dtype=np.float32)[keep]
    geo_aff = angular_affinity(dec)
    emb_g, eig_g = spectral_embedding(geo_aff, kmax, tol=config.eig_tol, max_restarts=config.eig_max_restarts,
                                      seed=config.seed)
    del geo_aff
    metrics["eig.components"] = kmax
    for name, info in (("cooc", eig_c), ("geom", eig_g)):
        for key, val in info.items():
            metrics[f"eig.{name}_{key}"] = val
    bins = density_bins(counts.firings[keep], config.density_bins)
    metrics["density_bins_used"] = int(bins.max()) + 1
    sub = np.sort(rng_sub.choice(m, size=min(m, config.classifier_max_features), replace=False))
    d = dec.shape[1]
    x_dec = _unit_rows(dec)[sub] * np.float32(math.sqrt(d))
    x_rand = rng_rand.standard_normal((sub.size, d)).astype(np.float32)
    for k in tqdm(ks, desc="lobes per k", disable=not progress, leave=False):
        r = _KResult(k, kmeans_labels(emb_c, k, config.kmeans_n_init, config.seed),
                     kmeans_labels(emb_g, k, config.kmeans_n_init, config.seed))
        scorer = AMIScorer(r.lobes, r.geo)
        ami = scorer.ami()
        perm = null_summary(ami, scorer.null(config.n_permutations, rng_perm))
        dens = null_summary(ami, scorer.null(config.n_permutations, rng_perm, groups=bins))
        p = f"k{k}."
        r.metrics = {
            p + "ami": ami, p + "ami_null_mean": perm["mean"], p + "ami_null_sd": perm["sd"],
            p + "ami_z": perm["z"], p + "ami_p": perm["p"],
            p + "ami_density_null_mean": dens["mean"], p + "ami_density_null_sd": dens["sd"],
            p + "ami_density_z": dens["z"], p + "ami_density_p": dens["p"],
            p + "ami_lobes_vs_density": AMIScorer(r.lobes, bins).ami(),
            p + "ami_geom_vs_density": AMIScorer(r.geo, bins).ami(),
            p + "largest_lobe_fraction": float(np.bincount(r.lobes).max() / m),
            p + "largest_geom_fraction": float(np.bincount(r.geo).max() / m),
        }
        if k <= config.classifier_k_max:
            y = r.lobes[sub]
            if np.unique(y).size >= 2:
                r.metrics[p + "balanced_accuracy"] = lobe_balanced_accuracy(
                    x_dec, y, config.cv_folds, config.seed, config.classifier_max_iter)
                r.metrics[p + "balanced_accuracy_random"] = lobe_balanced_accuracy(
                    x_rand, y, config.cv_folds, config.seed, config.classifier_max_iter)
                r.metrics[p + "balanced_accuracy_chance"] = 1.0 / np.unique(y).size
        results.append(r)


def _domains(config: LobesConfig, results: list[_KResult], counts: CooccurrenceCounts, keep: np.ndarray,
             names: Sequence[str], rng: np.random.Generator) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Enrichment table rows and the Plotly heatmap; adds ``k<k>.domain_enrichment_max*`` to the
    per-k metrics."""
    rows: list[dict[str, Any]] = []
    ylabels: list[str] = []
    z: list[list[float | None]] = []
    text: list[list[str]] = []
    if not names or counts.domain_firings.size == 0 or counts.domain_firings[keep].sum() == 0:
        return rows, _heatmap(ylabels, list(names), z, text)
    f = counts.domain_firings[keep]
    for r in results:
        if r.k > config.domain_k_max:
            continue
        enr = domain_enrichment(r.lobes, r.k, f)
        null = np.stack([domain_enrichment(r.lobes[rng.permutation(r.lobes.size)], r.k, f)
                         for _ in range(config.n_permutations)])
        mean, sd = np.nanmean(null, axis=0), np.nanstd(null, axis=0, ddof=1)
        null_max = np.nanmax(null.reshape(null.shape[0], -1), axis=1)
        r.metrics[f"k{r.k}.domain_enrichment_max"] = float(np.nanmax(enr))
        r.metrics[f"k{r.k}.domain_enrichment_max_null_mean"] = float(null_max.mean())
        r.metrics[f"k{r.k}.domain_enrichment_max_null_sd"] = float(null_max.std(ddof=1)) if null_max.size > 1 else 0.0
        sizes = np.bincount(r.lobes, minlength=r.k)
        lobe_firings = np.bincount(r.lobes, weights=f.sum(1).astype(np.float64), minlength=r.k)
        for lobe in range(r.k):
            zs, txt = [], []
            for g, name in enumerate(names):
                e = float(enr[lobe, g])
                zz = (e - mean[lobe, g]) / sd[lobe, g] if sd[lobe, g] > 0 else math.nan
                share = float(f[r.lobes == lobe, g].sum() / max(lobe_firings[lobe], 1))
                rows.append({"k": r.k, "lobe": lobe, "n_features": int(sizes[lobe]), "domain": name,
                             "firing_share": share, "base_rate": float(f[:, g].sum() / max(f.sum(), 1)),
                             "enrichment": e, "enrichment_null_mean": float(mean[lobe, g]),
                             "enrichment_null_sd": float(sd[lobe, g]), "enrichment_z": float(zz)})
                zs.append(float(np.log2(e)) if e > 0 and math.isfinite(e) else None)
                txt.append(f"enrichment {e:.2f} (null {mean[lobe, g]:.2f} ± {sd[lobe, g]:.2f}); share {share:.3f}")
            ylabels.append(f"k={r.k} lobe {lobe} ({sizes[lobe]} features)")
            z.append(zs)
            text.append(txt)
    return rows, _heatmap(ylabels, list(names), z, text)


def _heatmap(ylabels: list[str], xlabels: list[str], z: list[list[float | None]],
             text: list[list[str]]) -> dict[str, Any]:
    """Lobe x domain log2 enrichment as a Plotly heatmap (0 = the corpus base rate)."""
    import plotly.graph_objects as go

    finite = [abs(v) for row in z for v in row if v is not None]
    lim = max(finite + [1.0])
    fig = go.Figure(go.Heatmap(z=z, x=xlabels, y=ylabels, text=text, colorscale="RdBu_r", zmid=0, zmin=-lim,
                               zmax=lim, colorbar={"title": "log2 enrichment"},
                               hovertemplate="%{y}<br>%{x}: %{text}<extra></extra>"))
    fig.update_layout(title="What the co-occurrence lobes fire on: lobe x corpus domain enrichment "
                            "(firing share / base rate)", yaxis={"autorange": "reversed"},
                      margin={"t": 50, "l": 5, "r": 5, "b": 5})
    return fig.to_plotly_json()


def _ami_figure(results: list[_KResult], metrics: Mapping[str, float]) -> Any:
    """AMI vs k with both nulls (mean ± 2 sd) and the published reference; balanced accuracy vs k
    beside random vectors and chance."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    ks = np.array([r.k for r in results])
    if ks.size:
        def series(name: str) -> np.ndarray:
            return np.array([metrics.get(f"k{k}.{name}", np.nan) for k in ks])

        ax.plot(ks, series("ami"), "o-", label="co-occurrence lobes vs geometric clusters")
        for prefix, label, color in (("ami_null", "label-shuffle null", "grey"),
                                     ("ami_density_null", "density-matched null", "tab:orange")):
            mean, sd = series(prefix + "_mean"), series(prefix + "_sd")
            ax.plot(ks, mean, "--", color=color, label=f"{label} (mean ± 2 sd)")
            ax.fill_between(ks, mean - 2 * sd, mean + 2 * sd, color=color, alpha=0.25)
        ba = series("balanced_accuracy")
        sel = np.isfinite(ba)
        if sel.any():
            ax2.plot(ks[sel], ba[sel], "o-", label="decoder vectors")
            ax2.plot(ks[sel], series("balanced_accuracy_random")[sel], "s--", label="random Gaussian vectors")
            ax2.plot(ks[sel], series("balanced_accuracy_chance")[sel], ":", color="k", label="chance (1/k)")
    ax.plot([2], [LI2024_AMI_K2], "k*", ms=10, label="Li et al. 2024 (Gemma-2-2B, approx.)")
    ax.plot([128, 256], [LI2024_AMI_K128_256] * 2, "k*", ms=10)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("clusters k")
    ax.set_ylabel("adjusted mutual information")
    ax.set_title("Functional lobes vs geometric clusters")
    ax.legend(fontsize=7)
    ax2.plot([2], [LI2024_BALANCED_ACCURACY_K2], "k*", ms=10, label="Li et al. 2024: decoder")
    ax2.plot([2], [LI2024_BALANCED_ACCURACY_RANDOM_K2], "kx", ms=8, label="Li et al. 2024: random")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("lobes k")
    ax2.set_ylabel("balanced accuracy (out-of-fold)")
    ax2.set_title("Predicting a feature's lobe from its direction")
    ax2.set_ylim(0, 1.02)
    ax2.legend(fontsize=7)
    return fig
