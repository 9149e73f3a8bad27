"""Feature splitting across dictionary sizes: which features of a larger SAE continue a feature
of the next smaller one, which are the children of a split, and which are new.

What is compared. For every pair of adjacent sizes (s, s'), every feature j of the larger SAE is
matched to the smaller SAE twice, and both matches are reported:

- by **decoder direction**: ``p_j = argmax_i cos(W'_j, W_i)`` over the unit-normalised decoder
  rows (the cheap proxy Leask et al. validate against SAE stitching);
- by **activation on shared tokens**: ``q_j = argmax_i corr(a_i, a'_j)``, the Pearson correlation
  of the two features' activations over the same N evaluation tokens.

``match_agreement`` is how often ``p_j == q_j``. Each larger feature with at least
``min_firings`` firings (rarer ones are counted as ``rare`` and left out of the fractions: their
activation statistics rest on too few tokens) falls in exactly one class:

- it is **linked** to its decoder parent ``p_j`` when ``cos ≥ child_cos`` *and* it fires mostly
  inside the parent: ``containment_j = |F_j ∩ F_{p_j}| / |F_j| ≥ child_min_containment``
  (``F`` = the set of tokens on which a feature is > 0). A split child is, by definition, a
  refinement: its tokens are a subset of its parent's. Pearson correlation is *not* the child
  test because a child of a K-way split correlates with its parent only ~1/√K;
- **split_child**: linked, and the parent has ≥ ``min_children`` linked features: a split family;
- **identical**: linked, the parent's only link, and ``cos ≥ identical_cos``;
- **novel**: neither of these, and ``cos < similar_cos``: no smaller feature points the same way
  (Leask et al.'s novel latents, with their decoder-cosine proxy);
- **other_similar**: the rest: a direction close to a smaller feature (``cos ≥ similar_cos``) but
  neither its near-copy nor part of a family (a lone drifted match, or one whose tokens are not
  nested in the parent's).

Two cosine thresholds, because they answer two questions: ``similar_cos`` (0.7) is Leask et
al.'s similar/novel cut, validated there by stitching, and keeps ``novel_fraction`` comparable
with theirs; ``child_cos`` (0.5) is lower because a child is also required to be nested in its
parent's tokens, and because the children of a K-way split are far from the parent: with
orthogonal private parts a child has ``cos = 1/√K`` (0.71 for K = 2, 0.58 for K = 3, 0.5 for 4).

``similar_fraction = 1 - novel_fraction`` (identical + split + other) is the number comparable
with the published reference: Leask et al. 2025 ("Sparse autoencoders do not find canonical
units of analysis", ICLR 2025; and the earlier "Stitching SAEs of different sizes") report that
about 65% of a larger SAE's latents are similar to the smaller SAE's (identical or split) and
about 35% are novel, for GPT-2 / Pythia SAEs, classified by the maximum decoder cosine to the
smaller SAE. ``cos_similar_fraction`` is their proxy alone (best cosine ≥ ``similar_cos``; it
differs from ``similar_fraction`` by the split children with ``child_cos ≤ cos < similar_cos``). The
reference numbers are in the metrics as ``reference.leask2025_*``.

Within a split family (parent i, children C), two claims are tested:

- the parent's direction lies in the span of its children's: least squares
  ``w* = argmin_w ||W_i - Σ_{c∈C} w_c W'_c||²``; ``R² = 1 - ||W_i - Σ w*_c W'_c||² / ||W_i||²``
  and the cosine of the reconstruction (= √R² for a least-squares projection);
- the parent's activation is the union of its children's:
  ``jaccard = |F_i ∩ U| / |F_i ∪ U|`` with ``U = ∪_{c∈C} F_c``; also ``coverage = |F_i ∩ U| / |F_i|``
  (how much of the parent the children cover) and ``precision = |F_i ∩ U| / |U|``.

Nulls (every statistic has one, as ``<name>_null``):

- *Decoder matching*: the larger dictionary rotated by one Haar-random orthogonal matrix
  ``W' R``. A rotation keeps everything internal to the larger dictionary (its Gram matrix:
  norms, clustering, how many near-duplicates it has) and destroys only its relation to the
  smaller one, which is exactly what the matching claims. (It also removes any shared anisotropy
  with the smaller dictionary, so it understates chance for anisotropic dictionaries: read it as
  a floor, and the real-vs-null gap as an upper bound on "how far above chance".)
- *Activation matching*: the token rows of the larger SAE's codes permuted once, ``B[π]``. Every
  larger feature keeps its exact activation distribution and its co-activations with the other
  larger features; only the token-level correspondence with the smaller SAE is broken: the null
  hypothesis "the two SAEs' features are independent as functions of the token".
- *Class fractions, families, agreement*: the whole classification rerun on (``W' R``, ``B[π]``).
- *Span R²*: the rotation null would be vacuous: children are *selected* for ``cos ≥ child_cos``
  with the parent, so ``R² ≥ max_c cos²`` by construction. The null therefore keeps each child's
  cosine to the parent and draws the rest of each child at random (``c_j = cos_j·p + sin_j·u_j``,
  ``u_j`` uniform on the sphere orthogonal to ``p``): it answers "do the children's private parts
  combine to give the parent, beyond what their individual alignment implies?". For nearly
  orthogonal ``u_j`` its value is ≈ ``S / (1 + S)`` with ``S = Σ cos²/(1 - cos²)``; a parent that is
  exactly a combination of its children gives 1. ``parent_span_r2_best_child_mean`` (= max cos²) is
  reported too, the baseline of reconstructing from the single best child.
- *Union statistics*: the same families evaluated on the row-permuted larger codes ``B[π]``.
  Caveat: children were selected on containment (a child-side precision), so ``precision`` is
  partly guaranteed by selection; ``coverage`` (parent-side recall) is not, and is the real test.

Memory stays bounded on the real study (sizes up to 18432, N ≈ 100k tokens): the cosine matrix is
formed ``decoder_chunk`` rows of the larger dictionary at a time (``[chunk, n]``), and the activation
cross-products ``A^T B[:, J]`` are sparse products over ``activation_chunk`` columns ``J`` at a time;
no dense ``[N, n]`` code matrix is ever formed.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
from scipy import sparse
from tqdm import tqdm

from saeatlas.analysis.config import config_from_section
from saeatlas.analysis.output import AnalysisOutput

# Reference numbers of Leask et al. 2025 (see the module docstring).
LEASK2025_SIMILAR_FRACTION = 0.65
LEASK2025_NOVEL_FRACTION = 0.35

CLASSES = ("rare", "identical", "split_child", "other_similar", "novel")
# Edges of the split tree name the relation: a split child hangs on a "split" edge; every other
# linked feature's edge is named after its class (a lone link with cos < similar_cos is "novel").
EDGE_KINDS = {"split_child": "split"}
RARE, IDENTICAL, SPLIT, OTHER, NOVEL = range(5)
TREE_FORMAT = "saeatlas.split_tree/1"


@dataclass(frozen=True)
class SplittingConfig:
    """Thresholds of the splitting analysis (params.yaml section ``splitting:``)."""

    # cos² ≥ 0.81: the two directions share ≥ 81% of their squared norm; in d = 576 the best
    # cosine of a random direction among 9216 random ones is ≈ 0.16, so 0.9 is a near-copy.
    identical_cos: float = 0.9
    # Leask et al.'s cut between similar and novel latents (max decoder cosine to the smaller
    # SAE): cos² ≥ 0.49 ≈ 1/2, at least about half of the direction is shared; keeps
    # novel_fraction / similar_fraction comparable with their 35% / 65%.
    similar_cos: float = 0.7
    # A split child needs cos ≥ 0.5 with its parent (cos² ≥ 1/4) *and* nested firing (below):
    # the children of a K-way split into orthogonal parts have cos = 1/√K (0.71, 0.58, 0.5 for
    # K = 2, 3, 4), so 0.7 would miss most splits into more than two; chance is ≈ 0.16 in d = 576.
    child_cos: float = 0.5
    # A child is a refinement of its parent: more than half of its firings must be parent firings
    # (majority rule). Chance level is the parent's firing rate, ≈ k / n ≈ 3% at n = 1152, k = 32.
    child_min_containment: float = 0.5
    # Two children make a split; a single linked feature is a continuation (identical) or a drift.
    min_children: int = 2
    # Pearson r ≥ 0.8 ⇔ r² ≥ 0.64: most of the activation variance is shared; the activation
    # analogue of identical_cos, a little lower because TopK's firing threshold differs between
    # sizes (a continuation loses the tokens where it narrowly misses the top k).
    identical_corr: float = 0.8
    # Features firing on fewer evaluation tokens are "rare": containment and correlation estimated
    # from < 10 tokens are noise (N ≈ 100k tokens, k = 32 gives ≈ 170 firings per latent at 18432).
    min_firings: int = 10
    # Seed of the null's rotation, permutation and random span children.
    null_seed: int = 0
    # Rows of the larger dictionary per block of the cosine matrix: [1024, 9216] float32 = 38 MB.
    decoder_chunk: int = 1024
    # Columns of the larger codes per block of A^T B: [9216, 512] float64 = 38 MB (×~3 transient).
    activation_chunk: int = 512
    # Split trees (roots at any size) drawn in the interactive icicle, largest first; the JSON
    # document always holds the whole forest.
    max_tree_roots: int = 200

    def __post_init__(self) -> None:
        if not 0.0 < self.child_cos <= self.similar_cos <= self.identical_cos <= 1.0:
            raise ValueError("need 0 < child_cos <= similar_cos <= identical_cos <= 1, got "
                             f"{self.child_cos}, {self.similar_cos}, {self.identical_cos}")
        if not 0.0 <= self.child_min_containment <= 1.0:
            raise ValueError(f"child_min_containment must be in [0, 1], got {self.child_min_containment}")
        if not -1.0 <= self.identical_corr <= 1.0:
            raise ValueError(f"identical_corr must be in [-1, 1], got {self.identical_corr}")
        if self.min_children < 2:
            raise ValueError(f"min_children must be >= 2, got {self.min_children}")
        for name in ("min_firings", "decoder_chunk", "activation_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_tree_roots < 0:
            raise ValueError(f"max_tree_roots must be >= 0, got {self.max_tree_roots}")

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> "SplittingConfig":
        """From params.yaml's ``splitting:`` section (missing keys take the defaults)."""
        return config_from_section(cls, section, "splitting")


