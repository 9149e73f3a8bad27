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
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import sparse

from saeatlas.analysis.config import config_from_section
from saeatlas.analysis.output import AnalysisOutput

TASK_DIR = Path(__file__).resolve().parents[2] / "data" / "word_pairs"
TASKS = ("country_capital", "male_female", "singular_plural", "present_past", "adjective_comparative",
         "english_french")
DISTRACTORS = ("length", "n_tokens", "first_token")
ACT_SPACE = "act"
VARIANTS = ("raw", "lda")
QUALITIES = ("cos_mean", "silhouette")
STATS = ("null", "null_sd", "excess", "z", "p", "ci_lo", "ci_hi")
_BATCH = 128  # permutations / resamples per vectorised block: [128, n, m] float64 ≈ 20 MB at n=60, m=300


# ------------------------------------------------------------------------------------------
# Shipped word pairs
# ------------------------------------------------------------------------------------------


def available_tasks() -> tuple[str, ...]:
    """Names of the shipped tasks (the ``*.tsv`` stems in ``saeatlas/data/word_pairs``)."""
    return tuple(sorted(p.stem for p in TASK_DIR.glob("*.tsv")))


def parse_pairs(text: str, source: str = "<text>") -> list[tuple[str, str]]:
    """Pairs from TSV text: ``a<TAB>b`` per line, ``#`` lines are comments, blank lines skipped.

    Malformed data fails with ``source:line``: a line without exactly two fields, an empty or
    padded field, ``a == b`` (a zero difference vector has no direction) or a repeated pair.
    """
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        where = f"{source}:{lineno}"
        if len(parts) != 2:
            raise ValueError(f"{where}: expected 'a<TAB>b', got {len(parts)} field(s): {line!r}")
        a, b = parts
        if not a or not b or a != a.strip() or b != b.strip():
            raise ValueError(f"{where}: empty field or surrounding whitespace: {line!r}")
        if a == b:
            raise ValueError(f"{where}: a and b are the same word {a!r} (zero difference vector)")
        if (a, b) in seen:
            raise ValueError(f"{where}: duplicate pair {a!r} -> {b!r}")
        seen.add((a, b))
        pairs.append((a, b))
    return pairs


