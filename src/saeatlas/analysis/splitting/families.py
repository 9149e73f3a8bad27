"""A split family (parent i, children C) tested twice: does the parent's direction lie in the
span of its children's (least squares R², with a selection-conditioned null), and is its firing
set the union of theirs (Jaccard, coverage, precision)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse

from saeatlas.analysis.common.linalg import unit_rows
from saeatlas.analysis.splitting.matching import Matching


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
class Families:
    """The split families of one pair (parent ``parents[f]``, children ``kids[f]``) and both tests
    of each, with their nulls."""

    parents: np.ndarray  # int64 [F]
    kids: list[np.ndarray]  # children of each family, by decreasing cosine
    union: dict[str, np.ndarray]  # union_stats on the real codes
    union_null: dict[str, np.ndarray]  # ... on the row-permuted larger codes
    r2: list[float] = field(default_factory=list)
    r2_null: list[float] = field(default_factory=list)
    r2_best: list[float] = field(default_factory=list)  # max cos² over the children
    span_cos: list[float] = field(default_factory=list)

    @property
    def children_counts(self) -> Counter:
        """Families per number of children."""
        return Counter(len(ch) for ch in self.kids)


def evaluate_families(real: Matching, dec_s: np.ndarray, dec_l: np.ndarray, fire_s: sparse.csc_matrix,
                  fire_l: sparse.csc_matrix, fire_l_null: sparse.csc_matrix, rng: np.random.Generator) -> Families:
    """Span R² (and its null: one draw of ``rng`` per family, in family order) and union
    statistics (real and on the permuted codes) of every family of the real matching."""
    parents = np.fromiter(real.cls.families, dtype=np.int64, count=len(real.cls.families))
    kids = list(real.cls.families.values())
    fam = Families(parents, kids, union_stats(fire_s, fire_l, parents, kids),
                   union_stats(fire_s, fire_l_null, parents, kids))
    small_u, large_u = unit_rows(dec_s), unit_rows(dec_l)
    for parent, ch in zip(parents, kids):
        r2, cos_recon = span_r2(small_u[parent], large_u[ch])
        fam.r2.append(r2)
        fam.r2_null.append(span_r2_null(small_u[parent], real.cos[ch], rng))
        fam.r2_best.append(float(np.max(real.cos[ch]) ** 2))
        fam.span_cos.append(cos_recon)
    return fam


def mean_or_nan(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def family_metrics(prefix: str, fam: Families) -> dict[str, float]:
    """Children per parent, mean span R² and union statistics (real and null; absent without a
    family: undefined), and the family counts by number of children."""
    met: dict[str, float] = {}
    if fam.kids:
        sizes_arr = np.array([len(c) for c in fam.kids])
        met[prefix + "mean_children_per_parent"] = float(sizes_arr.mean())
        met[prefix + "max_children_per_parent"] = int(sizes_arr.max())
        met[prefix + "parent_span_r2_mean"] = mean_or_nan(np.array(fam.r2))
        met[prefix + "parent_span_r2_mean_null"] = mean_or_nan(np.array(fam.r2_null))
        met[prefix + "parent_span_r2_best_child_mean"] = mean_or_nan(np.array(fam.r2_best))
        met[prefix + "parent_span_cos_mean"] = mean_or_nan(np.array(fam.span_cos))
        for key in ("jaccard", "coverage", "precision"):
            met[prefix + f"union_{key}_mean"] = mean_or_nan(fam.union[key])
            met[prefix + f"union_{key}_mean_null"] = mean_or_nan(fam.union_null[key])
    counts = fam.children_counts
    for kcount in (2, 3):
        met[prefix + f"families_{kcount}_children"] = counts.get(kcount, 0)
    met[prefix + "families_4plus_children"] = sum(v for k, v in counts.items() if k >= 4)
    return met


def family_rows(tag: str, small: int, large: int, real: Matching, fam: Families, firings_s: np.ndarray,
                firings_l: np.ndarray) -> list[dict[str, Any]]:
    """One table row per family: its members, their match statistics, both tests and nulls."""
    return [{
        "pair": tag, "small_size": small, "large_size": large, "parent": int(parent),
        "children": " ".join(str(int(c)) for c in ch), "n_children": len(ch),
        "child_cos": " ".join(f"{real.cos[c]:.4f}" for c in ch),
        "child_containment": " ".join(f"{real.containment[c]:.4f}" for c in ch),
        "child_corr": " ".join(f"{real.act.corr_with_parent[c]:.4f}" for c in ch),
        "parent_firings": int(firings_s[parent]),
        "children_firings": " ".join(str(int(firings_l[c])) for c in ch),
        "span_r2": fam.r2[f], "span_cos": fam.span_cos[f], "span_r2_null": fam.r2_null[f],
        "span_r2_best_child": fam.r2_best[f],
        "union_jaccard": float(fam.union["jaccard"][f]), "union_coverage": float(fam.union["coverage"][f]),
        "union_precision": float(fam.union["precision"][f]),
        "union_jaccard_null": float(fam.union_null["jaccard"][f]),
        "union_coverage_null": float(fam.union_null["coverage"][f]),
    } for f, (parent, ch) in enumerate(zip(fam.parents, fam.kids))]
