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

    # Ranks of the power-law fit (1-based, inclusive): our window, the top sixth of the spectrum
    # at d = 576, where the Marchenko-Pastur bulk matters less than over the paper's 10-150 (the
    # published window below; the package docstring, (3), compares the two).
    rank_min: int = count(1, "First rank of the power-law fit window.")
    rank_max: int = param(100, "Last rank of the power-law fit window.", minimum=3)
    # The published window (Li et al. 2024: ranks 10-150; their notebook slices [10:150], i.e.
    # ranks 11-150, which moves a Gaussian's slope by < 0.001). A second slope over it, with the
    # same bootstrap and null, is reported beside ours (``slope_goc``): it is what their 0.468
    # means. It is not our headline because at d = 576 ranks 10-150 reach a quarter of the
    # spectrum, where the Marchenko-Pastur bulk dominates (a same-n isotropic null reads 0.07 at
    # n = 18432 and 0.24 at n = 1152 over it, vs 0.04 and 0.13 over [1, 100]).
    published_rank_min: int = count(10, "First rank of the published (Li et al. 2024) fit window.")
    published_rank_max: int = param(150, "Last rank of the published (Li et al. 2024) fit window.", minimum=3)
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
    # The published clustering-entropy protocol (Li et al. 2024), beside our negentropy: a
    # subsample of goc_points rows (all rows when fewer), every dimension z-scored, PCA to
    # goc_dims components, Kozachenko-Leonenko k = 1, over goc_repeats subsamples (0 switches it
    # off). The paper drew 30 (params/paper.yaml); 10 by default because each costs ~0.5-0.9 s
    # at real scale (5000 x 576 rows, shared cores), for every cloud larger than goc_points
    # (three in the default study) and the shared null: 30 took the galaxy stage from 56 s to
    # ~3.5 min, 10 adds about half a minute. The repeats only narrow the mean (subsample sd
    # 0.3 nats at n = 18432, so ±0.1 over 10) and the sd's own precision; the mean is unbiased.
    goc_points: int = param(5000, "Rows per subsample of the published clustering-entropy protocol (all rows "
                                  "when fewer).", minimum=3)
    goc_dims: int = count(100, "Principal components of the published clustering-entropy protocol.")
    goc_repeats: int = param(10, "Subsamples of the published clustering-entropy protocol (0: off; the paper "
                                 "drew 30).", minimum=0)
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
        if self.published_rank_max < self.published_rank_min + 2:
            raise ValueError(f"galaxy.published_rank_max must be >= galaxy.published_rank_min + 2, got "
                             f"published_rank_min = {self.published_rank_min}, "
                             f"published_rank_max = {self.published_rank_max}")
        room = max(self.rank_max + 2, self.published_rank_max + 2, self.entropy_dims + self.knn_k + 2)
        if self.max_points < room:
            raise ValueError(f"galaxy.max_points must leave room for the fit window and the k-NN estimate "
                             f"(>= {room}), got {self.max_points}")
