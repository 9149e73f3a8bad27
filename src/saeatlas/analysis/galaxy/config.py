"""Settings of the galaxy analysis (params.yaml section ``galaxy:``): the only home of their
defaults and bounds (the schema section is generated from these fields)."""

from __future__ import annotations

from dataclasses import dataclass

from saeatlas.analysis.common.config import AnalysisConfig, count, param, seed


@dataclass(frozen=True)
class GalaxyConfig(AnalysisConfig, section="galaxy",
                        summary="Eigenvalue spectrum and clustering negentropy of the decoder cloud, vs an isotropic "
                        "Gaussian and the activations (analysis/galaxy/)."):
    """Settings of the galaxy analysis (params.yaml section ``galaxy:``, same key names)."""

    # Ranks of the power-law fit (1-based, inclusive). [1, 100] reproduces the paper's Gaussian
    # baseline (α = 0.0295 for an isotropic cloud at n = 16384, d = 2304); at d = 576 it is the
    # top sixth of the spectrum (the paper's window, if it was [1, 100], was the top 4%).
    rank_min: int = count(1, "First rank of the power-law fit window.")
    rank_max: int = param(100, "Last rank of the power-law fit window.", minimum=3)
    # Bootstrap replicates of every CI. The CI is estimate ± z·sd, and 50 replicates pin the sd
    # to about ±10% (relative SE 1/√(2(R-1))). Each replicate recomputes a d x d covariance per
    # cloud: at real scale (five sizes up to 18432, their nulls, 20k activations; 2 shared
    # cores) about 0.6 s per replicate on top of ~14 s for everything else (45 s in all; 200
    # replicates, the paper parameter set, about 2.5 min).
    n_bootstrap: int = param(50, "Bootstrap replicates of every CI.", minimum=0)
    # of every subsample, null sample, reference sample and resample
    seed: int = seed(0, "Seed of every subsample, null sample and resample.")
    # two-sided level of every interval
    ci_level: float = param(0.95, "Level of every interval.", exclusiveMinimum=0, exclusiveMaximum=1)
    # Unit-norm rows (decoders and activations alike): directions, not trainer-dependent norms.
    normalize_rows: bool = param(True, "Unit-norm rows before the covariance.")
    # Centred covariance (the paper's "eigenvalues of the point cloud" is a covariance spectrum).
    center: bool = param(True, "Centred covariance.")
    # k-th neighbour of the entropy estimator: k = 1 is the original Kozachenko-Leonenko; a few
    # neighbours lower the variance (per-point term variance ψ'(k): 1.64 at k = 1, 0.22 at
    # k = 5) at a bias that the same-estimator Gaussian reference cancels.
    knn_k: int = count(5, "Neighbour of the Kozachenko-Leonenko entropy estimator.")
    # Principal components the entropy is computed in (see the package docstring): with
    # n ≥ 10³ points, k-NN entropy stays usable up to D in the low tens.
    entropy_dims: int = count(10, "Principal components the entropy is computed in.")
    # Rows per cloud at most (a seeded subsample beyond): bounds the k-NN pass (O(n² D)) and
    # the covariance (O(n d²)); the default keeps every row of the real study (≤ 18432
    # features, a 20k activation sample). The minimum 5 is what ``check`` implies at the
    # smallest window (rank_max = 3, so rank_max + 2 = 5).
    max_points: int = param(20000, "Rows per cloud at most (also the activation sample drawn from the held-out "
                                   "split).", minimum=5)

    def check(self) -> None:
        if self.rank_max < self.rank_min + 2:
            raise ValueError(f"galaxy.rank_max must be >= galaxy.rank_min + 2 (a line through >= 3 ranks), "
                             f"got rank_min = {self.rank_min}, rank_max = {self.rank_max}")
        room = max(self.rank_max + 2, self.entropy_dims + self.knn_k + 2)
        if self.max_points < room:
            raise ValueError(f"galaxy.max_points must leave room for the fit window and the k-NN estimate "
                             f"(>= {room}), got {self.max_points}")
