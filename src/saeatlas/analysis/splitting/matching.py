"""Matching the features of a larger SAE to a smaller one, and the classes that follow.

Decoder matches (best cosine) come from ``common.linalg.best_decoder_matches``; here: activation
matches (best Pearson correlation on shared tokens, from sparse sums), firing sets, and the
classification of every larger feature (rare, identical, split_child, other_similar, novel).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from saeatlas.analysis.common.linalg import best_decoder_matches
from saeatlas.progress import bar
from saeatlas.analysis.splitting.config import SplittingConfig

CLASSES = ("rare", "identical", "split_child", "other_similar", "novel")
RARE, IDENTICAL, SPLIT, OTHER, NOVEL = range(5)


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
                       desc: str = "activation correlations") -> ActivationMatch:
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
    for start in bar(range(0, m, chunk), desc=desc):
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



def best_containment(a: sparse.spmatrix, b: sparse.spmatrix, chunk: int = 512,
                     desc: str = "containment") -> tuple[np.ndarray, np.ndarray]:
    """For every column j of ``b`` [N, m]: the column i of ``a`` [N, n] whose firing set holds the
    largest share of j's, ``max_i |F_i ∩ F_j| / |F_j|``, and that i (-1 and 0 for a j that never
    fires). Co-firing counts are sparse products over ``chunk`` columns of ``b`` at a time, as in
    ``activation_matches``: never a dense [N, ·] matrix."""
    a_t = firing_binary(a).T.tocsr()  # [n, N]
    b_bin = firing_binary(b)
    m = b_bin.shape[1]
    fires = np.asarray(b_bin.sum(axis=0)).ravel()
    share, best = np.zeros(m), np.full(m, -1, dtype=np.int64)
    for start in bar(range(0, m, chunk), desc=desc):
        stop = min(start + chunk, m)
        both = (a_t @ b_bin[:, start:stop]).toarray()  # [n, |J|] co-firing counts
        top = both.argmax(axis=0)
        counts = both[top, np.arange(stop - start)]
        fired = fires[start:stop] > 0
        best[start:stop] = np.where(fired, top, -1)
        share[start:stop] = np.divide(counts, fires[start:stop], out=np.zeros(stop - start), where=fired)
    return share, best


@dataclass
class Classification:
    classes: np.ndarray  # int8 [m], indices into CLASSES
    linked: np.ndarray  # bool [m]
    families: dict[int, np.ndarray]  # parent -> children (sorted by decreasing cosine)


def classify(dec_parent: np.ndarray, dec_cos: np.ndarray, containment: np.ndarray, firings: np.ndarray,
             n_small: int, config: SplittingConfig) -> Classification:
    """The classes of the package docstring, from the decoder match, the containment in the
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



@dataclass
class Matching:
    """One matching of a larger SAE to a smaller one: per larger feature j, its decoder parent
    ``p_j`` and cosine, its activation match, its containment in ``p_j`` and its class."""

    parent: np.ndarray  # int64 [m]: argmax_i cos(W'_j, W_i)
    cos: np.ndarray  # float64 [m]
    act: ActivationMatch
    containment: np.ndarray  # float64 [m]: |F_j ∩ F_{p_j}| / |F_j|
    cls: Classification


def match(config: SplittingConfig, dec_s: np.ndarray, dec_l: np.ndarray, codes_s: sparse.spmatrix,
          codes_l: sparse.spmatrix, firings_l: np.ndarray, desc: str) -> Matching:
    """Match every larger feature by decoder direction and by activation, then classify it."""
    parent, cos = best_decoder_matches(dec_s, dec_l, config.decoder_chunk, f"cos {desc}")
    act = activation_matches(codes_s, codes_l, parent, config.activation_chunk, f"corr {desc}")
    containment = np.divide(act.cofirings_with_parent, firings_l, out=np.zeros(dec_l.shape[0]),
                            where=firings_l > 0)
    return Matching(parent, cos, act, containment, classify(parent, cos, containment, firings_l, dec_s.shape[0], config))