def load_tasks(names: Iterable[str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """The shipped tasks ``name -> [(a, b), ...]`` in file order (all of ``TASKS`` by default)."""
    wanted = TASKS if names is None else tuple(names)
    known = available_tasks()
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown word-pair task(s) {unknown}; shipped: {list(known)}")
    out = {}
    for name in wanted:
        path = TASK_DIR / f"{name}.tsv"
        out[name] = parse_pairs(path.read_text(encoding="utf-8"), str(path))
    return out


def vocabulary(tasks: Mapping[str, Sequence[tuple[str, str]]]) -> tuple[str, ...]:
    """Every distinct word of the tasks, in first-appearance order: one vector per word string
    (a word in two tasks, e.g. "king" in male_female and english_french, has one vector)."""
    seen: dict[str, None] = {}
    for pairs in tasks.values():
        for a, b in pairs:
            seen.setdefault(a)
            seen.setdefault(b)
    return tuple(seen)


def distractor_labels(words: Sequence[str], token_ids: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """Per-word distractor labels from each word's token ids *as tokenised in the template*:
    ``length`` (characters), ``n_tokens`` and ``first_token`` (id of the word's first token)."""
    if len(words) != len(token_ids):
        raise ValueError(f"{len(words)} words but {len(token_ids)} token-id lists")
    if any(len(ids) == 0 for ids in token_ids):
        raise ValueError("every word needs at least one token")
    return {"length": np.array([len(w) for w in words], dtype=np.int64),
            "n_tokens": np.array([len(ids) for ids in token_ids], dtype=np.int64),
            "first_token": np.array([int(ids[0]) for ids in token_ids], dtype=np.int64)}


# ------------------------------------------------------------------------------------------
# Configuration and inputs
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrystalsConfig:
    """Settings of the crystals analysis (params.yaml section ``crystals:``, same key names)."""

    tasks: tuple[str, ...] = TASKS  # shipped TSVs the stage loads (saeatlas/data/word_pairs)
    # The stage's prompt: a word's vector is the residual at the word's last token. It must end
    # with the word, so that the last token *is* the word's; "{word}" after a space gives the
    # mid-sentence tokenisation (" king"), the common form in text.
    template: str = "Here is a word: {word}"
    # Pairs with a word of more tokens are dropped (0 = keep all): the last-token residual of a
    # long word is a worse summary of it. 4 keeps every shipped word for SmolLM2 (measured:
    # Reykjavik and Addis Ababa are the longest, 4 tokens); most words are 1-2 tokens.
    max_word_tokens: int = 4
    # Fewer usable pairs and the task is not evaluated: the null of a mean of n(n-1)/2 cosines
    # is too coarse below ~20 pairs, and the bootstrap has too few distinct resamples.
    min_pairs: int = 20
    # 1000 permutations resolve p down to 1/1001 and the null's 2.5/97.5% points to ~±0.1 SD.
    n_permutations: int = 1000
    n_bootstrap: int = 1000  # resamples over pairs for the CIs (0 = no CI)
    ci_level: float = 0.95
    alpha: float = 0.05  # significance level of the Holm-corrected per-space task counts
    seed: int = 0  # permutations and resamples of a task depend only on (seed, task name)
    lda_distractors: tuple[str, ...] = DISTRACTORS  # labels whose LDA axes are projected out
    categorical_distractors: tuple[str, ...] = ("first_token",)  # the others are numeric (binned)
    # Numeric labels with more distinct values are cut into this many quantile bins: 4 bins
    # give 3 discriminant axes per distractor (a linear trend needs 1; 3 allow a bend).
    lda_bins: int = 4
    # Classes with fewer words are merged (numeric: into a neighbouring bin; categorical: into
    # one "other" class): a class mean from < 10 words is mostly noise in hundreds of dims.
    lda_min_class: int = 10
    lda_max_directions: int = 3  # discriminant axes removed per distractor and pass, at most
    # LDA passes, each refit on the words cleaned by the previous ones. One pass leaves the part
    # of a distractor its estimated axis missed (a consistent residual offset that the
    # permutation test still detects); on the planted tests a word-length-only "crystal" falls
    # from cos_mean ~0.47 to 0.03-0.06 after one pass and to <= 0.02 after two. Each pass
    # removes up to lda_max_directions axes per distractor (at most 2 × 9 of 576 dims).
    lda_iterations: int = 2
    # LDA runs on this many top principal components of the words (PCA then LDA): ~10 words
    # per dimension for the ~640 shipped words; more dimensions let chance separate classes.
    lda_pca_dims: int = 64
    projection_task: str = "male_female"  # task drawn in the interactive PCA view ("" = first)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("crystals.tasks: name at least one task")
        unknown = sorted(set(self.tasks) - set(available_tasks()))
        if unknown:
            raise ValueError(f"crystals.tasks: unknown {unknown}; shipped: {list(available_tasks())}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"crystals.tasks: duplicates in {list(self.tasks)}")
        if self.template.count("{word}") != 1 or not self.template.endswith("{word}"):
            raise ValueError(f"crystals.template must contain '{{word}}' once, at the end, got {self.template!r}")
        if self.max_word_tokens < 0:
            raise ValueError(f"crystals.max_word_tokens must be >= 0, got {self.max_word_tokens}")
        if self.min_pairs < 3:
            raise ValueError(f"crystals.min_pairs must be >= 3, got {self.min_pairs}")
        if self.n_permutations < 1:
            raise ValueError(f"crystals.n_permutations must be >= 1, got {self.n_permutations}")
        if self.n_bootstrap < 0:
            raise ValueError(f"crystals.n_bootstrap must be >= 0, got {self.n_bootstrap}")
        for name in ("ci_level", "alpha"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"crystals.{name} must be in (0, 1), got {getattr(self, name)}")
        if len(set(self.lda_distractors)) != len(self.lda_distractors):
            raise ValueError(f"crystals.lda_distractors: duplicates in {list(self.lda_distractors)}")
        if self.lda_bins < 2:
            raise ValueError(f"crystals.lda_bins must be >= 2, got {self.lda_bins}")
        for name in ("lda_min_class", "lda_max_directions", "lda_pca_dims", "lda_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"crystals.{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> "CrystalsConfig":
        """From params.yaml's ``crystals:`` section (missing keys take the defaults)."""
        return config_from_section(cls, section, "crystals")


@dataclass
class CrystalsInputs:
    """Plain arrays, one row per word of ``words`` in every space.

    ``pairs``: task -> [(a, b)] (the tasks analysed, in order; words must be in ``words``).
    ``activations``: [W, d] LM residual at each word's last token. ``codes``: size -> [W, n]
    SAE codes of the same vectors (dense array or scipy sparse). ``distractors``: label name ->
    [W] per-word values (see ``distractor_labels``); needs every ``lda_distractors`` name, and
    ``n_tokens`` when ``max_word_tokens > 0``.
    """

    words: Sequence[str]
    pairs: Mapping[str, Sequence[tuple[str, str]]]
    activations: np.ndarray
    codes: Mapping[int, Any] = field(default_factory=dict)
    distractors: Mapping[str, np.ndarray] = field(default_factory=dict)

    def validate(self, config: CrystalsConfig) -> None:
        n_words = len(self.words)
        if len(set(self.words)) != n_words:
            raise ValueError("inputs.words: duplicate words (one row per distinct word)")
        if not self.pairs:
            raise ValueError("inputs.pairs: no tasks")
        index = set(self.words)
        for task, pairs in self.pairs.items():
            missing = sorted({w for p in pairs for w in p} - index)
            if missing:
                raise ValueError(f"task {task!r}: words not in inputs.words: {missing[:10]}")
            if len(pairs) < config.min_pairs:
                raise ValueError(f"task {task!r}: {len(pairs)} pairs < crystals.min_pairs = {config.min_pairs}")
        spaces = {ACT_SPACE: self.activations, **{f"sae_{s}": c for s, c in self.codes.items()}}
        for name, mat in spaces.items():
            if mat.ndim != 2 or mat.shape[0] != n_words:
                raise ValueError(f"space {name}: shape {mat.shape}, expected [{n_words}, dim]")
            data = mat.data if sparse.issparse(mat) else np.asarray(mat)
            if not np.all(np.isfinite(data)):
                raise ValueError(f"space {name}: non-finite values")
        needed = list(config.lda_distractors) + (["n_tokens"] if config.max_word_tokens > 0 else [])
        for name in needed:
            if name not in self.distractors:
                raise ValueError(f"inputs.distractors: missing {name!r} (crystals.lda_distractors / "
                                 f"max_word_tokens need it); have {sorted(self.distractors)}")
            if np.shape(self.distractors[name]) != (n_words,):
                raise ValueError(f"inputs.distractors[{name!r}]: shape {np.shape(self.distractors[name])}, "
                                 f"expected ({n_words},)")


# ------------------------------------------------------------------------------------------
# LDA: distractor axes
# ------------------------------------------------------------------------------------------


def distractor_classes(values: np.ndarray, categorical: bool, n_bins: int, min_class: int) -> np.ndarray:
    """Class labels 0..K-1 for LDA from per-word distractor values.

    Numeric values: the distinct values themselves if there are at most ``n_bins``, otherwise
    quantile bins; then, while a class has fewer than ``min_class`` words, it is merged into its
    smaller neighbour (order is kept: bins stay intervals). Categorical values: each value with
    at least ``min_class`` words is a class, the rest are pooled into one "other" class (which is
    merged into the largest class if it is itself too small).
    """
    values = np.asarray(values)
    if categorical:
        _, inv, counts = np.unique(values, return_inverse=True, return_counts=True)
        big = counts >= min_class
        labels = np.where(big[inv], inv, -1)
        if 0 < (labels == -1).sum() < min_class and big.any():
            labels[labels == -1] = int(np.argmax(counts))
        return np.unique(labels, return_inverse=True)[1].astype(np.int64)
    v = values.astype(np.float64)
    uniq = np.unique(v)
    if len(uniq) <= n_bins:
        labels = np.searchsorted(uniq, v)
    else:
        edges = np.quantile(v, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
        labels = np.searchsorted(edges, v, side="right")
    labels = np.unique(labels, return_inverse=True)[1]
    while True:
        counts = np.bincount(labels)
        if len(counts) < 2 or counts.min() >= min_class:
            break
        c = int(np.argmin(counts))
        if c == 0:
            other = 1
        elif c == len(counts) - 1:
            other = c - 1
        else:
            other = c - 1 if counts[c - 1] <= counts[c + 1] else c + 1
        labels[labels == c] = other
        labels = np.unique(labels, return_inverse=True)[1]
    return labels.astype(np.int64)


@dataclass
class WordPCA:
    """PCA of the word vectors from the centred Gram matrix ``H G H = U Λ Uᵀ`` (H centres):
    the scores are ``U √Λ`` and the principal axes ``V = Xcᵀ U Λ^{-1/2}``, never formed."""

    scores: np.ndarray  # [W, r] principal-component scores, variance descending
    coef: np.ndarray  # [W, r] U Λ^{-1/2}: axis j in the space is Xcᵀ coef[:, j]


def word_pca(gram: np.ndarray, max_dims: int) -> WordPCA:
    """Top ``max_dims`` principal components of the W words whose Gram matrix is ``gram``."""
    from scipy.linalg import eigh

    n = gram.shape[0]
    hgh = _centre_gram(gram)
    k = min(max_dims, n)
    if k == 0:
        return WordPCA(np.zeros((n, 0)), np.zeros((n, 0)))
    evals, evecs = eigh(hgh, subset_by_index=[n - k, n - 1])  # the k largest, ascending
    evals, evecs = evals[::-1], evecs[:, ::-1]
    top = float(np.trace(hgh)) if n else 0.0  # ≥ λ_max: the tolerance is relative to total variance
    r = int(np.sum(evals > max(top, 0.0) * 1e-10))
    lam = evals[:r]
    return WordPCA(scores=evecs[:, :r] * np.sqrt(lam), coef=evecs[:, :r] / np.sqrt(lam))


def lda_axes(pca: WordPCA, classes: np.ndarray, max_directions: int) -> np.ndarray:
    """LDA discriminant directions in PCA coordinates, ``[r, k]``, k = min(K-1, max, r).

    ``LinearDiscriminantAnalysis`` (SVD solver: exact Fisher LDA, no covariance estimate to
    regularise) on the PCA scores; its ``scalings_`` columns are the discriminant directions
    ``w`` (sorted by between-class variance): the discriminant score is ``w · z``.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    k_classes = len(np.unique(classes))
    r = pca.scores.shape[1]
    if k_classes < 2 or r == 0:
        return np.zeros((r, 0))
    lda = LinearDiscriminantAnalysis(solver="svd").fit(pca.scores, classes)
    k = min(k_classes - 1, max_directions, lda.scalings_.shape[1])
    return np.asarray(lda.scalings_[:, :k], dtype=np.float64)


def _matmul_t(x: Any, y: np.ndarray) -> np.ndarray:
    """``xᵀ y`` for dense or sparse ``x`` [W, D] and dense ``y`` [W, k] -> [D, k]."""
    return np.asarray(x.T @ y) if sparse.issparse(x) else np.asarray(x, dtype=np.float64).T @ y


def orthonormal_basis(directions: np.ndarray, rtol: float = 1e-8) -> np.ndarray:
    """Orthonormal basis ``[D, k']`` of the span of the columns (SVD; near-dependent ones dropped)."""
    if directions.shape[1] == 0:
        return directions
    norms = np.linalg.norm(directions, axis=0)
    d = directions[:, norms > 0] / norms[norms > 0]
    if d.shape[1] == 0:
        return d
    u, s, _ = np.linalg.svd(d, full_matrices=False)
    return u[:, s > s[0] * rtol]


@dataclass
class LdaResult:
    """The distractor axes of one space: ``basis`` [D, k] orthonormal, and per distractor the
    number of classes and of axes it contributed."""

    basis: np.ndarray
    n_classes: dict[str, int]
    n_directions: dict[str, int]


def lda_projector(x: Any, classes: Mapping[str, np.ndarray], config: CrystalsConfig,
                  gram: np.ndarray | None = None) -> LdaResult:
    """Fit LDA per distractor on the words ``x`` [W, D] (dense or sparse) and return the
    orthonormal basis of all their discriminant axes, mapped back to the space.

    An axis ``w`` (PCA coordinates) is the direction ``Vᵣ w = Xcᵀ (U Λ^{-1/2} w)`` in the space
    (Xc: words centred), so the [D, r] axis matrix is never formed. With ``lda_iterations > 1``
    LDA is refit on the words already cleaned of the axes found so far (Gram
    ``G' = G - (X B)(X B)ᵀ``; an axis of the cleaned words is ``(I - B Bᵀ) Xcᵀ c``), so a
    distractor whose axis the first fit mis-estimated is removed further (as in iterative
    nullspace projection, Ravfogel et al. 2020).
    """
    from threadpoolctl import threadpool_limits

    gram = _gram(x) if gram is None else gram
    with threadpool_limits(limits=1):  # [W, W]-sized work: see run() on BLAS threads
        return _lda_passes(x, gram, classes, config)


def _lda_passes(x: Any, gram: np.ndarray, classes: Mapping[str, np.ndarray], config: CrystalsConfig) -> LdaResult:
    mean_row = np.asarray(x.mean(axis=0)).ravel()
    d = x.shape[1]
    basis = np.zeros((d, 0))
    n_classes = {name: int(len(np.unique(labels))) for name, labels in classes.items()}
    n_dirs = {name: 0 for name in classes}
    for _ in range(config.lda_iterations):
        xb = np.asarray(x @ basis) if basis.shape[1] else np.zeros((gram.shape[0], 0))
        pca = word_pca(gram - xb @ xb.T, config.lda_pca_dims)
        dirs = []
        for name, labels in classes.items():
            w = lda_axes(pca, labels, config.lda_max_directions)
            n_dirs[name] += int(w.shape[1])
            if w.shape[1]:
                c = pca.coef @ w  # [W, k]
                v = _matmul_t(x, c) - np.outer(mean_row, c.sum(axis=0))  # Xcᵀ c = Xᵀ c - x̄ ⊗ Σ_i c_i
                dirs.append(v - basis @ (basis.T @ v))  # the cleaned words' axis: (I - B Bᵀ) Xcᵀ c
        if not dirs:
            break
        basis = orthonormal_basis(np.hstack([basis, *dirs]))
    return LdaResult(basis, n_classes, n_dirs)


def project_out(x: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``x - (x U) Uᵀ``: each row's part in the orthogonal complement of span(U) (U orthonormal)."""
    x = np.asarray(x, dtype=np.float64)
    return x - (x @ basis) @ basis.T if basis.shape[1] else x.copy()


def _centre_gram(gram: np.ndarray) -> np.ndarray:
    """``H G H`` with ``H = I - 11ᵀ/W``: the Gram matrix of the centred words, in O(W²)."""
    row = gram.mean(axis=1, keepdims=True)
    return gram - row - row.T + gram.mean()


def _gram(x: Any) -> np.ndarray:
    """``X Xᵀ`` in float64 (sparse-aware)."""
    if sparse.issparse(x):
        xs = sparse.csr_matrix(x, dtype=np.float64)
        return np.asarray((xs @ xs.T).toarray())
    xd = np.asarray(x, dtype=np.float64)
    return xd @ xd.T


# ------------------------------------------------------------------------------------------
# Crystal quality from Gram matrices (observed, permuted, resampled)
# ------------------------------------------------------------------------------------------


@dataclass
class TaskGeometry:
    """Inner products of one task's words with each other and with the other tasks' δ's, all
    read off the word Gram matrix ``G``: ``Gaa = A Aᵀ``, ``Gbb = B Bᵀ``, ``Gab[i, k] = a_i·b_k``,
    ``xa[i, k] = a_i·δ°_k``, ``xb[i, k] = b_i·δ°_k`` (δ° = the other tasks' observed δ's, with
    norms ``o_norm`` and averaging matrix ``avg`` [m, T-1]: column u = 1/|u| on task u's rows)."""

    gaa: np.ndarray
    gbb: np.ndarray
    gab: np.ndarray
    xa: np.ndarray
    xb: np.ndarray
    o_norm: np.ndarray
    avg: np.ndarray


def task_geometry(gram: np.ndarray, ia: np.ndarray, ib: np.ndarray, oa: np.ndarray, ob: np.ndarray,
                  o_task: np.ndarray) -> TaskGeometry:
    """``ia``/``ib``: word rows of the task's a's and b's; ``oa``/``ob``/``o_task``: rows and
    task index (0..T-2) of the other tasks' pairs."""
    g = gram
    xa = g[np.ix_(ia, ob)] - g[np.ix_(ia, oa)]  # a_i·(b°_k - a°_k)
    xb = g[np.ix_(ib, ob)] - g[np.ix_(ib, oa)]
    o_sq = g[ob, ob] - 2.0 * g[oa, ob] + g[oa, oa]  # ‖b°_k - a°_k‖²
    n_other = int(o_task.max()) + 1 if len(o_task) else 0
    avg = np.zeros((len(o_task), n_other))
    if len(o_task):
        avg[np.arange(len(o_task)), o_task] = 1.0
        avg /= avg.sum(axis=0, keepdims=True)
    return TaskGeometry(g[np.ix_(ia, ia)], g[np.ix_(ib, ib)], g[np.ix_(ia, ib)], xa, xb,
                        np.sqrt(np.clip(o_sq, 0.0, None)), avg)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (a zero δ has cosine 0 with everything)."""
    return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)), where=den > 0)


def permuted_cosines(geo: TaskGeometry, perms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of the δ's when b is permuted, ``δ^π_i = b_{π(i)} - a_i``, for a batch [P, n]:

    ``δ_i·δ_j = Gbb[πi, πj] - Gab[j, πi] - Gab[i, πj] + Gaa[i, j]`` and
    ``δ_i·δ°_k = xb[πi, k] - xa[i, k]``; returns ``C`` [P, n, n] and ``X`` [P, n, m].
    """
    n = perms.shape[1]
    ar = np.arange(n)
    k = (geo.gbb[perms[:, :, None], perms[:, None, :]] - geo.gab[ar[None, None, :], perms[:, :, None]]
         - geo.gab[ar[None, :, None], perms[:, None, :]] + geo.gaa[None])
    r = np.sqrt(np.clip(np.einsum("pii->pi", k), 0.0, None))  # ‖δ_i‖
    c = _safe_div(k, r[:, :, None] * r[:, None, :])
    x = _safe_div(geo.xb[perms] - geo.xa[None], r[:, :, None] * geo.o_norm[None, None, :])
    return c, x


def quality_scores(c: np.ndarray, x: np.ndarray, avg: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """``cos_mean`` and ``silhouette`` [P] from cosines ``c`` [P, n, n] (within the task),
    ``x`` [P, n, m] (to the other tasks' δ's) and ``mask`` [P, n, n] (which (i, j) to compare:
    i ≠ j for permutations, different pairs for bootstrap resamples).

    ``cos_mean = Σ_{ij} M_ij C_ij / Σ M``; cosine distance ``1 - cos``; ``a_i = 1 - mean_j C_ij``
    over compared j; ``b_i = min_u (1 - mean_{k∈u} X_ik)``; ``s_i = (b_i - a_i) / max(a_i, b_i)``.
    The silhouette is absent (NaN) without other tasks.
    """
    m = mask.astype(np.float64)
    cos_mean = (c * m).sum(axis=(1, 2)) / np.maximum(m.sum(axis=(1, 2)), 1.0)
    out = {"cos_mean": cos_mean}
    if avg.shape[1] == 0:
        out["silhouette"] = np.full(c.shape[0], np.nan)
        return out
    a = 1.0 - _safe_div((c * m).sum(axis=2), m.sum(axis=2))
    b = (1.0 - x @ avg).min(axis=2)
    s = _safe_div(b - a, np.maximum(a, b))
    out["silhouette"] = s.mean(axis=1)
    return out


def observed_cosines(geo: TaskGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``C`` [n, n] and ``X`` [n, m] of the observed pairing (the identity permutation)."""
    c, x = permuted_cosines(geo, np.arange(geo.gaa.shape[0])[None])
    return c[0], x[0]


def _task_rng(seed: int, task: str, stream: int) -> np.random.Generator:
    """A generator that depends only on (seed, task, stream): a task's permutations do not
    change when other tasks or spaces are added, and are shared by its spaces and variants."""
    return np.random.default_rng([seed, zlib.crc32(task.encode()), stream])


def permutations(n: int, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """``n_perm`` uniform random permutations of ``range(n)`` [n_perm, n] (fixed points allowed:
    a uniform permutation is the exchangeability null; the observed pairing is one draw)."""
    return np.argsort(rng.random((n_perm, n)), axis=1)


def permutation_p(observed: float, null: np.ndarray) -> float:
    """One-sided ``(1 + #{null ≥ observed}) / (1 + P)``; ties count against the observation."""
    tol = 1e-12 * max(1.0, abs(observed))
    return float((1 + np.sum(null >= observed - tol)) / (1 + len(null)))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: ``p̃_(i) = max_{j ≤ i} min(1, (T - j + 1) p_(j))``."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p)
    adj = np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order])
    out = np.empty_like(p)
    out[order] = np.maximum.accumulate(adj)
    return out


@dataclass
class QualityStats:
    """One quality (cos_mean or silhouette) of one task, space and variant, with its null."""

    value: float
    null: np.ndarray  # [P] values under shuffled pairs
    boot: np.ndarray  # [B] bootstrap values (empty without bootstrap)

    def summary(self, ci_level: float) -> dict[str, float | None]:
        sd = float(np.std(self.null, ddof=1)) if len(self.null) > 1 else 0.0
        lo = hi = None
        if len(self.boot):
            q = (1.0 - ci_level) / 2.0
            lo, hi = (float(v) for v in np.quantile(self.boot, [q, 1.0 - q]))
        mean = float(np.mean(self.null))
        return {"value": self.value, "null": mean, "null_sd": sd,
                "z": (self.value - mean) / sd if sd > 0 else None,
                "p": permutation_p(self.value, self.null), "ci_lo": lo, "ci_hi": hi,
                "excess": self.value - mean}


def task_quality(geo: TaskGeometry, perms: np.ndarray, boot_idx: np.ndarray) -> dict[str, QualityStats]:
    """Observed qualities, their shuffled-pair null (``perms`` [P, n]) and bootstrap over pairs
    (``boot_idx`` [B, n] resampled pair indices), in blocks of ``_BATCH``."""
    n = geo.gaa.shape[0]
    off_diag = ~np.eye(n, dtype=bool)
    c0, x0 = observed_cosines(geo)
    obs = quality_scores(c0[None], x0[None], geo.avg, off_diag[None])
    null = {q: [] for q in QUALITIES}
    for s in range(0, len(perms), _BATCH):
        c, x = permuted_cosines(geo, perms[s:s + _BATCH])
        for q, v in quality_scores(c, x, geo.avg, np.broadcast_to(off_diag, c.shape)).items():
            null[q].append(v)
    boot = {q: [] for q in QUALITIES}
    for s in range(0, len(boot_idx), _BATCH):
        idx = boot_idx[s:s + _BATCH]
        c = c0[idx[:, :, None], idx[:, None, :]]
        mask = idx[:, :, None] != idx[:, None, :]  # compare different pairs only
        for q, v in quality_scores(c, x0[idx], geo.avg, mask).items():
            boot[q].append(v)
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
    return {q: QualityStats(float(obs[q][0]), cat(null[q]), cat(boot[q])) for q in QUALITIES}


def leave_one_out_cosines(c: np.ndarray) -> np.ndarray:
    """Per pair, ``cos(δ_i, Σ_{j≠i} δ̂_j)``: how well pair i follows the others' mean offset.

    With ``S = Σ_{jk} C_jk`` (= ‖Σ δ̂‖²) and row sums ``R_i``: numerator ``R_i - C_ii`` and
    ``‖Σ_{j≠i} δ̂_j‖² = S - 2 R_i + C_ii``.
    """
    diag = np.diag(c)
    rows = c.sum(axis=1)
    norm_sq = np.clip(c.sum() - 2.0 * rows + diag, 0.0, None)
    return _safe_div(rows - diag, np.sqrt(norm_sq))


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------


@dataclass
class _TaskRows:
    name: str
    ia: np.ndarray
    ib: np.ndarray
    pairs: list[tuple[str, str]]


def _select_pairs(config: CrystalsConfig, inputs: CrystalsInputs) -> tuple[list[_TaskRows], dict[str, float]]:
    """Word rows of each task's usable pairs (both words ≤ ``max_word_tokens`` tokens); tasks
    left with fewer than ``min_pairs`` are reported and not evaluated."""
    row = {w: i for i, w in enumerate(inputs.words)}
    n_tok = np.asarray(inputs.distractors["n_tokens"]) if config.max_word_tokens > 0 else None
    tasks, metrics = [], {}
    for task, pairs in inputs.pairs.items():
        keep = [(a, b) for a, b in pairs
                if n_tok is None or max(n_tok[row[a]], n_tok[row[b]]) <= config.max_word_tokens]
        metrics[f"{task}.n_pairs"] = len(keep)
        metrics[f"{task}.n_dropped"] = len(pairs) - len(keep)
        ok = len(keep) >= config.min_pairs
        metrics[f"{task}.evaluated"] = int(ok)
        if ok:
            tasks.append(_TaskRows(task, np.array([row[a] for a, _ in keep]), np.array([row[b] for _, b in keep]),
                                   keep))
    return tasks, metrics


def _delta_sq(gram: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """``‖b_i - a_i‖² = G[b,b] - 2 G[a,b] + G[a,a]`` per pair (clipped at 0 against round-off)."""
    return np.clip(gram[ib, ib] - 2.0 * gram[ia, ib] + gram[ia, ia], 0.0, None)


def _fmt(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


@dataclass
class _SpaceResult:
    metrics: dict[str, float]
    rows: list[dict[str, Any]]
    pair_rows: list[dict[str, Any]]
    lda_rows: list[dict[str, Any]]
    basis: np.ndarray


TABLE_COLUMNS = ["task", "space", "variant", "n_pairs", "norm_retained"] + [
    f"{q}{k}" for q in QUALITIES
    for k in ("", "_null", "_null_sd", "_excess", "_z", "_p", "_p_holm", "_ci_lo", "_ci_hi")]


def _others(tasks: list[_TaskRows], t: _TaskRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the other tasks' a's and b's, and their task index 0..T-2."""
    others = [u for u in tasks if u is not t]
    if not others:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return (np.concatenate([u.ia for u in others]), np.concatenate([u.ib for u in others]),
            np.concatenate([np.full(len(u.ia), j) for j, u in enumerate(others)]))


def _analyse_space(config: CrystalsConfig, space: str, x: Any, gram: np.ndarray, classes: Mapping[str, np.ndarray],
                   tasks: list[_TaskRows], perms: Mapping[str, np.ndarray], boots: Mapping[str, np.ndarray]
                   ) -> _SpaceResult:
    """LDA axes of one space, then every task's qualities, raw and cleaned (see the module doc)."""
    metrics: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    pair_rows: list[dict[str, Any]] = []
    lda = lda_projector(x, classes, config, gram=gram)
    xu = np.asarray(x @ lda.basis) if lda.basis.shape[1] else np.zeros((gram.shape[0], 0))
    grams = {"raw": gram, "lda": gram - xu @ xu.T}  # G' = G - (XU)(XU)ᵀ
    # fraction of the words' total (centred) variance that the projection removed
    total_var = float(np.trace(_centre_gram(gram)))
    metrics[f"{space}.lda_directions"] = int(lda.basis.shape[1])
    metrics[f"{space}.lda_variance_removed"] = (
        1.0 - float(np.trace(_centre_gram(grams["lda"]))) / total_var if total_var > 0 else 0.0)
    lda_rows = [{"space": space, "distractor": name, "n_classes": lda.n_classes[name],
                 "n_directions": lda.n_directions[name]} for name in config.lda_distractors]
    for variant in VARIANTS:
        g, sfx = grams[variant], ("" if variant == "raw" else "_lda")
        rows_here = []
        for t in tasks:
            geo = task_geometry(g, t.ia, t.ib, *_others(tasks, t))
            stats = task_quality(geo, perms[t.name], boots[t.name])
            row: dict[str, Any] = {"task": t.name, "space": space, "variant": variant, "n_pairs": len(t.pairs)}
            for q in QUALITIES:
                if not math.isfinite(stats[q].value):  # silhouette without another task
                    continue
                summ = stats[q].summary(config.ci_level)
                row[q] = summ["value"]
                metrics[f"{t.name}.{space}.{q}{sfx}"] = summ["value"]
                for k in STATS:
                    row[f"{q}_{k}"] = _fmt(summ[k])
                    if row[f"{q}_{k}"] is not None:
                        metrics[f"{t.name}.{space}.{q}{sfx}_{k}"] = row[f"{q}_{k}"]
            d_sq = _delta_sq(g, t.ia, t.ib)
            row["norm_retained"] = 1.0
            if variant == "lda":  # fraction of the task's Σ‖δ‖² that survives the projection
                d0 = float(_delta_sq(gram, t.ia, t.ib).sum())
                row["norm_retained"] = float(d_sq.sum()) / d0 if d0 > 0 else None
                if row["norm_retained"] is not None:
                    metrics[f"{t.name}.{space}.lda_norm_retained"] = row["norm_retained"]
            loo = leave_one_out_cosines(observed_cosines(geo)[0])
            pair_rows += [{"task": t.name, "space": space, "variant": variant, "a": a, "b": b,
                           "delta_norm": float(dn), "loo_cos": float(lc)}
                          for (a, b), dn, lc in zip(t.pairs, np.sqrt(d_sq), loo)]
            rows_here.append(row)
        for q in QUALITIES:  # Holm across the tasks of this space and variant
            defined = [r for r in rows_here if r.get(f"{q}_p") is not None]
            adj = holm([r[f"{q}_p"] for r in defined]) if defined else np.zeros(0)
            for r, pa in zip(defined, adj):
                r[f"{q}_p_holm"] = float(pa)
            if defined:
                metrics[f"{space}.{q}{sfx}_significant"] = int(np.sum(adj <= config.alpha))
                metrics[f"mean.{space}.{q}{sfx}"] = float(np.mean([r[q] for r in defined]))
                metrics[f"mean.{space}.{q}{sfx}_null"] = float(np.mean([r[f"{q}_null"] for r in defined]))
        rows += [{c: r.get(c) for c in TABLE_COLUMNS} for r in rows_here]
    return _SpaceResult(metrics, rows, pair_rows, lda_rows, lda.basis)


def run(config: CrystalsConfig, inputs: CrystalsInputs) -> AnalysisOutput:
    """Crystal quality of every task in every space, raw and after LDA, against shuffled pairs.

    Metrics (``<q>`` = ``cos_mean`` | ``silhouette``, ``<v>`` = "" (raw) | ``_lda``, spaces
    ``act`` and ``sae_<size>``): ``<task>.n_pairs``, ``.n_dropped``, ``.evaluated``;
    ``<task>.<space>.<q><v>`` and ``<q><v>_null``, ``_null_sd``, ``_excess``, ``_z``, ``_p``,
    ``_ci_lo``, ``_ci_hi``; ``<task>.<space>.lda_norm_retained``; ``<space>.lda_directions``,
    ``<space>.lda_variance_removed``; ``mean.<space>.<q><v>`` and ``mean.<space>.<q><v>_null``
    (over tasks); ``<space>.<q><v>_significant`` (tasks with Holm-adjusted p ≤ alpha). Undefined
    numbers (a silhouette with one task, z with a constant null) are left out. Tables
    ``crystals`` (task × space × variant), ``crystal_pairs`` (per pair: ‖δ‖ and leave-one-out
    cosine), ``lda`` (per space and distractor). Figure ``crystals_quality``; interactive
    ``crystals_pca`` (the projection task's words in activation space, arrows a -> b; absent
    if that task was not evaluated).
    """
    from threadpoolctl import threadpool_limits

    inputs.validate(config)
    if config.projection_task and config.projection_task not in inputs.pairs:
        raise ValueError(f"crystals.projection_task {config.projection_task!r} is not among the tasks "
                         f"{list(inputs.pairs)}")
    tasks, metrics = _select_pairs(config, inputs)
    spaces: list[tuple[str, Any]] = [(ACT_SPACE, inputs.activations)]
    spaces += [(f"sae_{s}", inputs.codes[s]) for s in sorted(inputs.codes)]
    classes = {name: distractor_classes(np.asarray(inputs.distractors[name]), name in config.categorical_distractors,
                                        config.lda_bins, config.lda_min_class)
               for name in config.lda_distractors}
    perms = {t.name: permutations(len(t.pairs), config.n_permutations, _task_rng(config.seed, t.name, 0))
             for t in tasks}
    boots = {t.name: _task_rng(config.seed, t.name, 1).integers(0, len(t.pairs), (config.n_bootstrap, len(t.pairs)))
             for t in tasks}

    results = []
    for space, x in spaces:
        gram = _gram(x)  # the one large product ([W, n] times its transpose): BLAS threads help here
        # Everything else works on [W, W] or smaller arrays, where BLAS threads only add
        # overhead: on the shared 2-core box a 250x250 eigh took ~1 s threaded, ~0.01 s single.
        with threadpool_limits(limits=1):
            results.append(_analyse_space(config, space, x, gram, classes, tasks, perms, boots))
    for res in results:
        metrics.update(res.metrics)
    metrics = {k: v for k, v in metrics.items() if not (isinstance(v, float) and not math.isfinite(v))}
    table = [r for res in results for r in res.rows]
    out = AnalysisOutput(metrics=metrics, tables={"crystals": table,
                                                  "crystal_pairs": [r for res in results for r in res.pair_rows],
                                                  "lda": [r for res in results for r in res.lda_rows]})
    if tasks:
        out.figures["crystals_quality"] = _quality_figure(table, [t.name for t in tasks], [s for s, _ in spaces])
        chosen = next((t for t in tasks if t.name == (config.projection_task or tasks[0].name)), None)
        if chosen is not None:
            out.interactive["crystals_pca"] = _pca_figure(chosen, np.asarray(inputs.activations, dtype=np.float64),
                                                          results[0].basis)
    return out


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


def _quality_figure(table: list[dict[str, Any]], tasks: list[str], spaces: list[str]) -> Any:
    """Rows: the two qualities; columns: tasks; x: spaces. Observed raw (filled) and after LDA
    (open) with bootstrap CIs, over the shuffled-pair null's mean ± 2 SD (grey: raw, blue: LDA)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.6 * len(tasks) + 1, 5.4), layout="constrained")
    axes = fig.subplots(len(QUALITIES), len(tasks), squeeze=False, sharey="row")
    lookup = {(r["task"], r["space"], r["variant"]): r for r in table}
    x = np.arange(len(spaces))
    for qi, q in enumerate(QUALITIES):
        for ti, task in enumerate(tasks):
            ax = axes[qi, ti]
            for vi, (variant, colour, marker, band) in enumerate((("raw", "C0", "o", "0.75"),
                                                                    ("lda", "C3", "s", "#9ecae1"))):
                rows = [lookup.get((task, s, variant)) for s in spaces]
                ok = [i for i, r in enumerate(rows) if r is not None and r.get(q) is not None]
                if not ok:
                    continue
                xs = x[ok] + (vi - 0.5) * 0.25
                null = np.array([rows[i][f"{q}_null"] for i in ok])
                sd = np.array([rows[i][f"{q}_null_sd"] or 0.0 for i in ok])
                ax.bar(xs, 4 * sd, bottom=null - 2 * sd, width=0.22, color=band, alpha=0.8,
                       label=f"null ±2sd ({variant})" if ti == 0 else None)
                val = np.array([rows[i][q] for i in ok])
                lo = np.array([rows[i][f"{q}_ci_lo"] if rows[i][f"{q}_ci_lo"] is not None else rows[i][q] for i in ok])
                hi = np.array([rows[i][f"{q}_ci_hi"] if rows[i][f"{q}_ci_hi"] is not None else rows[i][q] for i in ok])
                ax.errorbar(xs, val, yerr=[val - lo, hi - val], fmt=marker, color=colour, ms=5,
                            mfc=colour if variant == "raw" else "white", label=variant if ti == 0 else None)
            ax.axhline(0.0, color="k", lw=0.5)
            ax.set_xticks(x, spaces, rotation=45, fontsize=7)
            if qi == 0:
                ax.set_title(task, fontsize=9)
            if ti == 0:
                ax.set_ylabel(q.replace("_", " "))
    axes[0, 0].legend(fontsize=6, loc="best")
    fig.suptitle("Word-pair crystals: quality vs shuffled-pair null (raw and after LDA)", fontsize=10)
    return fig


def _pca_figure(task: _TaskRows, acts: np.ndarray, basis: np.ndarray) -> dict[str, Any]:
    """2-D PCA of the task's words in activation space, arrows a -> b; buttons switch between
    the raw vectors and the LDA-cleaned ones (each with its own PCA)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    titles = []
    for vi, variant in enumerate(VARIANTS):
        vecs = acts if variant == "raw" else project_out(acts, basis)
        pts = np.vstack([vecs[task.ia], vecs[task.ib]])
        pts = pts - pts.mean(axis=0)
        _, s, vt = np.linalg.svd(pts, full_matrices=False)
        xy = pts @ vt[:2].T
        if xy.shape[1] < 2:
            xy = np.hstack([xy, np.zeros((len(xy), 2 - xy.shape[1]))])
        ev = (s[:2] ** 2) / max(float((s ** 2).sum()), 1e-300)
        n = len(task.pairs)
        a_xy, b_xy = xy[:n], xy[n:]
        lx, ly, sizes = [], [], []
        for (ax_, ay_), (bx_, by_) in zip(a_xy, b_xy):
            lx += [ax_, bx_, None]
            ly += [ay_, by_, None]
            sizes += [0, 11, 0]
        visible = vi == 0
        fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines+markers", line={"color": "grey", "width": 1},
                                 marker={"symbol": "arrow", "angleref": "previous", "size": sizes, "color": "grey"},
                                 hoverinfo="skip", showlegend=False, visible=visible))
        for pts_xy, words, colour, label in ((a_xy, [p[0] for p in task.pairs], "#1f77b4", "a"),
                                             (b_xy, [p[1] for p in task.pairs], "#d62728", "b")):
            fig.add_trace(go.Scatter(x=pts_xy[:, 0], y=pts_xy[:, 1], mode="markers+text", text=words,
                                     textposition="top center", textfont={"size": 9},
                                     marker={"color": colour, "size": 6}, name=f"{label} ({variant})",
                                     visible=visible))
        titles.append(f"{task.name}: PCA of activations ({variant}; PC1 {ev[0]:.0%}, PC2 "
                      f"{ev[1] if len(ev) > 1 else 0.0:.0%} of the task's variance)")
    n_per = 3
    buttons = [{"label": variant, "method": "update",
                "args": [{"visible": [i // n_per == vi for i in range(n_per * len(VARIANTS))]},
                         {"title": {"text": titles[vi]}}]} for vi, variant in enumerate(VARIANTS)]
    fig.update_layout(title={"text": titles[0]}, updatemenus=[{"buttons": buttons, "type": "buttons",
                                                               "direction": "right", "x": 0.0, "y": 1.12}],
                      xaxis_title="PC1", yaxis_title="PC2", margin={"t": 80})
    return fig.to_plotly_json()
