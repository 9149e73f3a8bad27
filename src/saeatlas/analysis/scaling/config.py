"""Settings of the ``scaling`` analysis (params.yaml section ``scaling:``, same key names)."""

from __future__ import annotations

from dataclasses import dataclass

from saeatlas.analysis.common.config import AnalysisConfig, count, param, seed
from saeatlas.analysis.scaling.concepts import CATEGORIES, available_categories


@dataclass(frozen=True)
class ScalingConfig(AnalysisConfig, section="scaling",
                        summary="Scaling of alive/dead/density with dictionary size, and the feature-completeness "
                        "experiment (analysis/scaling/)."):
    """Settings of the ``scaling`` stage (params.yaml section ``scaling:``, same key names): the
    bootstrap, the criterion of a concept-specific latent, and when a 50% point is reported."""

    # Bootstrap replicates, for both the power-law CIs (over contexts) and the x50 CI (over
    # concepts): ~1000 makes the 2.5%/97.5% tails stable to about +-0.1 sd; costs seconds.
    n_bootstrap: int = param(1000, "Bootstrap replicates (contexts for power laws, concepts for the 50% point).",
                             minimum=0)
    seed: int = seed(0, "Seed of every resample.")  # same seed, same CIs
    ci_level: float = param(0.95, "Level of every reported interval.", exclusiveMinimum=0, exclusiveMaximum=1)
    # A latent is specific to a concept when at least half of its firings are on the
    # concept's tokens (precision) and it fires on at least half of the concept's
    # occurrences (recall): "mostly about the concept" and "mostly there for the concept".
    precision_threshold: float = param(0.5, "Share of a feature's firings that must be on the concept's tokens.",
                                       exclusiveMinimum=0, maximum=1)
    recall_threshold: float = param(0.5, "Share of the concept's occurrences the feature must fire on.",
                                    exclusiveMinimum=0, maximum=1)
    # Concepts with fewer evaluation occurrences are not judged (and are counted): with 5,
    # recall >= 0.5 needs 3 hits, more than a one-off coincidence; fewer would let a single
    # stray firing decide.
    min_eval_occurrences: int = param(5, "Concepts with fewer evaluation occurrences are not judged (and are "
                                         "counted).", minimum=1)
    # The logistic 50% point is reported only with at least this many (concept, size) pairs
    # with a feature *and* without one: with fewer, the curve's location is set by a couple
    # of points (or by the penalty) and would be an invented number.
    min_events: int = count(3, "Pairs with and without a feature needed before a 50% point is reported.")
    # The x50 CI is reported only if at least this fraction of the concept resamples give an
    # estimable x50; otherwise the percentiles would describe a selected subset.
    min_estimable_fraction: float = param(0.9, "Share of resamples that must give a 50% point for its CI to be "
                                               "reported.", exclusiveMinimum=0, maximum=1)
    categories: tuple[str, ...] = param(CATEGORIES, "Shipped concept lists to use.",
                                        items={"enum": list(CATEGORIES)}, minItems=1)
    density_bin_width: float = param(0.25, "Decades per bin of the density histograms.", exclusiveMinimum=0)

    def check(self) -> None:
        unknown = sorted(set(self.categories) - set(available_categories()))
        if unknown:
            raise ValueError(f"scaling.categories: unknown {unknown}; shipped: {available_categories()}")
