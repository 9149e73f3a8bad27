"""Settings of the crystals analysis (params.yaml section ``crystals:``, same key names)."""

from __future__ import annotations

from dataclasses import dataclass

from saeatlas.analysis.common.config import AnalysisConfig, count, param, seed
from saeatlas.analysis.crystals.tasks import DISTRACTORS, TASKS, available_tasks


@dataclass(frozen=True)
class CrystalsConfig(AnalysisConfig, section="crystals",
                        summary="Word-pair crystals before and after LDA, against shuffled pairs "
                        "(analysis/crystals/)."):
    """Settings of the crystals analysis (params.yaml section ``crystals:``, same key names)."""

    # shipped TSVs the stage loads (saeatlas/data/word_pairs)
    tasks: tuple[str, ...] = param(TASKS, "Shipped word-pair tasks (src/saeatlas/data/word_pairs).",
                                   items={"type": "string", "enum": list(TASKS)}, minItems=1, uniqueItems=True)
    # The stage's prompt: a word's vector is the residual at the word's last token. It must end
    # with the word, so that the last token *is* the word's; "{word}" after a space gives the
    # mid-sentence tokenisation (" king"), the common form in text.
    template: str = param("Here is a word: {word}", "Prompt a word is read in; must end with {word}.",
                          pattern=r"\{word\}$")
    # Pairs with a word of more tokens are dropped (0 = keep all): the last-token residual of a
    # long word is a worse summary of it. 4 keeps every shipped word for SmolLM2 (measured:
    # Reykjavik and Addis Ababa are the longest, 4 tokens); most words are 1-2 tokens.
    max_word_tokens: int = param(4, "Pairs with a longer word are dropped (0 keeps all).", minimum=0)
    # Fewer usable pairs and the task is not evaluated: the null of a mean of n(n-1)/2 cosines
    # is too coarse below ~20 pairs, and the bootstrap has too few distinct resamples.
    min_pairs: int = param(20, "Tasks with fewer usable pairs are not evaluated.", minimum=3)
    # 1000 permutations resolve p down to 1/1001 and the null's 2.5/97.5% points to ~±0.1 SD.
    n_permutations: int = count(1000, "Shuffled-pair permutations of the null.")
    n_bootstrap: int = param(1000, "Resamples over pairs for the CIs (0 = none).", minimum=0)
    ci_level: float = param(0.95, "Level of the intervals.", exclusiveMinimum=0, exclusiveMaximum=1)
    # significance level of the Holm-corrected per-space task counts
    alpha: float = param(0.05, "Significance level of the Holm-corrected task counts.",
                         exclusiveMinimum=0, exclusiveMaximum=1)
    # permutations and resamples of a task depend only on (seed, task name)
    seed: int = seed(0, "Seed of the permutations and resamples.")
    # labels whose LDA axes are projected out
    lda_distractors: tuple[str, ...] = param(DISTRACTORS, "Distractor labels whose LDA directions are projected out.",
                                             items={"type": "string", "enum": list(DISTRACTORS)}, uniqueItems=True)
    # the others are numeric (binned)
    categorical_distractors: tuple[str, ...] = param(
        ("first_token",), "Distractors treated as categories (the others are binned numbers).",
        items={"type": "string", "enum": list(DISTRACTORS)})
    # Numeric labels with more distinct values are cut into this many quantile bins: 4 bins
    # give 3 discriminant axes per distractor (a linear trend needs 1; 3 allow a bend).
    lda_bins: int = param(4, "Quantile bins of a numeric distractor.", minimum=2)
    # Classes with fewer words are merged (numeric: into a neighbouring bin; categorical: into
    # one "other" class): a class mean from < 10 words is mostly noise in hundreds of dims.
    lda_min_class: int = count(10, "Smaller distractor classes are merged.")
    # discriminant axes removed per distractor and pass, at most
    lda_max_directions: int = count(3, "Discriminant axes removed per distractor and pass.")
    # LDA passes, each refit on the words cleaned by the previous ones. One pass leaves the part
    # of a distractor its estimated axis missed (a consistent residual offset that the
    # permutation test still detects); on the planted tests a word-length-only "crystal" falls
    # from cos_mean ~0.47 to 0.03-0.06 after one pass and to <= 0.02 after two. Each pass
    # removes up to lda_max_directions axes per distractor (at most 2 × 9 of 576 dims).
    lda_iterations: int = count(2, "LDA passes.")
    # LDA runs on this many top principal components of the words (PCA then LDA): ~10 words
    # per dimension for the ~640 shipped words; more dimensions let chance separate classes.
    lda_pca_dims: int = count(64, "Principal components LDA runs on.")
    # task drawn in the interactive PCA view ("" = first)
    projection_task: str = param("male_female", 'Task drawn in the interactive PCA view ("" = the first).')

    def check(self) -> None:
        unknown = sorted(set(self.tasks) - set(available_tasks()))
        if unknown:
            raise ValueError(f"crystals.tasks: unknown {unknown}; shipped: {list(available_tasks())}")
        if self.template.count("{word}") != 1 or not self.template.endswith("{word}"):
            raise ValueError(f"crystals.template must contain '{{word}}' once, at the end, got {self.template!r}")
