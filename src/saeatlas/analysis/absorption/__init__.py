"""Feature absorption (Chanin et al. 2024, *A is for Absorption*) on the first-letter task: where
a latent that reads "starts with L" stays silent on some L-words because another, more specific
latent (" short" for s) fires and carries the letter direction instead. Measured on the held-out
split of one layer, every dictionary size.

Rows (``analysis/common/first_letter.py``, shared with probing's gate): ordinary rows whose token
is a space then an ASCII letter, at most ``max_per_token`` per token id and ``tokens_per_letter``
per letter, split by token id so no word is on both sides.

Gate: the shared multinomial first-letter probe on the residual (store scale) against the majority
class and shuffled labels. Below ``gate_factor`` x the majority baseline the letter is not linearly
readable, there is no letter direction to be absorbed, and the stage writes the gate's numbers and
a section saying absorption cannot be measured.

Per letter L (past the gate):
1. Residual probe: a class-balanced one-vs-rest L2 logistic regression on the training rows; its
   unit direction p_L in the residual space; its true positives on the test rows (letter-L rows
   it classifies as L). Letters with fewer than ``min_true_positives`` are skipped and named.
2. Main latents at each size (k-sparse probing, as Chanin et al. and SAEBench): latents ranked by
   the signed class-mean difference on the training rows; the top one, then the next while the
   balanced k-sparse probe's training F1 rises by more than ``split_threshold`` (0.03 in the
   paper) from k to k + 1 (at most ``max_main_latents``). Those extra latents are split features,
   counted as main, not as absorption.
3. False negatives: probe true positives on which no main latent fires.
4. Absorption rule on a false negative: a latent contributes ``a_i (d_i . p_L)`` to the probe's
   projection of the SAE reconstruction (a_i its activation, d_i its decoder row). The token is
   absorbed if the largest contribution among active latents with ``cos(d_i, p_L) >= probe_cos``
   (0.025 in the paper) is at least ``absorption_share`` of the larger of (a) the token's positive
   projection ``sum_j max(0, a_j (d_j . p_L))`` and (b) the letter's signal: the mean projection of
   its training reconstructions on p_L minus the other letters'. (a) alone is met whenever a latent
   happens to point along p and little else does (a random direction passes it about as often:
   measured on planted data); (b) asks the absorber to carry a sizeable part of what the letter
   normally puts on p_L, and the null is held to the same (b). The paper attributes the probe
   through integrated-gradient ablations; we use the exact linear contributions (the probe is
   linear in the reconstruction). Ratios only, so the decoder's raw units and the store scale
   cancel; the decoder bias is the same for every token and is left out.
5. Rate = absorbed / probe true positives; false-negative rate = false negatives / true positives.

Null: the same rule on the same false negatives along a seeded random unit direction per letter
(the span of the letter directions projected out). It says how often a dictionary's active latents
happen to align and dominate along a direction that is no letter: a rate at the null is no
evidence of absorption. Means over letters (each letter weighs the same), percentile intervals
from a paired bootstrap over letters, and rate - null with its interval for the verdict.

What differs from Chanin et al. / SAEBench: our letters come from the study's corpus and
tokenizer (word-initial tokens, split by token id, not a word list in a prompt template), the
probe is one-vs-rest on the residual of the token itself, and the attribution is linear; no
published rate is set beside ours (their models, layers and protocol differ).

Memory: only the first-letter rows' codes are read (a few thousand rows, sparse); per size the
decoder's projections onto the letter and null directions are [n_latents, letters].
"""
