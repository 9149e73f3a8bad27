"""Settings of the probing analysis (params.yaml section ``probing:``): the only home of their
defaults and bounds (the schema section is generated from these fields)."""

from __future__ import annotations

from dataclasses import dataclass

from saeatlas.analysis.common.config import AnalysisConfig, count, param, seed


@dataclass(frozen=True)
class ProbingConfig(AnalysisConfig, section="probing",
                    summary="Sparse probing (top-k latents by class-mean difference, logistic regression) on "
                    "domain and token tasks beside residual and random-latent probes; the first-letter gate of "
                    "absorption (analysis/probing/)."):
    """Settings of the probing analysis (params.yaml section ``probing:``, same key names)."""

    # SAEBench's sparse-probing k (1, 2, 5 by default there; we go on to 20 to see where the
    # curve flattens). Each k is one small logistic regression per task, size and draw.
    k_values: tuple[int, ...] = param((1, 2, 5, 10, 20), "Latents per sparse probe (ascending).", minItems=1,
                                      items={"minimum": 1})
    # Token-level tasks: rows drawn per class (train + test together), balanced. 4000 per class
    # keeps every fit on a few thousand rows: seconds for all sizes together at the default scale.
    tokens_per_class: int = count(4000, "Rows per class of a token-level task (train and test together).")
    # Context-level (domain) tasks: contexts per class at most (all the rarer class has, else).
    contexts_per_class: int = count(1000, "Contexts per class of a domain task at most.")
    # A context (corpus.context_length tokens) is packed from several documents; it is labelled
    # with its majority domain only if that domain holds at least this share of its ordinary
    # rows, else it takes part in no domain task (a half-code, half-news context is neither).
    context_purity: float = param(0.75, "Share of a context's rows its majority domain must hold for the context "
                                        "to be labelled.", exclusiveMinimum=0.5, maximum=1)
    train_fraction: float = param(0.8, "Share of each task's units (contexts, token ids) used for training.",
                                  exclusiveMinimum=0, exclusiveMaximum=1)
    # Token-level train/test split by vocabulary entry: every occurrence of a token id falls on one
    # side, so a probe must carry the property to tokens it never saw (a row split lets it
    # memorise token identities; "is a digit" is a function of the id). False: split by row.
    split_by_token_id: bool = param(True, "Split token-level tasks by token id (no id on both sides).")
    random_draws: int = count(5, "Draws of k random latents per task, size and k (the random-latent baseline).")
    seed: int = seed(0, "Seed of every subsample, split and random draw.")
    max_iter: int = count(1000, "Iterations of each logistic regression (lbfgs) at most.")
    # Inverse L2 strength of every logistic regression, on standardised features (sklearn's C).
    inverse_l2: float = param(1.0, "Inverse L2 regularisation strength C of every logistic regression.",
                              exclusiveMinimum=0)
    ci_level: float = param(0.95, "Level of every interval.", exclusiveMinimum=0, exclusiveMaximum=1)
    # A task (or a letter of the first-letter gate) with fewer examples per class than this, on
    # either side of the split, is skipped and the metrics and the section say which and why.
    min_examples_per_class: int = param(20, "Examples per class (train and test together) a task needs; fewer: "
                                            "skipped with the reason.", minimum=2)
    # The first-letter gate (absorption precondition): rows per letter at most, occurrences of
    # one token id at most (so " the" does not make up the letter t), and the factor over the
    # majority-class baseline the probe must reach for absorption to be measurable.
    first_letter_per_class: int = count(500, "Rows per letter of the first-letter gate at most.")
    first_letter_max_per_token: int = count(5, "Occurrences of one token id in the first-letter gate at most.")
    gate_factor: float = param(2.0, "First-letter accuracy / majority baseline above which absorption is "
                                    "measurable.", exclusiveMinimum=1)

    def check(self) -> None:
        if list(self.k_values) != sorted(set(self.k_values)):
            raise ValueError(f"probing.k_values must be strictly ascending, got {list(self.k_values)}")
