"""Step 6: adjusted mutual information with fast permutation nulls (every shuffle keeps both
labelings' cluster sizes, so E[MI] is computed once), and the density bins of the matched null."""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from saeatlas.analysis.common.stats import null_summary


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


def density_bins(firings: np.ndarray, bins: int) -> np.ndarray:
    """Quantile bins (0 .. bins−1) of log firing counts; ties share a bin."""
    x = np.log(np.maximum(np.asarray(firings, dtype=np.float64), 1.0))
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, x, side="right").astype(np.int64)


def agreement_metrics(k: int, lobes: np.ndarray, geo: np.ndarray, bins: np.ndarray, n_permutations: int,
                      rng: np.random.Generator) -> dict[str, float]:
    """``k<k>.*``: AMI of the co-occurrence lobes and the geometric clusters against the
    label-shuffle null and the density-matched null (shuffles within density ``bins``), each
    labeling's AMI with the density bins, and the largest cluster's share of each labeling."""
    m = lobes.size
    scorer = AMIScorer(lobes, geo)
    ami = scorer.ami()
    perm = null_summary(ami, scorer.null(n_permutations, rng))
    dens = null_summary(ami, scorer.null(n_permutations, rng, groups=bins))
    p = f"k{k}."
    return {
        p + "ami": ami, p + "ami_null_mean": perm["mean"], p + "ami_null_sd": perm["sd"],
        p + "ami_z": perm["z"], p + "ami_p": perm["p"],
        p + "ami_density_null_mean": dens["mean"], p + "ami_density_null_sd": dens["sd"],
        p + "ami_density_z": dens["z"], p + "ami_density_p": dens["p"],
        p + "ami_lobes_vs_density": AMIScorer(lobes, bins).ami(),
        p + "ami_geom_vs_density": AMIScorer(geo, bins).ami(),
        p + "largest_lobe_fraction": float(np.bincount(lobes).max() / m),
        p + "largest_geom_fraction": float(np.bincount(geo).max() / m),
    }
