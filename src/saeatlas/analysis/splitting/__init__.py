"""Feature splitting across dictionary sizes: which features of a larger SAE continue a feature
of the next smaller one, which are the children of a split, and which are new.

What is compared. For every pair of adjacent sizes (s, s'), every feature j of the larger SAE is
matched to the smaller SAE twice, and both matches are reported:

- by **decoder direction**: ``p_j = argmax_i cos(W'_j, W_i)`` over the unit-normalised decoder
  rows (the cheap proxy Leask et al. validate against SAE stitching);
- by **activation on shared tokens**: ``q_j = argmax_i corr(a_i, a'_j)``, the Pearson correlation
  of the two features' activations over the same N evaluation tokens.

``match_agreement`` is how often ``p_j == q_j``. Each larger feature with at least
``min_firings`` firings (rarer ones are counted as ``rare`` and left out of the fractions: their
activation statistics rest on too few tokens) falls in exactly one class:

- it is **linked** to its decoder parent ``p_j`` when ``cos ≥ child_cos`` *and* it fires mostly
  inside the parent: ``containment_j = |F_j ∩ F_{p_j}| / |F_j| ≥ child_min_containment``
  (``F`` = the set of tokens on which a feature is > 0). A split child is, by definition, a
  refinement: its tokens are a subset of its parent's. Pearson correlation is *not* the child
  test because a child of a K-way split correlates with its parent only ~1/√K;
- **split_child**: linked, and the parent has ≥ ``min_children`` linked features: a split family;
- **identical**: linked, the parent's only link, and ``cos ≥ identical_cos``;
- **novel**: neither of these, and ``cos < similar_cos``: no smaller feature points the same way
  (Leask et al.'s novel latents, with their decoder-cosine proxy);
- **other_similar**: the rest: a direction close to a smaller feature (``cos ≥ similar_cos``) but
  neither its near-copy nor part of a family (a lone drifted match, or one whose tokens are not
  nested in the parent's).

Two cosine thresholds, because they answer two questions: ``similar_cos`` (0.7) is Leask et
al.'s similar/novel cut, validated there by stitching, and keeps ``novel_fraction`` comparable
with theirs; ``child_cos`` (0.5) is lower because a child is also required to be nested in its
parent's tokens, and because the children of a K-way split are far from the parent: with
orthogonal private parts a child has ``cos = 1/√K`` (0.71 for K = 2, 0.58 for K = 3, 0.5 for 4).

``similar_fraction = 1 - novel_fraction`` (identical + split + other) is the number comparable
with the published reference: Leask et al. 2025 ("Sparse autoencoders do not find canonical
units of analysis", ICLR 2025; and the earlier "Stitching SAEs of different sizes") report that
about 65% of a larger SAE's latents are similar to the smaller SAE's (identical or split) and
about 35% are novel, for GPT-2 / Pythia SAEs, classified by the maximum decoder cosine to the
smaller SAE. ``cos_similar_fraction`` is their proxy alone (best cosine ≥ ``similar_cos``; it
differs from ``similar_fraction`` by the split children with ``child_cos ≤ cos < similar_cos``). The
reference numbers are in the metrics as ``reference.leask2025_*``.

Leask et al.'s published rule, beside our classes (issue 16). Their rule is one cut on the best
decoder cosine: a larger latent is *reconstruction-like* if ``max_i cos(W'_j, W_i) ≥ leask_cos``
(0.7), otherwise *novel*, counted over **all** the larger SAE's latents (and matched against all
of the smaller's), dead and rare ones included: they compare whole dictionaries. That is
``leask_reconstruction_fraction`` / ``leask_novel_fraction``, the number printed beside their
≈ 0.65 / 0.35 (second-hand, ``analysis/published.yaml``) and the published-protocol headline.
The same rule over the alive latents only (``*_alive``) is exactly ``cos_similar_fraction``
when ``leask_cos == similar_cos`` (the defaults): it is one helper, counted over two
populations, not a second implementation. ``leask_cos`` is a parameter of its own so that
tuning our ``similar_cos`` never moves the published-protocol number. Which population matters
is not cosmetic here: rare and dead latents have fewer near-copies in the smaller SAE (on the
default study, 11% of the rare latents of n = 18432 against 16% of its alive ones; 26% of
n = 18432 is rare), so the all-latents fraction is the lower one. Our headline stays ``similar_fraction``: it adds the split children with
``child_cos ≤ cos < similar_cos`` that the decoder-cosine proxy alone calls novel. Null: the
rotated larger dictionary, as for every decoder statistic.

Within a split family (parent i, children C), two claims are tested:

- the parent's direction lies in the span of its children's: least squares
  ``w* = argmin_w ||W_i - Σ_{c∈C} w_c W'_c||²``; ``R² = 1 - ||W_i - Σ w*_c W'_c||² / ||W_i||²``
  and the cosine of the reconstruction (= √R² for a least-squares projection);
- the parent's activation is the union of its children's:
  ``jaccard = |F_i ∩ U| / |F_i ∪ U|`` with ``U = ∪_{c∈C} F_c``; also ``coverage = |F_i ∩ U| / |F_i|``
  (how much of the parent the children cover) and ``precision = |F_i ∩ U| / |U|``.

Nulls (every statistic has one, as ``<name>_null``):

- *Decoder matching*: the larger dictionary rotated by one Haar-random orthogonal matrix
  ``W' R``. A rotation keeps everything internal to the larger dictionary (its Gram matrix:
  norms, clustering, how many near-duplicates it has) and destroys only its relation to the
  smaller one, which is exactly what the matching claims. (It also removes any shared anisotropy
  with the smaller dictionary, so it understates chance for anisotropic dictionaries: read it as
  a floor, and the real-vs-null gap as an upper bound on "how far above chance".)
- *Activation matching*: the token rows of the larger SAE's codes permuted once, ``B[π]``. Every
  larger feature keeps its exact activation distribution and its co-activations with the other
  larger features; only the token-level correspondence with the smaller SAE is broken: the null
  hypothesis "the two SAEs' features are independent as functions of the token".
- *Class fractions, families, agreement*: the whole classification rerun on (``W' R``, ``B[π]``).
- *Span R²*: the rotation null would be vacuous: children are *selected* for ``cos ≥ child_cos``
  with the parent, so ``R² ≥ max_c cos²`` by construction. The null therefore keeps each child's
  cosine to the parent and draws the rest of each child at random (``c_j = cos_j·p + sin_j·u_j``,
  ``u_j`` uniform on the sphere orthogonal to ``p``): it answers "do the children's private parts
  combine to give the parent, beyond what their individual alignment implies?". For nearly
  orthogonal ``u_j`` its value is ≈ ``S / (1 + S)`` with ``S = Σ cos²/(1 - cos²)``; a parent that is
  exactly a combination of its children gives 1. ``parent_span_r2_best_child_mean`` (= max cos²) is
  reported too, the baseline of reconstructing from the single best child.
- *Union statistics*: the same families evaluated on the row-permuted larger codes ``B[π]``.
  Caveat: children were selected on containment (a child-side precision), so ``precision`` is
  partly guaranteed by selection; ``coverage`` (parent-side recall) is not, and is the real test.

Memory stays bounded on the real study (sizes up to 18432, N ≈ 100k tokens): the cosine matrix is
formed ``decoder_chunk`` rows of the larger dictionary at a time (``[chunk, n]``), and the activation
cross-products ``A^T B[:, J]`` are sparse products over ``activation_chunk`` columns ``J`` at a time;
no dense ``[N, n]`` code matrix is ever formed.

Code: ``config`` (the thresholds), ``matching`` (activation matches, classes), ``families`` (span
and union tests), ``compute`` (one pair of sizes, then ``run``), ``figures``, ``section`` (the
report's view), ``stage`` (the pipeline adapter).
"""

from __future__ import annotations
