"""Thresholds of the splitting analysis (params.yaml section ``splitting:``); the package
docstring explains what each one decides."""

from __future__ import annotations

from dataclasses import dataclass

from saeatlas.analysis.common.config import AnalysisConfig, count, param, seed


@dataclass(frozen=True)
class SplittingConfig(AnalysisConfig, section="splitting",
                        summary="Feature splitting between adjacent dictionary sizes "
                        "(analysis/splitting/__init__.py documents each threshold)."):
    """Thresholds of the splitting analysis (params.yaml section ``splitting:``)."""

    # cos² ≥ 0.81: the two directions share ≥ 81% of their squared norm; in d = 576 the best
    # cosine of a random direction among 9216 random ones is ≈ 0.16, so 0.9 is a near-copy.
    identical_cos: float = param(0.9, "Decoder cosine above which a larger feature is a near-copy of its best match.",
                                 exclusiveMinimum=0, maximum=1)
    # Leask et al.'s cut between similar and novel latents (max decoder cosine to the smaller
    # SAE): cos² ≥ 0.49 ≈ 1/2, at least about half of the direction is shared; keeps
    # novel_fraction / similar_fraction comparable with their 35% / 65%.
    similar_cos: float = param(0.7, "Best decoder cosine below which a larger feature is novel "
                                    "(Leask et al. 2025's cut).", exclusiveMinimum=0, maximum=1)
    # Leask et al.'s published rule, kept apart from similar_cos so that tuning our classes never
    # moves the published-protocol number: a larger latent is reconstruction-like if its best
    # decoder cosine to any smaller latent is ≥ 0.7, otherwise novel, over *all* latents (dead and
    # rare ones included, as they compare whole dictionaries). With the defaults its alive-only
    # count equals cos_similar_fraction.
    leask_cos: float = param(0.7, "Best decoder cosine at or above which a larger latent is reconstruction-like "
                                  "(Leask et al. 2025's published rule).", exclusiveMinimum=0, maximum=1)
    # A split child needs cos ≥ 0.5 with its parent (cos² ≥ 1/4) *and* nested firing (below):
    # the children of a K-way split into orthogonal parts have cos = 1/√K (0.71, 0.58, 0.5 for
    # K = 2, 3, 4), so 0.7 would miss most splits into more than two; chance is ≈ 0.16 in d = 576.
    child_cos: float = param(0.5, "Minimum decoder cosine between a split child and its parent.",
                             exclusiveMinimum=0, maximum=1)
    # A child is a refinement of its parent: more than half of its firings must be parent firings
    # (majority rule). Chance level is the parent's firing rate, ≈ k / n ≈ 3% at n = 1152, k = 32.
    child_min_containment: float = param(0.5, "Minimum share of a child's firings on which its parent also fires.",
                                         minimum=0, maximum=1)
    # Two children make a split; a single linked feature is a continuation (identical) or a drift.
    min_children: int = param(2, "Children needed for a split family.", minimum=2)
    # Pearson r ≥ 0.8 ⇔ r² ≥ 0.64: most of the activation variance is shared; the activation
    # analogue of identical_cos, a little lower because TopK's firing threshold differs between
    # sizes (a continuation loses the tokens where it narrowly misses the top k).
    identical_corr: float = param(0.8, "Activation correlation above which two features count as the same "
                                       "(activation matching).", minimum=-1, maximum=1)
    # Features firing on fewer evaluation tokens are "rare": containment and correlation estimated
    # from < 10 tokens are noise (N ≈ 100k tokens, k = 32 gives ≈ 170 firings per latent at 18432).
    min_firings: int = param(10, "Features firing on fewer evaluation tokens are rare and left out of the fractions.",
                             minimum=1)
    # Seed of the null's rotation, permutation and random span children.
    null_seed: int = seed(0, "Seed of the null (random rotation, token permutation).")
    # Rows of the larger dictionary per block of the cosine matrix: [1024, 9216] float32 = 38 MB.
    decoder_chunk: int = count(1024, "Rows per block of the decoder cosine matrix (memory bound).")
    # Columns of the larger codes per block of A^T B: [9216, 512] float64 = 38 MB (×~3 transient).
    activation_chunk: int = count(512, "Columns per block of the activation correlation (memory bound).")
    # Split trees (roots at any size) drawn in the interactive icicle, largest first; the JSON
    # document always holds the whole forest.
    max_tree_roots: int = param(200, "Split trees drawn in the interactive view (the JSON holds all).", minimum=0)

    def check(self) -> None:
        if not self.child_cos <= self.similar_cos <= self.identical_cos:
            raise ValueError("splitting.child_cos, splitting.similar_cos, splitting.identical_cos: need "
                             f"child_cos <= similar_cos <= identical_cos, got "
                             f"{self.child_cos}, {self.similar_cos}, {self.identical_cos}")
