"""Uncertainty that includes training: the study's headline numbers over several training seeds.

Why. Every other analysis reports a within-seed interval (a bootstrap over features, concepts,
points or label permutations): it says how precisely the number is known *for these SAEs*. It
does not say how much the number would move if the same SAEs were trained again with another
seed, and for features (which latents a dictionary ends up with) that variation can be larger than
any bootstrap over them. Paper numbers are single-seed too; a gap between ours and theirs smaller
than the seed spread is no gap.

What. For every seed in ``seeds.extra`` (beside ``sae.seed``, the study's own SAEs) and every size
up to ``seeds.max_size``, an SAE is trained with exactly the study's training settings but that
seed (``sae/train.py``, resumable; the SAEs are kept in ``results/cache/seeds/`` bound to the
store's manifest and the training params, so a change to an analysis key re-trains nothing), the
held-out tokens are encoded (``features.encode_store``), and the analyses run on the replica with
their own ``compute.run`` and their own config: held-out FVU per size, splitting fractions (ours and
Leask et al.'s rule), the galaxy slope (both rank windows) and negentropy, the lobe AMI at
``seeds.lobes_k`` on the largest retrained size. The study's own seed is recomputed on the same
size range, so every seed is measured identically.

Metrics: ``<headline>.mean``, ``.sd`` (sample sd over seeds, ddof = 1), ``.min``, ``.max``,
``.seed<s>`` per seed, ``n_seeds``; and, where the analysis gives one, the study seed's own
within-seed interval as ``<headline>.within_ci_low/high``, so the two kinds of uncertainty sit side
by side. Table ``per_seed`` (seed, headline, value); figure ``seed_spread``.
"""

from __future__ import annotations