@dataclass
class SplittingInputs:
    """Plain arrays: decoders (rows of any norm) and codes on the same N tokens for every size."""

    sizes: tuple[int, ...]
    decoders: dict[int, np.ndarray]  # size -> [size, d]
    codes: dict[int, sparse.csr_matrix]  # size -> [N, size] activations

    def validate(self) -> None:
        sizes = tuple(int(s) for s in self.sizes)
        if len(sizes) < 2 or any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"sizes must be >= 2 strictly ascending dictionary sizes, got {sizes}")
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


# ------------------------------------------------------------------------------------------
# Pieces (pure functions, tested on hand-built inputs)
# ------------------------------------------------------------------------------------------


def unit_rows(w: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (float32); all-zero rows stay zero (cosine 0 with everything)."""
    w = np.asarray(w, dtype=np.float32)
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    return np.divide(w, norms, out=np.zeros_like(w), where=norms > 0)


def random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed orthogonal [d, d] matrix: QR of a Gaussian matrix with the signs of
    R's diagonal moved into Q (without that fix the distribution is not uniform; Mezzadri 2007)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def best_decoder_matches(small: np.ndarray, large: np.ndarray, chunk: int = 1024, progress: bool = False,
                         desc: str = "decoder cosines") -> tuple[np.ndarray, np.ndarray]:
    """For each row j of ``large`` [m, d]: ``argmax_i cos(large_j, small_i)`` and that cosine.

    Rows are normalised here; the [m, n] cosine matrix is formed ``chunk`` rows at a time, so
    memory is O(chunk · n) whatever m. Signed cosine: TopK activations are non-negative, so a
    feature and its negation are different features.
    """
    small_u, large_u = unit_rows(small), unit_rows(large)
    m = large_u.shape[0]
    idx = np.empty(m, dtype=np.int64)
    cos = np.empty(m, dtype=np.float64)
    for a in tqdm(range(0, m, chunk), desc=desc, disable=not progress, mininterval=5, leave=False):
        sims = large_u[a:a + chunk] @ small_u.T  # [chunk, n]: cos_{ji} = <ŵ'_j, ŵ_i>
        best = sims.argmax(axis=1)
        idx[a:a + chunk] = best
        cos[a:a + chunk] = sims[np.arange(len(best)), best]
    return idx, cos


def firing_binary(codes: sparse.spmatrix) -> sparse.csc_matrix:
    """1 where a feature fires (activation > 0), as a CSC matrix (column = feature)."""
    b = sparse.csc_matrix(codes, dtype=np.float64, copy=True)
    b.data = (b.data > 0).astype(np.float64)
    b.eliminate_zeros()
    return b


@dataclass
class ActivationMatch:
    """Per larger feature j: best smaller match by Pearson correlation, and its statistics with a
    given (decoder) parent."""

    best: np.ndarray  # int64 [m]: argmax_i corr(a_i, b_j); -1 for a constant (never firing) j
    best_corr: np.ndarray  # float64 [m]
    corr_with_parent: np.ndarray  # float64 [m]: corr(a_{parent_j}, b_j)
    cofirings_with_parent: np.ndarray  # int64 [m]: |F_j ∩ F_{parent_j}|


def activation_matches(a: sparse.spmatrix, b: sparse.spmatrix, parents: np.ndarray, chunk: int = 512,
                       progress: bool = False, desc: str = "activation correlations") -> ActivationMatch:
    """Pearson correlations between every column of ``a`` [N, n] and of ``b`` [N, m], in blocks of
    ``chunk`` columns of ``b``, from sums only (never a dense [N, ·] matrix):

        C = Aᵀ B_J (sparse product),  S_i = Σ_t a_ti,  Q_i = Σ_t a_ti²  (and T, R for B)
        corr_ij = (C_ij − S_i T_j / N) / √((Q_i − S_i²/N)(R_j − T_j²/N))

    A feature with zero variance (never fires) gets correlation 0 with everything.
    """
    a = sparse.csr_matrix(a, dtype=np.float64)
    b_csc = sparse.csc_matrix(b, dtype=np.float64)
    n_tok, n = a.shape
    m = b_csc.shape[1]
    parents = np.asarray(parents, dtype=np.int64)
    s_a = np.asarray(a.sum(axis=0)).ravel()
    q_a = np.asarray(a.multiply(a).sum(axis=0)).ravel()
    s_b = np.asarray(b_csc.sum(axis=0)).ravel()
    q_b = np.asarray(b_csc.multiply(b_csc).sum(axis=0)).ravel()
    var_a = np.maximum(q_a - s_a * s_a / n_tok, 0.0)
    var_b = np.maximum(q_b - s_b * s_b / n_tok, 0.0)
    # 1/σ, with 0 for constant features so that their correlations come out 0 (not NaN).
    inv_a = np.divide(1.0, np.sqrt(var_a), out=np.zeros(n), where=var_a > 1e-12 * np.maximum(q_a, 1e-300))
    inv_b = np.divide(1.0, np.sqrt(var_b), out=np.zeros(m), where=var_b > 1e-12 * np.maximum(q_b, 1e-300))
    a_t = a.T.tocsr()  # [n, N]
    a_bin, b_bin = firing_binary(a), firing_binary(b_csc)

    out = ActivationMatch(np.full(m, -1, dtype=np.int64), np.zeros(m), np.zeros(m), np.zeros(m, dtype=np.int64))
    for start in tqdm(range(0, m, chunk), desc=desc, disable=not progress, mininterval=5, leave=False):
        stop = min(start + chunk, m)
        cols = np.arange(stop - start)
        corr = (a_t @ b_csc[:, start:stop]).toarray()  # C = Aᵀ B_J, [n, |J|]
        corr -= np.outer(s_a, s_b[start:stop] / n_tok)  # C − S Tᵀ / N   (= N · covariance)
        corr *= inv_a[:, None]
        corr *= inv_b[None, start:stop]
        best = corr.argmax(axis=0)
        alive = inv_b[start:stop] > 0
        out.best[start:stop] = np.where(alive, best, -1)
        out.best_corr[start:stop] = np.where(alive, corr[best, cols], 0.0)
        out.corr_with_parent[start:stop] = corr[parents[start:stop], cols]
        # |F_j ∩ F_{p_j}|: elementwise product of the matching binary columns.
        both = a_bin[:, parents[start:stop]].multiply(b_bin[:, start:stop])
        out.cofirings_with_parent[start:stop] = np.asarray(both.sum(axis=0)).ravel().round().astype(np.int64)
    return out


def span_r2(parent: np.ndarray, children: np.ndarray) -> tuple[float, float]:
    """Least-squares reconstruction of ``parent`` [d] from the rows of ``children`` [K, d]:
    ``w* = argmin ||p − Cᵀw||²``; returns ``(R², cos)`` with ``R² = 1 − ||p − Cᵀw*||²/||p||²`` and
    ``cos = cos(p, Cᵀw*)`` (= √R² since Cᵀw* is the orthogonal projection of p)."""
    p = np.asarray(parent, dtype=np.float64)
    c = np.asarray(children, dtype=np.float64)
    w, *_ = np.linalg.lstsq(c.T, p, rcond=None)
    recon = c.T @ w
    pp = float(p @ p)
    if pp == 0.0:
        return 0.0, 0.0
    r2 = 1.0 - float((p - recon) @ (p - recon)) / pp
    rn = float(np.linalg.norm(recon))
    cos = float(recon @ p) / (rn * math.sqrt(pp)) if rn > 0 else 0.0
    return max(r2, 0.0), cos


def span_r2_null(parent: np.ndarray, cosines: np.ndarray, rng: np.random.Generator) -> float:
    """The selection-conditioned null of ``span_r2``: K random children with the observed
    cosines to the parent, ``c_j = cos_j p̂ + √(1 − cos_j²) u_j``, ``u_j`` uniform on the unit
    sphere of p̂'s orthogonal complement (one draw)."""
    p = np.asarray(parent, dtype=np.float64)
    p = p / np.linalg.norm(p)
    cos = np.clip(np.asarray(cosines, dtype=np.float64), -1.0, 1.0)
    u = rng.standard_normal((len(cos), len(p)))
    u -= np.outer(u @ p, p)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    children = cos[:, None] * p[None, :] + np.sqrt(1.0 - cos * cos)[:, None] * u
    return span_r2(p, children)[0]


def union_stats(parent_fire: sparse.csc_matrix, child_fire: sparse.csc_matrix, parents: np.ndarray,
                children: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per family f: parent firing set P = F_{parents[f]}, children's union U = ∪_{c ∈ children[f]} F_c;
    ``jaccard = |P∩U|/|P∪U|``, ``coverage = |P∩U|/|P|``, ``precision = |P∩U|/|U|``. Computed for all
    families at once with sparse products (U = 1[B_bin M > 0] with a child→family membership M)."""
    n_fam = len(parents)
    if n_fam == 0:
        return {k: np.zeros(0) for k in ("jaccard", "coverage", "precision", "parent_size", "union_size")}
    lens = np.array([len(c) for c in children])
    rows = np.concatenate(children).astype(np.int64)
    member = sparse.csr_matrix((np.ones(len(rows)), (rows, np.repeat(np.arange(n_fam), lens))),
                               shape=(child_fire.shape[1], n_fam))
    union = sparse.csc_matrix(child_fire @ member)
    union.data = (union.data > 0).astype(np.float64)
    union.eliminate_zeros()
    par = parent_fire[:, np.asarray(parents, dtype=np.int64)]
    inter = np.asarray(union.multiply(par).sum(axis=0)).ravel()
    size_u = np.asarray(union.sum(axis=0)).ravel()
    size_p = np.asarray(par.sum(axis=0)).ravel()
    denom = size_u + size_p - inter
    return {
        "jaccard": np.divide(inter, denom, out=np.zeros(n_fam), where=denom > 0),
        "coverage": np.divide(inter, size_p, out=np.zeros(n_fam), where=size_p > 0),
        "precision": np.divide(inter, size_u, out=np.zeros(n_fam), where=size_u > 0),
        "parent_size": size_p,
        "union_size": size_u,
    }


@dataclass
class Classification:
    classes: np.ndarray  # int8 [m], indices into CLASSES
    linked: np.ndarray  # bool [m]
    families: dict[int, np.ndarray]  # parent -> children (sorted by decreasing cosine)


def classify(dec_parent: np.ndarray, dec_cos: np.ndarray, containment: np.ndarray, firings: np.ndarray,
             n_small: int, config: SplittingConfig) -> Classification:
    """The classes of the module docstring, from the decoder match, the containment in the
    decoder parent, and the firing counts of the larger features."""
    alive = firings >= config.min_firings
    linked = alive & (dec_cos >= config.child_cos) & (containment >= config.child_min_containment)
    links = np.bincount(dec_parent[linked], minlength=n_small)  # linked features per parent
    per_parent = links[dec_parent]
    classes = np.full(len(dec_parent), OTHER, dtype=np.int8)
    classes[dec_cos < config.similar_cos] = NOVEL
    classes[linked & (per_parent >= config.min_children)] = SPLIT
    classes[linked & (per_parent == 1) & (dec_cos >= config.identical_cos)] = IDENTICAL
    classes[~alive] = RARE
    grouped: dict[int, list[int]] = defaultdict(list)
    for j in np.flatnonzero(classes == SPLIT):
        grouped[int(dec_parent[j])].append(int(j))
    families = {}
    for parent in sorted(grouped):
        kids = np.asarray(grouped[parent], dtype=np.int64)
        families[parent] = kids[np.argsort(-dec_cos[kids], kind="stable")]
    return Classification(classes, linked, families)


# ------------------------------------------------------------------------------------------
# One pair of sizes
# ------------------------------------------------------------------------------------------


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
    children_counts: Counter


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def _pair(config: SplittingConfig, small: int, large: int, dec_s: np.ndarray, dec_l: np.ndarray,
          codes_s: sparse.csr_matrix, codes_l: sparse.csr_matrix, rng: np.random.Generator,
          progress: bool) -> PairResult:
    tag = f"{small}->{large}"
    n_tok = codes_s.shape[0]
    fire_s, fire_l = firing_binary(codes_s), firing_binary(codes_l)
    firings_s = np.asarray(fire_s.sum(axis=0)).ravel().round().astype(np.int64)
    firings_l = np.asarray(fire_l.sum(axis=0)).ravel().round().astype(np.int64)

    # Real matching.
    dec_parent, dec_cos = best_decoder_matches(dec_s, dec_l, config.decoder_chunk, progress, f"cos {tag}")
    act = activation_matches(codes_s, codes_l, dec_parent, config.activation_chunk, progress, f"corr {tag}")
    containment = np.divide(act.cofirings_with_parent, firings_l, out=np.zeros(large), where=firings_l > 0)
    cls = classify(dec_parent, dec_cos, containment, firings_l, small, config)

    # Null: rotated larger dictionary and row-permuted larger codes (see the module docstring).
    rotation = random_rotation(dec_l.shape[1], rng)
    perm = rng.permutation(n_tok)
    codes_l_null = sparse.csr_matrix(codes_l)[perm]
    fire_l_null = firing_binary(codes_l_null)
    null_parent, null_cos = best_decoder_matches(dec_s, unit_rows(dec_l) @ rotation.astype(np.float32),
                                                 config.decoder_chunk, progress, f"cos {tag} null")
    act_null = activation_matches(codes_s, codes_l_null, null_parent, config.activation_chunk, progress,
                                  f"corr {tag} null")
    containment_null = np.divide(act_null.cofirings_with_parent, firings_l, out=np.zeros(large),
                                 where=firings_l > 0)
    cls_null = classify(null_parent, null_cos, containment_null, firings_l, small, config)

    alive = firings_l >= config.min_firings
    n_alive = int(alive.sum())
    alive_s = firings_s >= config.min_firings
    p = f"pair_{small}_{large}."
    met: dict[str, float] = {
        p + "n_small": small, p + "n_large": large, p + "n_tokens": n_tok, p + "n_large_alive": n_alive,
        p + "rare_fraction": float(1.0 - n_alive / large),
    }

    def fractions(c: Classification, suffix: str) -> None:
        for code, name in ((IDENTICAL, "identical"), (SPLIT, "split_child"), (OTHER, "other_similar"),
                           (NOVEL, "novel")):
            met[p + f"{name}_fraction{suffix}"] = float((c.classes == code).sum() / max(n_alive, 1))
        met[p + f"similar_fraction{suffix}"] = float(
            np.isin(c.classes, (IDENTICAL, SPLIT, OTHER)).sum() / max(n_alive, 1))
        met[p + f"families{suffix}"] = len(c.families)

    fractions(cls, "")
    fractions(cls_null, "_null")
    met[p + "small_split_fraction"] = float(len(cls.families) / max(int(alive_s.sum()), 1))
    met[p + "small_continued_fraction"] = float(
        len(set(dec_parent[cls.classes == IDENTICAL].tolist())) / max(int(alive_s.sum()), 1))
    met[p + "best_cos_mean"] = _mean(dec_cos[alive])
    met[p + "best_cos_mean_null"] = _mean(null_cos[alive])
    met[p + "best_corr_mean"] = _mean(act.best_corr[alive])
    met[p + "best_corr_mean_null"] = _mean(act_null.best_corr[alive])
    met[p + "act_identical_fraction"] = float((act.best_corr[alive] >= config.identical_corr).sum() / max(n_alive, 1))
    met[p + "act_identical_fraction_null"] = float(
        (act_null.best_corr[alive] >= config.identical_corr).sum() / max(n_alive, 1))
    met[p + "match_agreement"] = _mean((dec_parent == act.best)[alive].astype(float))
    met[p + "match_agreement_null"] = _mean((null_parent == act_null.best)[alive].astype(float))
    met[p + "cos_similar_fraction"] = float((dec_cos[alive] >= config.similar_cos).sum() / max(n_alive, 1))
    met[p + "cos_similar_fraction_null"] = float((null_cos[alive] >= config.similar_cos).sum() / max(n_alive, 1))
    similar = alive & (dec_cos >= config.similar_cos)
    if similar.any():
        met[p + "match_agreement_similar"] = _mean((dec_parent == act.best)[similar].astype(float))

    # Split families: span of the children's directions, union of their firing sets.
    parents = np.fromiter(cls.families, dtype=np.int64, count=len(cls.families))
    kids = list(cls.families.values())
    small_u, large_u = unit_rows(dec_s), unit_rows(dec_l)
    union = union_stats(fire_s, fire_l, parents, kids)
    union_null = union_stats(fire_s, fire_l_null, parents, kids)
    rows: list[dict[str, Any]] = []
    r2s, r2_null, r2_best, span_cos = [], [], [], []
    children_counts: Counter = Counter()
    for f, (parent, ch) in enumerate(zip(parents, kids)):
        r2, cos_recon = span_r2(small_u[parent], large_u[ch])
        r2n = span_r2_null(small_u[parent], dec_cos[ch], rng)
        best = float(np.max(dec_cos[ch]) ** 2)
        r2s.append(r2)
        r2_null.append(r2n)
        r2_best.append(best)
        span_cos.append(cos_recon)
        children_counts[len(ch)] += 1
        rows.append({
            "pair": tag, "small_size": small, "large_size": large, "parent": int(parent),
            "children": " ".join(str(int(c)) for c in ch), "n_children": len(ch),
            "child_cos": " ".join(f"{dec_cos[c]:.4f}" for c in ch),
            "child_containment": " ".join(f"{containment[c]:.4f}" for c in ch),
            "child_corr": " ".join(f"{act.corr_with_parent[c]:.4f}" for c in ch),
            "parent_firings": int(firings_s[parent]),
            "children_firings": " ".join(str(int(firings_l[c])) for c in ch),
            "span_r2": r2, "span_cos": cos_recon, "span_r2_null": r2n, "span_r2_best_child": best,
            "union_jaccard": float(union["jaccard"][f]), "union_coverage": float(union["coverage"][f]),
            "union_precision": float(union["precision"][f]),
            "union_jaccard_null": float(union_null["jaccard"][f]),
            "union_coverage_null": float(union_null["coverage"][f]),
        })
    if rows:
        sizes_arr = np.array([len(c) for c in kids])
        met[p + "mean_children_per_parent"] = float(sizes_arr.mean())
        met[p + "max_children_per_parent"] = int(sizes_arr.max())
        met[p + "parent_span_r2_mean"] = _mean(np.array(r2s))
        met[p + "parent_span_r2_mean_null"] = _mean(np.array(r2_null))
        met[p + "parent_span_r2_best_child_mean"] = _mean(np.array(r2_best))
        met[p + "parent_span_cos_mean"] = _mean(np.array(span_cos))
        for key in ("jaccard", "coverage", "precision"):
            met[p + f"union_{key}_mean"] = _mean(union[key])
            met[p + f"union_{key}_mean_null"] = _mean(union_null[key])
    for kcount in (2, 3):
        met[p + f"families_{kcount}_children"] = children_counts.get(kcount, 0)
    met[p + "families_4plus_children"] = sum(v for k, v in children_counts.items() if k >= 4)

    matches = [{
        "pair": tag, "small_size": small, "large_size": large, "feature": j, "firings": int(firings_l[j]),
        "class": CLASSES[cls.classes[j]], "dec_parent": int(dec_parent[j]), "dec_cos": float(dec_cos[j]),
        "act_parent": int(act.best[j]), "act_corr": float(act.best_corr[j]),
        "containment": float(containment[j]), "corr_with_dec_parent": float(act.corr_with_parent[j]),
    } for j in range(large)]
    edges = [{
        "source": f"{small}:{int(dec_parent[j])}", "target": f"{large}:{int(j)}", "kind": EDGE_KINDS.get(CLASSES[int(cls.classes[j])], CLASSES[int(cls.classes[j])]),
        "cos": round(float(dec_cos[j]), 5), "containment": round(float(containment[j]), 5),
        "corr": round(float(act.corr_with_parent[j]), 5),
    } for j in np.flatnonzero(cls.linked)]
    hist = {"cos": dec_cos[alive], "cos_null": null_cos[alive], "corr": act.best_corr[alive],
            "corr_null": act_null.best_corr[alive]}
    return PairResult(small, large, met, rows, matches, edges, cls.classes, firings_s, firings_l, hist,
                      children_counts)


# ------------------------------------------------------------------------------------------
# Tree document, figures
# ------------------------------------------------------------------------------------------


def _tree_document(config: SplittingConfig, sizes: tuple[int, ...], pairs: list[PairResult]) -> dict[str, Any]:
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


def _icicle(doc: dict[str, Any], max_roots: int) -> dict[str, Any]:
    """The split forest as a Plotly icicle: the ``max_roots`` largest trees (by node count)."""
    import plotly.graph_objects as go

    children: dict[str, list[str]] = defaultdict(list)
    incoming: dict[str, dict[str, Any]] = {}
    for e in doc["edges"]:
        children[e["source"]].append(e["target"])
        incoming[e["target"]] = e
    node_info = {n["id"]: n for n in doc["nodes"]}

    def count(node: str) -> int:
        return 1 + sum(count(c) for c in children.get(node, ()))

    roots = [n["id"] for n in doc["nodes"] if n["id"] not in incoming]
    roots.sort(key=lambda r: (-count(r), tuple(int(x) for x in r.split(":"))))
    ids, labels, parents, custom = ["all"], ["split forest"], [""], [["", "", "", ""]]
    stack = [(r, "all") for r in reversed(roots[:max_roots])]
    while stack:
        node, parent = stack.pop()
        info, edge = node_info[node], incoming.get(node)
        ids.append(node)
        labels.append(node)
        parents.append(parent)
        custom.append([info["class"], info["firings"], "" if edge is None else f"{edge['cos']:.3f}",
                       "" if edge is None else f"{edge['containment']:.3f}"])
        stack.extend((c, node) for c in reversed(children.get(node, ())))
    fig = go.Figure(go.Icicle(
        ids=ids, labels=labels, parents=parents, customdata=custom, maxdepth=4,
        hovertemplate=("%{label}<br>class: %{customdata[0]}<br>firings: %{customdata[1]}"
                       "<br>cos to parent: %{customdata[2]}<br>containment: %{customdata[3]}<extra></extra>"),
    ))
    fig.update_layout(title=f"Split forest across sizes {doc['sizes']} (the {min(len(roots), max_roots)} "
                            f"largest of {len(roots)} trees; node = size:feature)",
                      margin={"t": 50, "l": 5, "r": 5, "b": 5})
    return fig.to_plotly_json()


def _match_figure(pairs: list[PairResult], config: SplittingConfig) -> Any:
    """Best-match decoder cosine and activation correlation per pair, real vs null."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(pairs), 5.6), layout="constrained")
    axes = fig.subplots(2, len(pairs), squeeze=False)
    bins = np.linspace(-0.2, 1.0, 49)
    for col, pr in enumerate(pairs):
        for row, (key, label, cut) in enumerate((("cos", "best decoder cosine", config.similar_cos),
                                                 ("corr", "best activation correlation", config.identical_corr))):
            ax = axes[row, col]
            ax.hist(np.clip(pr.hist[key], -0.2, 1.0), bins=bins, alpha=0.7, label="real")
            ax.hist(np.clip(pr.hist[key + "_null"], -0.2, 1.0), bins=bins, alpha=0.7, label="null")
            ax.axvline(cut, color="k", lw=0.8, ls="--")
            ax.set_xlabel(label)
            if row == 0:
                ax.set_title(f"{pr.small} → {pr.large}")
            if col == 0:
                ax.set_ylabel("larger-SAE features")
                ax.legend(fontsize=7)
    return fig


def _summary_figure(pairs: list[PairResult]) -> Any:
    """Class fractions per pair (real, with Leask et al.'s similar fraction) and children per parent."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    x = np.arange(len(pairs))
    bottom = np.zeros(len(pairs))
    for name in ("identical", "split_child", "other_similar", "novel"):
        vals = np.array([pr.metrics[f"pair_{pr.small}_{pr.large}.{name}_fraction"] for pr in pairs])
        ax.bar(x, vals, bottom=bottom, label=name)
        bottom += vals
    ax.axhline(LEASK2025_SIMILAR_FRACTION, color="k", ls="--", lw=0.8, label="Leask et al. 2025: similar")
    ax.set_xticks(x, [f"{pr.small}→{pr.large}" for pr in pairs], rotation=30)
    ax.set_ylabel("fraction of larger-SAE features")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    kmax = max([max(pr.children_counts, default=2) for pr in pairs] + [2])
    ks = np.arange(2, kmax + 1)
    width = 0.8 / len(pairs)
    for i, pr in enumerate(pairs):
        ax2.bar(ks + i * width - 0.4 + width / 2, [pr.children_counts.get(int(k), 0) for k in ks], width,
                label=f"{pr.small}→{pr.large}")
    ax2.set_xlabel("children per split parent")
    ax2.set_ylabel("families")
    ax2.set_yscale("symlog", linthresh=1)
    ax2.legend(fontsize=7)
    return fig


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------

MEAN_KEYS = ("identical_fraction", "split_child_fraction", "other_similar_fraction", "novel_fraction",
             "similar_fraction", "cos_similar_fraction", "families", "match_agreement", "best_cos_mean", "best_corr_mean",
             "act_identical_fraction", "mean_children_per_parent", "parent_span_r2_mean",
             "parent_span_r2_best_child_mean", "union_jaccard_mean", "union_coverage_mean",
             "union_precision_mean")


def run(config: SplittingConfig, inputs: SplittingInputs, *, progress: bool = True) -> AnalysisOutput:
    """Match, classify and build split families for every adjacent pair of sizes.

    Metrics: ``pair_<s>_<s'>.<name>`` and ``<name>_null`` beside it; ``mean.<name>`` averaged over
    the pairs that define it (span and union statistics are absent for a pair with no family:
    they are undefined, and JSON has no NaN); ``reference.leask2025_*``. Tables ``split_families``,
    ``matches`` (one row per larger feature and pair), ``children_per_parent``. Document
    ``split_tree``; figures ``splitting_matches`` and ``splitting_classes``; interactive
    ``split_tree`` (Plotly icicle).
    """
    inputs.validate()
    sizes = tuple(int(s) for s in inputs.sizes)
    rng = np.random.default_rng(config.null_seed)
    codes = {s: sparse.csr_matrix(inputs.codes[s]) for s in sizes}
    pairs = [_pair(config, s, t, np.asarray(inputs.decoders[s]), np.asarray(inputs.decoders[t]), codes[s],
                   codes[t], rng, progress) for s, t in zip(sizes, sizes[1:])]

    metrics: dict[str, float] = {}
    for pr in pairs:
        metrics.update(pr.metrics)
    for key in MEAN_KEYS:
        for name in (key, key + "_null"):
            vals = [pr.metrics[f"pair_{pr.small}_{pr.large}.{name}"] for pr in pairs
                    if f"pair_{pr.small}_{pr.large}.{name}" in pr.metrics]
            if vals:
                metrics[f"mean.{name}"] = float(np.mean(vals))
    metrics["reference.leask2025_similar_fraction"] = LEASK2025_SIMILAR_FRACTION
    metrics["reference.leask2025_novel_fraction"] = LEASK2025_NOVEL_FRACTION
    metrics = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}

    doc = _tree_document(config, sizes, pairs)
    children_table = [{"pair": f"{pr.small}->{pr.large}", "n_children": k, "families": v}
                      for pr in pairs for k, v in sorted(pr.children_counts.items())]
    return AnalysisOutput(
        metrics=metrics,
        tables={"split_families": [r for pr in pairs for r in pr.families],
                "matches": [r for pr in pairs for r in pr.matches],
                "children_per_parent": children_table},
        figures={"splitting_matches": _match_figure(pairs, config), "splitting_classes": _summary_figure(pairs)},
        interactive={"split_tree": _icicle(doc, config.max_tree_roots)},
        documents={"split_tree": doc},
    )
