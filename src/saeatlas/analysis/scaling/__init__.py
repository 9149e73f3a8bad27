"""How the dictionaries scale with size, and the feature-completeness experiment (stage ``scaling``).

Two analyses of *Scaling Monosemanticity* (Templeton et al., 2024), on our SAEs:

(a) **Alive features and densities.** For every dictionary size n: how many latents fire at
    least once on the evaluation tokens (alive), the dead fraction, and the distribution of
    log10 firing densities of the alive ones; then power laws v(n) = C * n^alpha fitted to
    the alive count, the dead count and the median density across sizes.

    Uncertainty: the alive count of a size is a statement about a finite evaluation set (a
    latent that fires once in 10^6 tokens is "dead" on 10^5). We bootstrap the evaluation
    *contexts* (rows come in blocks of ``positions_per_context`` consecutive tokens, and
    tokens within a context are not independent), the same resample for every size (the
    exponent compares sizes measured on one set), recompute every size's statistics and
    refit. The alive count is a "support size" statistic: a resample holds only ~63% of the
    distinct contexts (1 - 1/e), so a latent seen in one context survives with probability
    0.63, and every resample's alive count is biased *down*. A percentile interval would then
    sit below the estimate, even exclude it. We therefore use the bootstrap for the *spread*
    only: CI = estimate +- z * sd(bootstrap), and report the bootstrap shift
    (median(bootstrap) - estimate) as the diagnostic of how much the number still depends on
    the size of the evaluation set; the percentile interval is in the table for comparison.
    The OLS standard error of the slope across sizes (model misfit, which the context
    bootstrap does not see) is reported next to it.

(b) **Feature completeness.** Concepts are (i) shipped lists of named things (chemical
    elements, countries, capitals, animals, foods, months, weekdays, number words, colours;
    ``saeatlas/data/concepts``) and (ii) whole words drawn from the training split, an equal
    number per half decade of frequency (``concepts.corpus_words``). Why (ii): in 10^6 tokens
    nearly all named things are too rare to be judged on 10^5 evaluation tokens (on the
    default study 737 of 784 listed concepts had < 5 evaluation occurrences and only 15 of 225
    pairs had a feature), so the curve had no "found" side. Scaling Monosemanticity's axis is
    frequency, and its concepts are words and names whose feature exists or not; ordinary
    words are that kind of item at the frequencies 10^3..10^4 latents resolve. Caveat: the
    most frequent band holds function words ("for", "that"), which the paper's lists lack.
    Every concept is matched as token sequences in the training split and in the evaluation
    rows (where the codes are); its frequency f = occurrences / tokens over *both* splits
    (the paper counts on its training data; our evaluation split is more of the same text).
    For each (concept, size) we decide whether a latent *specific* to the concept exists
    (criterion in ``judge_concepts``), then fit

        P(feature exists) = sigmoid(a + b * x),   x = log10(f * A_n),

    A_n = alive latents of size n, pooled over sizes. The 50% point x50 = -a / b;
    10**x50 = f50 * A_n is compared with the paper's value, about 1 ("a concept is found with
    ~50% probability when it occurs about once per alive feature", ``published.yaml``:
    ``reference.templeton2024_completeness_freq50_times_alive``; its dead fractions are
    written beside ours too). The metrics count the judged pairs and the pairs with and
    without a feature, overall and per category. CI: bootstrap over *concepts* (a concept's
    judgements at all sizes stay together: they are not independent). The fit is Firth's penalised logistic
    regression (Firth 1993): it stays finite under (quasi-)separation, which small concept
    sets produce, and it has less small-sample bias than the plain MLE. A 50% point is only
    reported when it can be estimated: at least ``min_events`` pairs with and without a
    feature, a positive slope, and x50 inside the observed x range; otherwise the metrics say
    ``completeness.x50_estimated = 0`` and the summary says why, with the numbers.

    Collapse: if the curves of all sizes are one curve in x = log10(f * A_n), per-size
    curves add nothing. We test it with a penalised likelihood-ratio test of one shared curve
    in x against a separate curve per size (df = 2 (S - 1)), and the same test for one
    shared curve in u = log10 f (no rescaling) as the reference; and we report the spread
    (SD) of the per-size 50% points in rescaled (x) and unrescaled (u = x - log10 A_n)
    units: collapse means SD_x << SD_u.
"""

from __future__ import annotations
