"""Sparse probing: does a dictionary hold a known concept in a few latents? SAEBench's k-sparse
probing (Karvonen et al. 2025; the method after Gurnee et al. 2023) on the held-out split of one
layer, every dictionary size, beside a probe on the full residual stream and on k random latents;
and the first-letter gate that decides whether absorption (Chanin et al. 2024) is measurable.

Tasks (binary, each balanced by seeded subsampling on both sides of its split):

- *Domain* (context level), one per corpus domain: the domain vs the rest. A unit is a context
  (``corpus.context_length`` tokens: ``positions_per_context`` rows of the store); its features
  are the mean over its ordinary rows of the residual and of each latent's code (as SAEBench
  pools a text). Contexts are packed from several documents, so a context is labelled
  with its majority domain only where that domain holds ``context_purity`` of its rows. Split by
  context.
- *Token* level, one row per unit: ``is_digit`` (the token's string holds a digit),
  ``is_capitalised`` (its first non-space character is an upper-case letter, against lower case;
  tokens without a cased first letter are not in the task), ``starts_with_space`` and
  ``is_code_token`` (the row belongs to a code-domain document). Labels come from the tokenizer's
  string of each token id, no hub data. Split by token id (``split_by_token_id``): no id on both
  sides, so the probe must carry the property to unseen tokens rather than memorise ids.
  Part of speech is not a task: it needs a tagger or a lexicon, and none ships in an installed
  package (nltk is installed without its data; its taggers are downloads).

A task with fewer than ``min_examples_per_class`` examples of a class, or a split that leaves a
side without one, is skipped; the metrics (``task.<name>.estimated = 0``), the ``tasks`` table
and the report's notes say which and why.

Probe, per task and size (SAEBench's protocol): rank the latents by ``|mean code on positives -
mean code on negatives|`` over the *training* units (sparse column means, nothing densified), take
the top k for k in ``k_values``, standardise those k columns on the training units and fit an L2
logistic regression (``inverse_l2``); report test accuracy with a Wilson interval. Only the k
chosen columns of the subsampled units are ever dense; the codes of a context are a sparse
average of its rows.

Baselines (nulls): the same probe on the full residual stream (d columns, normalised by the
store scale), once per task, the ceiling a linear read-out reaches; and k latents drawn at random
among those active on the task's training units (``random_draws`` draws, averaged; silent latents
would be constant columns and make the baseline trivially chance), the floor a dictionary reaches
without the ranking. Chance is 0.5 (balanced test sets). The mean over tasks per k carries a
normal interval from the tasks' binomial variances.

First-letter gate (``gate.py``, on the shared ``analysis/common/first_letter.py``): a multinomial
probe on the residual of word-initial tokens (space + ASCII letter), split by token id, beside the
majority-class baseline, chance and the same probe on shuffled labels. Chanin et al. measure
absorption against such a probe's directions, so where the probe does not clearly beat the
majority baseline (``gate_factor``) absorption cannot be measured at this layer and the section
says so. The measurement itself is the ``absorption`` analysis (``analysis/absorption/``), which
runs the same gate on its own rows first.

What differs from SAEBench: their tasks are 35 binary tasks from hub data sets (professions,
review categories and sentiment, language, code language, news topics); ours come from the study's
own corpus and tokenizer, so absolute accuracies do not compare with theirs, and no published
number is set beside ours. We add the residual and random-latent baselines, the intervals and the
split by token id.
"""
