"""Settings of the neighbourhood and map analysis (params.yaml section ``neighbours:``); the
package docstring explains what each one decides."""

from __future__ import annotations

from dataclasses import dataclass

from saeatlas.analysis.common.config import AnalysisConfig, count, param, seed

METRICS = ("cosine", "euclidean")


@dataclass(frozen=True)
class NeighboursConfig(AnalysisConfig, section="neighbours",
                        summary="Nearest decoder neighbours and UMAP maps (analysis/neighbours/ documents each choice)."):
    """Settings of the neighbourhood and map analysis (params.yaml section ``neighbours:``): the
    package docstring gives the methods, the comment above each value why it has that default."""

    # Neighbours kept per feature: enough to show a neighbourhood as *Scaling Monosemanticity*
    # does (a split family of 2-5 children plus its context), while the table stays n·k rows
    # (184k rows at 18432). Also the k of the map tests (map_parent_in_knn, trustworthiness):
    # one notion of "near" throughout.
    k: int = count(10, "Neighbours kept per feature (also the k of the map tests).")
    # Rows per block of the cosine matrix: a [1024, 18432] float32 block is 75 MB, plus the
    # int64 argpartition result (151 MB); memory O(chunk · n) instead of 1.4 GB for [n, n].
    chunk: int = count(1024, "Rows per block of the cosine matrix (memory bound).")
    # UMAP's default: each point's fuzzy neighbourhood spans ~15 features, wider than a split
    # family, so a family is placed among its context rather than as an isolated island.
    n_neighbors: int = param(15, "UMAP n_neighbors.", minimum=2)
    # UMAP's default: small enough that near-duplicate and sibling features pack tightly
    # (what the cross-size test looks for), large enough to keep the map readable.
    min_dist: float = param(0.1, "UMAP min_dist.", minimum=0, maximum=1)
    # Decoder rows are directions (their norm trades off against the encoder's), so the
    # natural distance is cosine; "euclidean" on the unit rows gives the same neighbour order.
    metric: str = param("cosine", "UMAP metric.", enum=list(METRICS))
    # Seed of UMAP (random_state: deterministic, single-threaded), the isotropic null vectors,
    # the map permutations and the trustworthiness subsample.
    seed: int = seed(0, "Seed of UMAP, the null vectors and the permutations.")
    # Also one UMAP of all sizes stacked (the cross-size map) and the cross-size test on it.
    joint: bool = param(True, "Also one joint UMAP of all sizes and the cross-size test on it.")
    # A larger feature is linked to its best smaller decoder match when cos ≥ 0.7: Leask et
    # al.'s similar/novel cut (cos² ≥ 0.49), the same as splitting.similar_cos.
    match_cos: float = param(0.7, "Decoder cosine linking a larger feature to its best smaller match.",
                             minimum=-1, maximum=1)
    # Permutations of the joint map averaged in the cross-size null: one permutation's fraction
    # has binomial noise √(p(1−p)/L); five cut it by √5 at the cost of five 2-D KD-tree queries.
    null_permutations: int = count(5, "Permutations of the joint map in the cross-size null.")
    # Features subsampled for trustworthiness, which forms dense [m, m] distances in both spaces
    # and argsorts them: m = 2000 is 32 MB per matrix (18432 would be 2.7 GB).
    trust_sample: int = param(2000, "Features subsampled for the UMAP trustworthiness.", minimum=3)

    def check(self) -> None:
        if self.trust_sample <= 2 * self.k:
            # sklearn's trustworthiness needs n_neighbors < m / 2.
            raise ValueError(f"neighbours.trust_sample must be > 2 * k = {2 * self.k}, got {self.trust_sample}")
