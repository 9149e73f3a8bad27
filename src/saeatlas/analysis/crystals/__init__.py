"""Word-pair crystals: the atomic scale of *The Geometry of Concepts* (Li, Michaud, Baek, Engels,
Sun, Tegmark 2024), with the null, effect sizes and uncertainty its reviewers asked for, and the
distractor directions (word length, token count, first token) removed by LDA.

The claim. For a relation such as male -> female, the difference vectors
``δ_i = v(b_i) - v(a_i)`` of its word pairs (man:woman, king:queen, ...) are nearly parallel, so
the four words of two pairs form a parallelogram (or a trapezoid, if the lengths differ). Li et
al. found such "crystals" in the point cloud of SAE feature vectors (by clustering difference
vectors), and found them much cleaner after projecting out "distractor" directions such as word
length with LDA. Here the parallelograms are tested on words with known relations, as vectors
in the LM's activation space and in every SAE's code space.

What is measured, for every task (relation) and every space (the LM activations; the SAE codes
of every dictionary size), raw and after LDA:

(i)  ``cos_mean``: the mean pairwise cosine of the task's difference vectors,
     ``(1 / (n (n-1))) Σ_{i≠j} cos(δ_i, δ_j) = (‖Σ_i δ̂_i‖² - n) / (n (n-1))`` (δ̂ = δ/‖δ‖).
     1 = a perfect crystal (all edges parallel), 0 = no common direction.
(ii) ``silhouette``: the mean silhouette of the task's δ's, with the δ's of all other evaluated
     tasks as the other clusters, under the cosine distance ``1 - cos``:
     ``s_i = (b_i - a_i) / max(a_i, b_i)``, ``a_i`` = mean distance of δ_i to the task's other
     δ's, ``b_i`` = smallest mean distance of δ_i to another task's δ's. Why this choice:
     ``cos_mean`` only says "the edges are parallel"; a word-length offset shared by every task
     would make every task look parallel. The silhouette asks whether the task's offset is its
     *own* direction, distinct from the other relations, which is what "crystal" means in a
     cloud of many relations (Li et al. cluster the difference vectors of all pairs). Cosine
     distance, because the offset's direction is the claim and its norm differs between spaces
     and tasks. It is bounded in [-1, 1] and comparable across spaces; it needs two tasks.

Null: **shuffled pairs**. The task's b's are permuted among themselves (uniform permutations,
seeded), ``δ^π_i = v(b_{π(i)}) - v(a_i)``, and both qualities are recomputed (the other tasks'
δ's stay as observed). What it keeps and what it breaks: the two word sets, and so the offset
between the *mean* a and the *mean* b (countries vs capitals as categories) are kept; only the
pairing is broken. Quality above this null therefore means the specific pairing matters (king
goes with queen, not with any female word): the parallelogram, not two clusters. Reported: the
null mean and SD, ``z = (q - mean_null) / sd_null`` (the effect size in null SDs) and the
permutation p-value ``p = (1 + #{q_null ≥ q}) / (1 + P)`` (one-sided: higher = more crystal;
the +1 counts the observed pairing as one draw of the null, so p is never 0; Phipson & Smyth
2010). Read ``excess = q - mean_null`` (in cosine / silhouette units) as the effect's *size* and
z / p as its *detectability*: with ~1000 pairwise cosines the null SD can be ~0.002, so a tiny
excess is "significant". One such case is built in: ``Σ_i δ^π_i = Σ b - Σ a`` for every π, so
when each b is merely *near* its a (no common offset), the shuffled δ's (dominated by
``a_{π(i)} - a_i``, which cancel in the sum) are slightly anti-parallel and the observed ones
are not: a small positive excess with no crystal. The same permutations serve every space and
both variants of a task (paired comparisons). Uncertainty: a percentile bootstrap over the
task's pairs (pairs resampled with replacement; in ``cos_mean`` and in ``a_i`` only positions
holding *different* pairs are compared, so a pair drawn twice does not add a spurious cosine of
1). Across tasks, Holm-adjusted p-values (table) and the number of tasks significant at
``alpha`` after Holm (metrics).

LDA (variant ``lda``). For each distractor (a per-word label: ``length`` = characters,
``n_tokens``, ``first_token`` id) the words are put in classes (numeric labels: quantile bins;
categorical: values with ≥ ``lda_min_class`` words, the rest pooled), and
``sklearn.discriminant_analysis.LinearDiscriminantAnalysis`` (the exact SVD solver) is fit on the
words' top ``lda_pca_dims`` principal components (PCA then LDA, as in Fisherfaces, Belhumeur et
al. 1997: with a few hundred words in 576..18432 dimensions the within-class scatter is singular,
and ~10 words per dimension keep it estimable). Its ``k = min(K - 1, lda_max_directions)``
discriminant directions are mapped back to the space, all distractors' directions are
orthonormalised into ``U``, and every word vector is replaced by its part in the orthogonal
complement, ``v' = v - U Uᵀ v``. This is done in ``lda_iterations`` passes, each refitting LDA
on the words cleaned by the previous ones (as in iterative nullspace projection, Ravfogel et al.
2020): an axis estimated from a few hundred words is off by some angle θ, and one pass leaves
``sin θ`` of the distractor's offset as a consistent residual that the permutation test still
detects. The null of the cleaned vectors is the same shuffle. Caveats: this removes the
distractors' discriminant *axes*; a linear probe may still decode part of a distractor from other
directions (LEACE, Belrose et al. 2023, would guarantee more). ``first_token`` only forms classes
where at least ``lda_min_class`` words share a first token (with mostly single-token words, few
do). And if a relation is itself correlated with a distractor (plurals are longer than
singulars), the part of its offset along the removed axes goes too; ``lda_norm_retained`` (the
fraction of the task's Σ‖δ‖² that survives) says how much. Removing a fixed direction keeps
parallel offsets parallel, so a real crystal survives LDA unless it lies inside the removed span.

Computation: everything is a function of the words' Gram matrix ``G = X Xᵀ`` ([W, W], W = a few
hundred words): ``δ_i·δ_j``, the cosines of every permutation and bootstrap resample, the PCA of
the words (eigenvectors of the centred Gram) and the cleaned Gram ``G' = G - (X U)(X U)ᵀ``. So
an SAE space of 18432 latents costs one ``X Xᵀ`` product (sparse codes are welcome), and no
``[W, n]`` cleaned matrix is formed.

Code: ``tasks`` (the shipped word pairs and the per-word distractor labels), ``lda`` (distractor
classes, word PCA, the LDA axes and their projection), ``quality`` (the Gram-matrix qualities,
their shuffled-pair null and bootstrap), ``compute`` (inputs and ``run``), ``figures``,
``section`` (the report's section) and ``stage`` (the pipeline's adapter).
"""

from __future__ import annotations
