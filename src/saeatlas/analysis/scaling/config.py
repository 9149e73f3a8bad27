"""Settings of the ``scaling`` analysis (params.yaml section ``scaling:``, same key names)."""

from __future__ import annotations

from dataclasses import dataclass

from saeatlas.analysis.common.config import AnalysisConfig, count, param, seed
from saeatlas.analysis.scaling.concepts import CATEGORIES, WordSampling, available_categories


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
    # Whole words drawn from the corpus (concepts.corpus_words): an equal number per half
    # decade of frequency, so the judged set spans the completeness curve (the shipped lists
    # are nearly all too rare to judge on 10^5 evaluation tokens). 60 per band over
    # 10^-4.5..10^-2 gives ~200 words (the top bands hold fewer); the lowest band sits at ~3-10
    # evaluation occurrences, where min_eval_occurrences starts to exclude. Above 10^-2 are
    # only "the" and "and". 0 turns the words off (shipped lists only).
    words_per_band: int = param(60, "Corpus words drawn per frequency band (0: none).", minimum=0)
    words_log10_frequency_min: float = param(-4.5, "Lower edge (log10 frequency) of the lowest word band.",
                                             maximum=0)
    words_log10_frequency_max: float = param(-2.0, "Upper edge (log10 frequency) of the highest word band.",
                                             maximum=0)
    words_band_width: float = param(0.5, "Decades per word frequency band.", exclusiveMinimum=0)
    # Three letters or more: two-letter tokens are mostly function words and word pieces.
    words_min_letters: int = count(3, "Fewest letters of a corpus word.")
    # A token that is a whole word in 90% of its occurrences is a word, not a prefix (" con"
    # is followed by "cept", "cern", ... most of the time).
    words_min_whole_share: float = param(0.9, "Share of a token's occurrences that must be a whole word.",
                                         exclusiveMinimum=0, maximum=1)
    density_bin_width: float = param(0.25, "Decades per bin of the density histograms.", exclusiveMinimum=0)

    def check(self) -> None:
        unknown = sorted(set(self.categories) - set(available_categories()))
        if unknown:
            raise ValueError(f"scaling.categories: unknown {unknown}; shipped: {available_categories()}")
        if self.words_log10_frequency_min >= self.words_log10_frequency_max:
            raise ValueError(f"scaling.words_log10_frequency_min ({self.words_log10_frequency_min}) must be below "
                             f"words_log10_frequency_max ({self.words_log10_frequency_max})")

    def word_sampling(self) -> WordSampling:
        """The ``words_*`` keys as ``corpus_words`` takes them."""
        return WordSampling(self.words_per_band, self.words_log10_frequency_min, self.words_log10_frequency_max,
                            self.words_band_width, self.words_min_letters, self.words_min_whole_share)
