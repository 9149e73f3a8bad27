"""Settings of the absorption analysis (params.yaml section ``absorption:``): the only home of their
defaults and bounds (the schema section is generated from these fields)."""

from __future__ import annotations

from dataclasses import dataclass

from saeatlas.analysis.common.config import AnalysisConfig, count, param, seed


@dataclass(frozen=True)
class AbsorptionConfig(AnalysisConfig, section="absorption",
                       summary="Feature absorption on the first-letter task (Chanin et al. 2024): per letter a "
                       "residual probe, the letter's main latents by k-sparse probing, and the share of probe true "
                       "positives the main latents miss while another latent carries the letter direction, beside a "
                       "random-direction null (analysis/absorption/)."):
    """Settings of the absorption analysis (params.yaml section ``absorption:``, same key names)."""

    # The rows: word-initial tokens (space + ASCII letter) of the held-out split, split by token id.
    # More rows per letter than the probing gate's 500: the rate is a share of the test rows (20%).
    tokens_per_letter: int = count(1000, "Rows per letter at most (train and test together).")
    max_per_token: int = count(5, "Occurrences of one token id at most (so ' the' does not make up the letter t).")
    min_tokens_per_letter: int = param(20, "Rows a letter needs to take part (train and test together); fewer: "
                                           "dropped with the reason.", minimum=2)
    train_fraction: float = param(0.8, "Share of each letter's token ids used for training.",
                                  exclusiveMinimum=0, exclusiveMaximum=1)
    seed: int = seed(0, "Seed of the subsample, the split, the shuffled-label gate, the null and the bootstrap.")
    inverse_l2: float = param(1.0, "Inverse L2 strength C of every logistic regression (standardised features).",
                              exclusiveMinimum=0)
    max_iter: int = count(1000, "Iterations of each logistic regression (lbfgs) at most.")
    ci_level: float = param(0.95, "Level of every interval.", exclusiveMinimum=0, exclusiveMaximum=1)
    # The gate (shared with probing): multinomial probe accuracy must exceed this factor times the
    # majority-class baseline (and its interval lie above the shuffled-label probe's).
    gate_factor: float = param(2.0, "First-letter accuracy / majority baseline above which absorption is "
                                    "measured.", exclusiveMinimum=1)
    # Chanin et al.'s thresholds: a latent is a candidate absorber if its decoder row has cosine at
    # least this with the letter's probe direction ...
    probe_cos: float = param(0.025, "Decoder cosine with the letter's probe direction a latent needs to count as "
                                    "an absorber.", minimum=0, maximum=1)
    # ... and the k-sparse probe adds a latent to the letter's main latents while k -> k+1 raises
    # its F1 by more than this (feature splitting, not absorption).
    split_threshold: float = param(0.03, "F1 gain of the k-sparse probe from k to k + 1 above which the next latent "
                                         "is one more main latent (a split feature).", minimum=0, maximum=1)
    max_main_latents: int = count(10, "Main latents per letter and size at most (k of the k-sparse probe).")
    # Our rule (the paper ranks latents by an integrated-gradients ablation of the probe; we use the
    # linear contributions): a token is absorbed when the largest absorber's contribution
    # a_i (d_i . p) is at least this share of the larger of the positive projection
    # sum_j max(0, a_j (d_j . p)) and the letter's mean reconstruction projection above the others'.
    absorption_share: float = param(0.4, "Share of the larger of the token's positive probe projection and the "
                                         "letter's mean projection the largest absorber must carry for a token to "
                                         "count as absorbed.",
                                    exclusiveMinimum=0, maximum=1)
    # A letter is measured at a size only with this many test rows the residual probe classifies
    # correctly (the rate's denominator).
    min_true_positives: int = count(10, "Probe true positives on the test rows a letter needs to be measured.")
    n_bootstrap: int = param(1000, "Bootstrap replicates over letters (intervals of the means); 0: none.",
                             minimum=0)
