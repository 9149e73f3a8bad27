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

(b) **Feature completeness.** Shipped concept lists (chemical elements, countries, capitals,
    animals, foods; ``saeatlas/data/concepts``) are matched as token sequences in the
    training split (frequency f = occurrences / training tokens) and in the evaluation rows
    (where the codes are). For each (concept, size) we decide whether a latent *specific* to
    the concept exists (criterion in ``judge_concepts``), then fit

        P(feature exists) = sigmoid(a + b * x),   x = log10(f * A_n),

    A_n = alive latents of size n, pooled over sizes. The 50% point x50 = -a / b;
    10**x50 = f50 * A_n is the paper's "slightly lower than the inverse of the number of
    alive features" when < 1. CI: bootstrap over *concepts* (a concept's judgements at all
    sizes stay together: they are not independent). The fit is Firth's penalised logistic
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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy import sparse, special, stats
from tqdm.auto import tqdm

from saeatlas.analysis.config import config_from_section
from saeatlas.analysis.output import AnalysisOutput

CONCEPT_DIR = Path(__file__).resolve().parents[1] / "data" / "concepts"
CATEGORIES = ("elements", "countries", "capitals", "animals", "foods")
POWER_LAW_QUANTITIES = ("alive", "dead", "median_density")


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalingConfig:
    """Settings of the ``scaling`` stage (params.yaml section ``scaling:``, same key names)."""

    # Bootstrap replicates, for both the power-law CIs (over contexts) and the x50 CI (over
    # concepts): ~1000 makes the 2.5%/97.5% tails stable to about +-0.1 sd; costs seconds.
    n_bootstrap: int = 1000
    seed: int = 0  # of every resample; same seed, same CIs
    ci_level: float = 0.95  # two-sided level of every reported interval
    # A latent is specific to a concept when at least half of its firings are on the
    # concept's tokens (precision) and it fires on at least half of the concept's
    # occurrences (recall): "mostly about the concept" and "mostly there for the concept".
    precision_threshold: float = 0.5
    recall_threshold: float = 0.5
    # Concepts with fewer evaluation occurrences are not judged (and are counted): with 5,
    # recall >= 0.5 needs 3 hits, more than a one-off coincidence; fewer would let a single
    # stray firing decide.
    min_eval_occurrences: int = 5
    # The logistic 50% point is reported only with at least this many (concept, size) pairs
    # with a feature *and* without one: with fewer, the curve's location is set by a couple
    # of points (or by the penalty) and would be an invented number.
    min_events: int = 3
    # The x50 CI is reported only if at least this fraction of the concept resamples give an
    # estimable x50; otherwise the percentiles would describe a selected subset.
    min_estimable_fraction: float = 0.9
    categories: tuple[str, ...] = CATEGORIES  # which shipped concept lists to use
    density_bin_width: float = 0.25  # decades per bin of the log10-density histograms
    progress: bool = True  # tqdm bars on the loops that take seconds

    def __post_init__(self) -> None:
        if self.n_bootstrap < 0:
            raise ValueError("scaling.n_bootstrap must be >= 0")
        if not 0.0 < self.ci_level < 1.0:
            raise ValueError("scaling.ci_level must be in (0, 1)")
        for name in ("precision_threshold", "recall_threshold", "min_estimable_fraction"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"scaling.{name} must be in (0, 1], got {value}")
        if self.min_eval_occurrences < 1 or self.min_events < 1:
            raise ValueError("scaling.min_eval_occurrences and scaling.min_events must be >= 1")
        if self.density_bin_width <= 0:
            raise ValueError("scaling.density_bin_width must be > 0")
        unknown = sorted(set(self.categories) - set(available_categories()))
        if unknown:
            raise ValueError(f"scaling.categories: unknown {unknown}; shipped: {available_categories()}")

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> "ScalingConfig":
        """Build from the ``scaling:`` section; keys are the field names, missing ones default."""
        return config_from_section(cls, section, "scaling")


# --------------------------------------------------------------------------------------
# Concepts
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Concept:
    """One concept of a shipped list: its name, its category (the file) and its aliases."""

    name: str
    category: str
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class TokenizedConcept:
    """A concept with the token-id sequences that count as an occurrence of it.

    ``forms[i]`` is the encoding of ``surfaces[i]``. ``dropped`` lists surfaces that were
    not kept because another concept has the same token sequence (see ``tokenize_concepts``).
    """

    concept: Concept
    forms: tuple[tuple[int, ...], ...]
    surfaces: tuple[str, ...]
    dropped: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.concept.name

    @property
    def category(self) -> str:
        return self.concept.category


def available_categories() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in CONCEPT_DIR.glob("*.txt")))


def _parse_concept_file(path: Path, category: str) -> list[Concept]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()  # "#" starts a comment (no name contains one)
        if not line:
            continue
        names = [part.strip() for part in line.split("|") if part.strip()]
        out.append(Concept(names[0], category, tuple(names[1:])))
    return out


def load_concepts(categories: Iterable[str] | None = None) -> list[Concept]:
    """The shipped concept lists (``saeatlas/data/concepts/<category>.txt``), in file order."""
    cats = CATEGORIES if categories is None else tuple(categories)
    known = available_categories()
    out: list[Concept] = []
    for cat in cats:
        if cat not in known:
            raise ValueError(f"unknown concept category {cat!r}; shipped: {known}")
        out.extend(_parse_concept_file(CONCEPT_DIR / f"{cat}.txt", cat))
    return out


def tokenize_concepts(concepts: Sequence[Concept], encode: Callable[[str], list[int]]) -> list[TokenizedConcept]:
    """Token-id sequences of the surface forms we match for each concept.

    For every name and alias: as written and with its first letter capitalised (sentence
    starts: "iron" / "Iron"), each with a leading space (" Paris", a word inside a line) and
    without ("Paris", after a newline or punctuation). With a byte-level BPE these are four
    different token sequences. No lower-casing of proper names (" paris" is rare and often
    something else).

    A token sequence claimed by two concepts would be counted for both. Rule: a form written
    explicitly in a list beats one derived by capitalisation (country "Turkey" keeps
    "Turkey"; the animal "turkey" keeps only its lower-case forms); a form claimed
    explicitly by several concepts is dropped from all of them (recorded in ``dropped``).
    """
    claims: dict[tuple[int, ...], list[tuple[int, str, bool]]] = {}
    for ci, concept in enumerate(concepts):
        for name in concept.names:
            variants = [(name, False)]
            cap = name[:1].upper() + name[1:]
            if cap != name:
                variants.append((cap, True))
            for text, derived in variants:
                for surface in (" " + text, text):
                    ids = tuple(int(t) for t in encode(surface))
                    if ids:
                        claims.setdefault(ids, []).append((ci, surface, derived))
    forms: list[list[tuple[tuple[int, ...], str]]] = [[] for _ in concepts]
    dropped: list[list[str]] = [[] for _ in concepts]
    for ids, owners in claims.items():
        by_concept: dict[int, tuple[str, bool]] = {}
        for ci, surface, derived in owners:  # one entry per concept, explicit preferred
            if ci not in by_concept or (by_concept[ci][1] and not derived):
                by_concept[ci] = (surface, derived)
        if len(by_concept) == 1:
            winner = next(iter(by_concept))
        else:
            explicit = [ci for ci, (_, derived) in by_concept.items() if not derived]
            winner = explicit[0] if len(explicit) == 1 else None
        for ci, (surface, _) in by_concept.items():
            if ci == winner:
                forms[ci].append((ids, surface))
            else:
                dropped[ci].append(surface)
    return [TokenizedConcept(c, tuple(f for f, _ in forms[i]), tuple(s for _, s in forms[i]), tuple(dropped[i]))
            for i, c in enumerate(concepts)]


@dataclass(frozen=True)
class WordBoundaries:
    """Which tokens glue onto their neighbours into one word (both bool, indexed by token id).

    ``glued_left[t]``: the text of t starts with a letter or digit (no space): after a token
    ending in a letter or digit it continues that word. ``glued_right[t]``: the text ends in
    a letter or digit. Why: " Niger" followed by "ia" is "Nigeria", " bee" + "f" is "beef",
    " conc" + "at" holds "at"; an occurrence must not be glued to the token before its
    first or after its last.
    """

    glued_left: np.ndarray
    glued_right: np.ndarray


def word_boundaries(token_texts: Sequence[str]) -> WordBoundaries:
    """From each token's decoded text (``[tok.decode([i]) for i in range(len(tok))]``)."""
    left = np.array([bool(t) and t[0].isalnum() for t in token_texts], dtype=bool)
    right = np.array([bool(t) and t[-1].isalnum() for t in token_texts], dtype=bool)
    return WordBoundaries(left, right)


# --------------------------------------------------------------------------------------
# Matching concepts in token arrays
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Matches:
    concept: np.ndarray  # int64 [m]
    row: np.ndarray  # int64 [m]: row of the 2-D token array
    start: np.ndarray  # int64 [m]: column of the first token
    length: np.ndarray  # int64 [m]


def _empty_matches() -> _Matches:
    z = np.zeros(0, dtype=np.int64)
    return _Matches(z, z, z, z)


def _lookup(mask: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """mask[ids], False for ids outside the mask (special tokens added after the vocabulary)."""
    inside = (ids >= 0) & (ids < len(mask))
    out = np.zeros(ids.shape, dtype=bool)
    out[inside] = mask[ids[inside]]
    return out


def _match(concepts: Sequence[TokenizedConcept], tokens: np.ndarray, boundaries: WordBoundaries | None,
           progress: bool = False) -> _Matches:
    """Every occurrence of every concept's forms in the rows of ``tokens`` [rows, T].

    Vectorised per form length L: the first m tokens of every window are packed into one
    int64 key (b bits per token id, m = min(L, 63 // b)), looked up among the forms' keys with
    ``searchsorted``; forms longer than m tokens are then verified on their remaining tokens.
    Windows never cross rows (rows are contexts). Afterwards:
    1. nesting: a match overlapping a *longer* match is dropped ("Guinea" inside "Papua New
       Guinea", "Sudan" in "South Sudan", "Mexico" in "Mexico City"); done before the
       boundary check, so "Guinea piglet" does not become "Guinea";
    2. boundaries (if given): a match glued to the token before or after is dropped.
    """
    table: dict[tuple[int, ...], int] = {}
    for ci, tc in enumerate(concepts):
        for form in tc.forms:
            if table.setdefault(form, ci) != ci:
                raise ValueError(f"token sequence {form} belongs to two concepts; use tokenize_concepts")
    tok = np.ascontiguousarray(tokens, dtype=np.int64)
    if tok.ndim != 2:
        raise ValueError(f"token array must be 2-D [rows, T], got shape {tok.shape}")
    if not table or tok.size == 0:
        return _empty_matches()
    n_rows, T = tok.shape
    max_id = max(int(tok.max()), max(max(f) for f in table))
    if int(tok.min()) < 0 or min(min(f) for f in table) < 0:
        raise ValueError("token ids must be non-negative")
    bits = max(1, max_id.bit_length())
    per_key = max(1, 63 // bits)
    by_len: dict[int, list[tuple[tuple[int, ...], int]]] = {}
    for form, ci in table.items():
        by_len.setdefault(len(form), []).append((form, ci))

    parts: list[tuple[np.ndarray, ...]] = []
    for L in tqdm(sorted(by_len), desc="matching concepts", unit="length", disable=not progress, leave=False):
        if L > T:
            continue
        group = by_len[L]
        m = min(L, per_key)
        width = T - L + 1
        key = tok[:, :width].copy()  # key of window (r, s) = packed tok[r, s:s+m]
        for i in range(1, m):
            key <<= bits
            key |= tok[:, i:i + width]
        key = key.ravel()
        fseq = np.array([f for f, _ in group], dtype=np.int64)  # [F, L]
        fci = np.array([ci for _, ci in group], dtype=np.int64)
        fkey = fseq[:, 0].copy()
        for i in range(1, m):
            fkey = (fkey << bits) | fseq[:, i]
        order = np.argsort(fkey, kind="stable")
        skey = fkey[order]
        pos = np.minimum(np.searchsorted(skey, key), len(skey) - 1)
        cand = np.flatnonzero(skey[pos] == key)
        rows, starts = cand // width, cand % width
        if L == m:  # the key is the whole form: distinct forms have distinct keys
            parts.append((fci[order[pos[cand]]], rows, starts, np.full(len(cand), L)))
            continue
        ck = key[cand]
        left = np.searchsorted(skey, ck, "left")
        mult = np.searchsorted(skey, ck, "right") - left  # forms sharing this m-token prefix
        tail = np.arange(m, L)
        for j in range(int(mult.max(initial=0))):
            sel = np.flatnonzero(j < mult)
            f = order[left[sel] + j]
            window = tok[rows[sel, None], starts[sel, None] + tail]
            ok = (window == fseq[f][:, m:]).all(axis=1)
            parts.append((fci[f[ok]], rows[sel][ok], starts[sel][ok], np.full(int(ok.sum()), L)))
    if not parts:
        return _empty_matches()
    concept = np.concatenate([p[0] for p in parts]).astype(np.int64)
    row = np.concatenate([p[1] for p in parts]).astype(np.int64)
    start = np.concatenate([p[2] for p in parts]).astype(np.int64)
    length = np.concatenate([p[3] for p in parts]).astype(np.int64)
    if len(concept) == 0:
        return _empty_matches()

    # 1. nesting: cover[p] = length of the longest match covering flat position p
    flat = row * T + start
    cover = np.zeros(n_rows * T, dtype=np.int32)
    lengths = np.unique(length)
    for L in lengths:  # ascending, so longer matches overwrite: cover = max
        sel = length == L
        cover[(flat[sel, None] + np.arange(L)).ravel()] = L
    keep = np.ones(len(concept), dtype=bool)
    for L in lengths:
        sel = np.flatnonzero(length == L)
        keep[sel] = cover[flat[sel, None] + np.arange(L)].max(axis=1) <= L
    # 2. word boundaries
    if boundaries is not None:
        first = tok[row, start]
        last = tok[row, start + length - 1]
        prev = tok[row, np.maximum(start - 1, 0)]
        nxt = tok[row, np.minimum(start + length, T - 1)]
        glued_before = (start > 0) & _lookup(boundaries.glued_right, prev) & _lookup(boundaries.glued_left, first)
        glued_after = (start + length < T) & _lookup(boundaries.glued_right, last) & _lookup(boundaries.glued_left, nxt)
        keep &= ~(glued_before | glued_after)
    concept, row, start, length = concept[keep], row[keep], start[keep], length[keep]
    order = np.lexsort((start, row, concept))
    return _Matches(concept[order], row[order], start[order], length[order])


@dataclass(frozen=True)
class ConceptCounts:
    """Occurrences of each concept in a token array, and the number of tokens it holds."""

    counts: np.ndarray  # int64 [n_concepts]
    n_tokens: int

    @property
    def frequency(self) -> np.ndarray:
        """f = occurrences / tokens (per token, as the paper's "frequency in the training data")."""
        return self.counts / max(self.n_tokens, 1)


def count_occurrences(concepts: Sequence[TokenizedConcept], contexts: np.ndarray,
                      boundaries: WordBoundaries | None = None, *, skip_first_column: bool = False,
                      progress: bool = False) -> ConceptCounts:
    """Count every concept's occurrences in ``contexts`` [n_contexts, T] (no match crosses rows).

    ``skip_first_column``: column 0 is the BOS the corpus puts in front of every context: not
    text, so neither matched nor counted among the tokens.
    """
    arr = np.asarray(contexts)
    if skip_first_column:
        arr = arr[:, 1:]
    matches = _match(concepts, arr, boundaries, progress)
    return ConceptCounts(np.bincount(matches.concept, minlength=len(concepts)).astype(np.int64), int(arr.size))


@dataclass(frozen=True)
class Occurrences:
    """Concept occurrences in the evaluation rows: one entry per occurrence, sorted by concept.

    ``start`` is the flat code row of its first token, ``length`` its number of tokens; the
    occurrence covers rows ``start .. start + length - 1`` (never across a context).
    """

    concept: np.ndarray  # int64 [m]
    start: np.ndarray  # int64 [m]
    length: np.ndarray  # int64 [m]
    n_concepts: int

    @property
    def last(self) -> np.ndarray:
        """Row of each occurrence's last token."""
        return self.start + self.length - 1

    def counts(self) -> np.ndarray:
        return np.bincount(self.concept, minlength=self.n_concepts).astype(np.int64)

    def token_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(occurrence index, code row) of every token of every occurrence."""
        total = int(self.length.sum())
        occ = np.repeat(np.arange(len(self.start)), self.length)
        offset = np.arange(total) - np.repeat(np.cumsum(self.length) - self.length, self.length)
        return occ, np.repeat(self.start, self.length) + offset


def find_occurrences(concepts: Sequence[TokenizedConcept], eval_tokens: np.ndarray, positions_per_context: int,
                     boundaries: WordBoundaries | None = None, progress: bool = False) -> Occurrences:
    """Where each concept occurs among the evaluation rows (``eval_tokens`` [N], aligned with
    the code rows: row r is context r // P, P = ``positions_per_context``).

    All tokens of an occurrence are kept (``Occurrences.token_rows``), not only the last: a
    latent for a multi-token name may fire on its last token (where the model has read the
    whole name) or on every token; ``judge_concepts`` credits both (see there).
    """
    tokens = np.asarray(eval_tokens)
    P = int(positions_per_context)
    if tokens.ndim != 1 or P < 1 or len(tokens) % P:
        raise ValueError(f"eval_tokens: {tokens.shape} is not a whole number of contexts of {P} positions")
    matches = _match(concepts, tokens.reshape(-1, P), boundaries, progress)
    return Occurrences(matches.concept, matches.row * P + matches.start, matches.length, len(concepts))


# --------------------------------------------------------------------------------------
# Codes: per-size feature statistics
# --------------------------------------------------------------------------------------


def _binary(codes: Any) -> sparse.csr_matrix:
    """Firing pattern (1 where activation > 0) as float32 CSR: sums of it count exactly (< 2^24)."""
    b = sparse.csr_matrix(codes, copy=True)
    b.sum_duplicates()
    b.data = (b.data > 0).astype(np.float32)
    b.eliminate_zeros()
    return b


def _context_matrix(n_rows: int, positions_per_context: int) -> sparse.csr_matrix:
    """A [n_contexts, N]: A[c, r] = 1 iff row r belongs to context c = r // P."""
    n_ctx = n_rows // positions_per_context
    return sparse.csr_matrix((np.ones(n_rows, dtype=np.float32), (np.arange(n_rows) // positions_per_context,
                                                                   np.arange(n_rows))), shape=(n_ctx, n_rows))


def _median_of_positive_columns(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of counts [n, R]: number of positive entries, and their median (NaN if none)."""
    n = counts.shape[0]
    alive = (counts > 0).sum(axis=0)
    srt = np.sort(counts, axis=0)  # positives are the last ``alive`` entries of each column
    cols = np.arange(counts.shape[1])
    lo = np.clip(n - alive + (alive - 1) // 2, 0, n - 1)
    hi = np.clip(n - alive + alive // 2, 0, n - 1)
    med = 0.5 * (srt[lo, cols] + srt[hi, cols])
    return alive, np.where(alive > 0, med, np.nan)


@dataclass
class _SizeStats:
    size: int
    fires: np.ndarray  # int64 [n]: evaluation rows on which each latent fires
    context_counts: sparse.csr_matrix  # [n_latents, n_contexts]: firings per latent per context
    row_active: np.ndarray  # bool [N]: rows with at least one active latent


def _size_stats(size: int, codes: Any, positions_per_context: int) -> tuple[_SizeStats, sparse.csr_matrix]:
    b = _binary(codes)
    fires = np.bincount(b.indices, minlength=size).astype(np.int64)
    ctx = (_context_matrix(b.shape[0], positions_per_context) @ b).T.tocsr()
    return _SizeStats(size, fires, ctx, np.diff(b.indptr) > 0), b


# --------------------------------------------------------------------------------------
# Power laws
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerLawFit:
    """v(n) = prefactor * n^exponent, fitted by OLS on log10 v = log10 C + alpha log10 n."""

    quantity: str
    estimated: bool
    reason: str = ""
    exponent: float | None = None
    prefactor: float | None = None
    r2: float | None = None
    se_fit: float | None = None  # OLS standard error of alpha across sizes (needs >= 3 sizes)
    ci_low: float | None = None  # estimate -+ z * sd(bootstrap)
    ci_high: float | None = None
    percentile_low: float | None = None  # the percentile interval, for comparison
    percentile_high: float | None = None
    bootstrap_sd: float | None = None
    bootstrap_shift: float | None = None  # median(bootstrap) - estimate
    bootstrap_used: int = 0


def _ols_loglog(sizes: np.ndarray, values: np.ndarray) -> tuple[float, float, float | None, float]:
    """Slope alpha, intercept log10 C, se(alpha), R^2 of log10 v = log10 C + alpha log10 n."""
    x, y = np.log10(sizes), np.log10(values)
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    resid = y - (intercept + slope * x)
    ssr, sst = float((resid ** 2).sum()), float(((y - ym) ** 2).sum())
    se = math.sqrt(ssr / (len(x) - 2) / sxx) if len(x) > 2 else None  # se(alpha)^2 = s^2 / Sxx
    r2 = 1.0 - ssr / sst if sst > 0 else 1.0
    return slope, intercept, se, r2


def fit_power_law(quantity: str, sizes: Sequence[int], values: Sequence[float], boot: np.ndarray | None,
                  ci_level: float) -> PowerLawFit:
    """Fit v = C n^alpha across sizes; CI from bootstrap replicates ``boot`` [R, S] (see module doc)."""
    n = np.asarray(sizes, dtype=float)
    v = np.asarray(values, dtype=float)
    if len(n) < 2:
        return PowerLawFit(quantity, False, f"a power law needs >= 2 sizes, have {len(n)}")
    if not np.all(np.isfinite(v) & (v > 0)):
        return PowerLawFit(quantity, False, f"{quantity} is not positive at every size ({v.tolist()}): no log-log fit")
    slope, intercept, se, r2 = _ols_loglog(n, v)
    fit = dict(exponent=slope, prefactor=10.0 ** intercept, r2=r2, se_fit=se)
    if boot is not None and len(boot):
        ok = np.all(np.isfinite(boot) & (boot > 0), axis=1)
        slopes = np.array([_ols_loglog(n, row)[0] for row in boot[ok]])
        if len(slopes) >= 2:
            z = float(stats.norm.ppf(0.5 + ci_level / 2))
            sd = float(slopes.std(ddof=1))
            tail = 100 * (1 - ci_level) / 2
            fit.update(ci_low=slope - z * sd, ci_high=slope + z * sd, bootstrap_sd=sd,
                       bootstrap_shift=float(np.median(slopes) - slope),
                       percentile_low=float(np.percentile(slopes, tail)),
                       percentile_high=float(np.percentile(slopes, 100 - tail)), bootstrap_used=int(len(slopes)))
    return PowerLawFit(quantity, True, **fit)


def _bootstrap_size_stats(stats_by_size: list[_SizeStats], tokens_per_context: np.ndarray, n_boot: int,
                          rng: np.random.Generator, progress: bool) -> dict[str, np.ndarray]:
    """Per replicate and size: alive count and median density, on a resample of contexts.

    Replicate weights w ~ Multinomial(n_ctx, 1/n_ctx) (how often each context is drawn); the
    same w for every size. Latent j's firings on the resample = sum_c w_c * count[j, c];
    tokens on the resample = sum_c w_c * tokens_c; density = firings / tokens.
    """
    n_ctx = len(tokens_per_context)
    S = len(stats_by_size)
    alive = np.zeros((n_boot, S))
    median_density = np.zeros((n_boot, S))
    if n_boot == 0 or n_ctx == 0:
        return {"alive": alive[:0], "median_density": median_density[:0]}
    weights = rng.multinomial(n_ctx, np.full(n_ctx, 1.0 / n_ctx), size=n_boot).astype(np.float32)  # [R, n_ctx]
    widest = max(s.size for s in stats_by_size)
    batch = max(1, min(n_boot, (1 << 23) // widest))  # counts [n, batch] float32 stays <= 32 MiB
    for b0 in tqdm(range(0, n_boot, batch), desc="bootstrap (contexts)", disable=not progress, leave=False):
        w = weights[b0:b0 + batch].T  # [n_ctx, B]
        tokens = w.T.astype(np.float64) @ tokens_per_context  # [B]
        for si, st in enumerate(stats_by_size):
            counts = np.asarray(st.context_counts @ w)  # [n, B]
            a, med = _median_of_positive_columns(counts)
            alive[b0:b0 + batch, si] = a
            median_density[b0:b0 + batch, si] = med / tokens
    return {"alive": alive, "median_density": median_density}


# --------------------------------------------------------------------------------------
# Completeness: judging (concept, size)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """Per concept, for one size: the best latent and whether it is specific to the concept."""

    best_feature: np.ndarray  # int64 [C], -1 when no latent fires on the concept at all
    precision: np.ndarray  # float [C]
    recall: np.ndarray  # float [C]
    exists: np.ndarray  # bool [C]


def judge_concepts(codes: Any, occurrences: Occurrences, precision_threshold: float, recall_threshold: float,
                   fires: np.ndarray | None = None) -> Judgement:
    """Does a latent specific to each concept exist in these codes [N, n]?

    Criterion (per latent j and concept c; "fires" = activation > 0):

        precision(j, c) = #{rows where j fires that are tokens of an occurrence of c} / #{rows where j fires}
        recall(j, c)    = #{occurrences of c on any of whose tokens j fires} / #{occurrences of c}
        exists(c)       = some j has precision >= precision_threshold and recall >= recall_threshold

    Precision counts tokens, recall counts occurrences: a latent firing on the last token of
    " Papua New Guinea" only, or on all three tokens, is equally specific and equally complete;
    marking only the last token would call the second imprecise, marking all tokens for
    recall would call the first incomplete. The best latent reported is, among those that
    qualify (else among all), the one with the largest F1 = 2PR / (P + R).
    Sparse throughout: U [C, N] (concept token rows) @ B [N, n] and O [m, N] (occurrence rows)
    @ B; nothing dense of size N x n.
    """
    b = _binary(codes)
    N, n = b.shape
    C = occurrences.n_concepts
    if fires is None:
        fires = np.bincount(b.indices, minlength=n)
    best = np.full(C, -1, dtype=np.int64)
    prec = np.zeros(C)
    rec = np.zeros(C)
    exists = np.zeros(C, dtype=bool)
    m = len(occurrences.start)
    if m == 0:
        return Judgement(best, prec, rec, exists)
    occ, rows = occurrences.token_rows()
    if rows.max() >= N:
        raise ValueError(f"occurrence rows reach {rows.max()}, codes have {N} rows")
    ones = np.ones(len(rows), dtype=np.float32)
    U = sparse.csr_matrix((ones, (occurrences.concept[occ], rows)), shape=(C, N))
    U.sum_duplicates()
    U.data[:] = 1.0  # a token shared by two occurrences of c counts once
    O = sparse.csr_matrix((ones, (occ, rows)), shape=(m, N))
    G = sparse.csr_matrix((np.ones(m, dtype=np.float32), (occurrences.concept, np.arange(m))), shape=(C, m))
    tok_hits = (U @ b).tocsr()
    tok_hits.sum_duplicates()
    tok_hits.sort_indices()
    occ_fired = (O @ b).tocsr()
    occ_fired.data[:] = 1.0  # occurrence hit or not
    occ_hits = (G @ occ_fired).tocsr()
    occ_hits.sum_duplicates()
    occ_hits.sort_indices()
    concept_of = np.repeat(np.arange(C), np.diff(tok_hits.indptr))
    cols = tok_hits.indices.astype(np.int64)
    if np.array_equal(tok_hits.indptr, occ_hits.indptr) and np.array_equal(tok_hits.indices, occ_hits.indices):
        occ_count = occ_hits.data.astype(np.float64)  # same pattern: j hits c's tokens <=> j hits an occurrence
    else:  # pragma: no cover - the patterns agree by construction; keep an exact fallback anyway
        occ_count = np.asarray(occ_hits[concept_of, cols]).ravel().astype(np.float64)
    n_occ = occurrences.counts()
    p = tok_hits.data.astype(np.float64) / fires[cols]
    r = occ_count / n_occ[concept_of]
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)
    qualifies = (p >= precision_threshold) & (r >= recall_threshold)
    order = np.lexsort((-f1, ~qualifies, concept_of))  # per concept: qualifying first, then best F1
    first = order[np.r_[True, concept_of[order][1:] != concept_of[order][:-1]]] if len(order) else order
    cs = concept_of[first]
    best[cs], prec[cs], rec[cs], exists[cs] = cols[first], p[first], r[first], qualifies[first]
    return Judgement(best, prec, rec, exists)


# --------------------------------------------------------------------------------------
# Completeness: the logistic fit (Firth) and its 50% point
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogisticFit:
    """P(y=1 | x) = sigmoid(intercept + slope * x), by Firth-penalised maximum likelihood."""

    intercept: float
    slope: float
    penalized_loglik: float
    converged: bool
    n: int
    n_pos: int

    @property
    def x50(self) -> float:
        """sigmoid(a + b x50) = 1/2  <=>  x50 = -a / b."""
        return -self.intercept / self.slope if self.slope != 0 else math.inf


def fit_logistic(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, max_iter: int = 200,
                 tol: float = 1e-9) -> LogisticFit:
    """Firth's penalised logistic regression of y on [1, x].

    Maximises  l*(beta) = sum_i [y_i eta_i - log(1 + e^eta_i)] + 1/2 sum_g log det I_g(beta),
    eta = beta0 + beta1 x, I_g = X_g' W_g X_g, W = diag(p (1 - p)); one block per group
    (``groups``; one block if None). Blocks are what the collapse test needs: the
    per-size model's information is block-diagonal over sizes, so a shared curve penalised
    with the same blocks is nested in it (see ``_collapse``). Newton steps with the Fisher
    information on the modified score  U*_j = sum_i (y_i - p_i + h_i (1/2 - p_i)) x_ij,
    h_i = w_i x_i' I_g^{-1} x_i (the leverage), halving the step until l* does not decrease.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    g = np.zeros(len(x), dtype=np.int64) if groups is None else np.unique(groups, return_inverse=True)[1]
    G = int(g.max()) + 1 if len(g) else 1
    X = np.column_stack([np.ones_like(x), x])

    def evaluate(beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        eta = X @ beta
        p = special.expit(eta)
        w = p * (1 - p)
        ll = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
        s0 = np.bincount(g, w, minlength=G)
        s1 = np.bincount(g, w * x, minlength=G)
        s2 = np.bincount(g, w * x * x, minlength=G)
        det = np.maximum(s0 * s2 - s1 * s1, 1e-300)  # det I_g of [[s0, s1], [s1, s2]]
        h = w * (s2[g] - 2 * s1[g] * x + s0[g] * x * x) / det[g]
        score = X.T @ (y - p + h * (0.5 - p))
        info = X.T @ (X * w[:, None])
        return ll + 0.5 * float(np.log(det).sum()), score, info

    beta = np.zeros(2)
    obj, score, info = evaluate(beta)
    converged = False
    for _ in range(max_iter):
        try:
            step = np.linalg.solve(info + 1e-12 * np.eye(2), score)
        except np.linalg.LinAlgError:
            break
        for _ in range(40):
            new_obj, new_score, new_info = evaluate(beta + step)
            if new_obj >= obj - 1e-10:
                break
            step = step / 2
        beta = beta + step
        obj, score, info = new_obj, new_score, new_info
        if np.max(np.abs(step)) < tol:
            converged = True
            break
    return LogisticFit(float(beta[0]), float(beta[1]), obj, converged, int(len(y)), int(y.sum()))


def _x50_problem(fit: LogisticFit, x: np.ndarray, min_events: int, require_in_range: bool = True) -> str:
    """Why x50 cannot be estimated from ``fit`` on points x ("" if it can)."""
    n_neg = fit.n - fit.n_pos
    if fit.n_pos < min_events:
        return (f"only {fit.n_pos} of {fit.n} (concept, size) pairs have a concept-specific feature; "
                f"a 50% point needs >= {min_events} with and >= {min_events} without")
    if n_neg < min_events:
        return (f"{fit.n_pos} of {fit.n} (concept, size) pairs have a concept-specific feature, only {n_neg} lack one; "
                f"a 50% point needs >= {min_events} of each")
    if not fit.converged:
        return "the penalised logistic fit did not converge"
    if fit.slope <= 0:
        return f"P(feature exists) does not increase with log10(frequency x alive) (slope {fit.slope:.3g} <= 0)"
    if require_in_range and not (x.min() <= fit.x50 <= x.max()):
        return (f"the fitted 50% point ({fit.x50:.3g}) lies outside the observed range of "
                f"log10(frequency x alive) [{x.min():.3g}, {x.max():.3g}]: an extrapolation, not reported")
    return ""


def _collapse(x: np.ndarray, u: np.ndarray, y: np.ndarray, size_idx: np.ndarray, log_alive: np.ndarray,
              min_events: int) -> dict[str, Any]:
    """Do the per-size completeness curves collapse onto one curve in x = log10(f A_n)?

    Penalised likelihood-ratio tests (Heinze & Schemper 2002) of nested models, all with the
    per-size Jeffreys blocks: per-size curves (2S parameters) vs one curve in x (2), and vs
    one curve in u = log10 f (2). LR = 2 (l*_per-size - l*_shared) ~ chi2(2S - 2) under the
    shared model. (x = u + log10 A_n, so per-size curves are the same model in x or u.)
    Per-size 50% points give the descriptive version: SD over sizes of x50_n (rescaled) and
    of u50_n = x50_n - log10 A_n (unrescaled); collapse means SD_x << SD_u.
    Caveat: a concept's judgements at different sizes are correlated, so the chi2 p-value is
    optimistic (too small); read it with the spreads.
    """
    sizes = np.unique(size_idx)
    out: dict[str, Any] = {"per_size": {}}
    usable = [s for s in sizes if len(np.unique(x[size_idx == s])) >= 2]
    per_fits = {}
    for s in usable:
        sel = size_idx == s
        fit = fit_logistic(x[sel], y[sel])
        per_fits[s] = fit
        problem = _x50_problem(fit, x[sel], min_events)
        out["per_size"][int(s)] = {"fit": fit, "problem": problem,
                                   "x50": fit.x50 if not problem else None,
                                   "u50": fit.x50 - log_alive[s] if not problem else None}
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if len(usable) >= 2 and n_pos >= min_events and n_neg >= min_events:
        sel = np.isin(size_idx, usable)
        full = sum(f.penalized_loglik for f in per_fits.values())
        shared_x = fit_logistic(x[sel], y[sel], groups=size_idx[sel])
        shared_u = fit_logistic(u[sel], y[sel], groups=size_idx[sel])
        df = 2 * (len(usable) - 1)
        lr_x = max(0.0, 2 * (full - shared_x.penalized_loglik))
        lr_u = max(0.0, 2 * (full - shared_u.penalized_loglik))
        out.update(lr_estimated=True, lr_df=df, lr_stat=lr_x, lr_pvalue=float(stats.chi2.sf(lr_x, df)),
                   lr_stat_unrescaled=lr_u, lr_pvalue_unrescaled=float(stats.chi2.sf(lr_u, df)))
    else:
        out.update(lr_estimated=False,
                   lr_reason=f"needs >= 2 sizes and >= {min_events} pairs with and without a feature "
                             f"(have {len(usable)} sizes, {n_pos} with, {n_neg} without)")
    x50s = np.array([v["x50"] for v in out["per_size"].values() if v["x50"] is not None])
    u50s = np.array([v["u50"] for v in out["per_size"].values() if v["u50"] is not None])
    out["sizes_with_x50"] = int(len(x50s))
    if len(x50s) >= 2:
        sd_x, sd_u = float(x50s.std(ddof=1)), float(u50s.std(ddof=1))
        out.update(spread_estimated=True, x50_sd_rescaled=sd_x, x50_sd_unrescaled=sd_u,
                   spread_ratio=sd_x / sd_u if sd_u > 0 else None)
    else:
        out.update(spread_estimated=False)
    return out


# --------------------------------------------------------------------------------------
# Inputs and the stage
# --------------------------------------------------------------------------------------


@dataclass
class ScalingInputs:
    """Everything ``run`` needs, as plain arrays (the stage loads them; tests build them)."""

    sizes: tuple[int, ...]
    codes: dict[int, Any]  # size -> scipy CSR [N, size], same N evaluation rows for every size
    positions_per_context: int  # P: row r is evaluation context r // P
    eval_tokens: np.ndarray  # int [N]: the token at each code row
    train_contexts: np.ndarray  # int [n_ctx, T]: the SAE training split, for concept frequencies
    concepts: list[TokenizedConcept] = field(default_factory=list)
    train_has_bos: bool = True  # column 0 of train_contexts is BOS (not text: not counted)
    boundaries: WordBoundaries | None = None  # word-glue masks; None = no boundary check


def _validate(inputs: ScalingInputs) -> None:
    N = len(inputs.eval_tokens)
    P = inputs.positions_per_context
    if not inputs.sizes:
        raise ValueError("scaling: no dictionary sizes")
    if P < 1 or N % P:
        raise ValueError(f"scaling: {N} evaluation rows are not whole contexts of {P} positions")
    for n in inputs.sizes:
        if n not in inputs.codes:
            raise ValueError(f"scaling: no codes for size {n}")
        shape = inputs.codes[n].shape
        if shape != (N, n):
            raise ValueError(f"scaling: codes of size {n} have shape {shape}, expected {(N, n)}")
    if np.asarray(inputs.train_contexts).ndim != 2:
        raise ValueError("scaling: train_contexts must be 2-D [n_contexts, T]")


def _num(v: Any) -> float | int | None:
    """Plain Python number for tables/documents; None for missing or non-finite."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    v = float(v)
    return v if math.isfinite(v) else None


def run(config: ScalingConfig, inputs: ScalingInputs) -> AnalysisOutput:
    """Stage ``scaling``: alive/dead/density per size with power-law fits, and feature completeness."""
    _validate(inputs)
    sizes = tuple(sorted(int(n) for n in inputs.sizes))
    S = len(sizes)
    P = int(inputs.positions_per_context)
    N = len(inputs.eval_tokens)
    seeds = np.random.SeedSequence(config.seed).spawn(2)
    rng_ctx, rng_concepts = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])
    metrics: dict[str, float] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    documents: dict[str, Any] = {}
    notes: list[str] = []

    # ---- concept occurrences (size-independent) ------------------------------------------
    concepts = list(inputs.concepts)
    C = len(concepts)
    train = count_occurrences(concepts, inputs.train_contexts, inputs.boundaries,
                              skip_first_column=inputs.train_has_bos, progress=config.progress)
    occ = find_occurrences(concepts, np.asarray(inputs.eval_tokens), P, inputs.boundaries, config.progress)
    n_occ = occ.counts()

    # ---- one pass per size: firing counts, per-context counts, judgements ---------------
    per_size: list[_SizeStats] = []
    judgements: dict[int, Judgement] = {}
    row_active = np.zeros(N, dtype=bool)
    for n in tqdm(sizes, desc="scaling: sizes", disable=not config.progress):
        st, b = _size_stats(n, inputs.codes[n], P)
        per_size.append(st)
        row_active |= st.row_active
        judgements[n] = judge_concepts(b, occ, config.precision_threshold, config.recall_threshold, st.fires)
        del b
    n_eval = int(row_active.sum())  # rows the SAEs were applied to (outlier rows carry no code)
    if n_eval == 0:
        raise ValueError("scaling: no evaluation row has an active latent in any size")
    tokens_per_context = np.bincount(np.arange(N) // P, weights=row_active.astype(np.float64), minlength=N // P)

    # ---- (a) alive, dead, densities ---------------------------------------------------------
    boot = _bootstrap_size_stats(per_size, tokens_per_context, config.n_bootstrap, rng_ctx, config.progress)
    alive = np.array([int((st.fires > 0).sum()) for st in per_size])
    dead = np.array(sizes) - alive
    med_density = np.array([np.median(st.fires[st.fires > 0]) / n_eval if a else np.nan
                            for st, a in zip(per_size, alive)])
    metrics["evaluated_tokens"] = n_eval
    metrics["density_floor_log10"] = math.log10(1.0 / n_eval)  # one firing on the evaluation set
    width = config.density_bin_width
    lo_edge = math.floor(math.log10(1.0 / n_eval) / width) * width
    edges = np.arange(lo_edge, width / 2 + 1e-9, width)
    size_rows, hist_rows = [], []
    for si, (n, st) in enumerate(zip(sizes, per_size)):
        logd = np.log10(st.fires[st.fires > 0] / n_eval)
        q = np.percentile(logd, [10, 50, 90]) if len(logd) else [None] * 3
        row = {"size": n, "alive": int(alive[si]), "dead": int(dead[si]), "dead_fraction": float(dead[si] / n),
               "median_log10_density": _num(q[1]), "log10_density_p10": _num(q[0]),
               "log10_density_p90": _num(q[2]), "mean_density_alive": _num(st.fires.sum() / n_eval / max(alive[si], 1)),
               "alive_bootstrap_sd": _num(boot["alive"][:, si].std(ddof=1)) if len(boot["alive"]) > 1 else None,
               "alive_bootstrap_median": _num(np.median(boot["alive"][:, si])) if len(boot["alive"]) else None}
        size_rows.append(row)
        key = f"n{n}"
        metrics[f"{key}.alive"] = int(alive[si])
        metrics[f"{key}.dead"] = int(dead[si])
        metrics[f"{key}.dead_fraction"] = float(dead[si] / n)
        for name in ("median_log10_density", "log10_density_p10", "log10_density_p90", "alive_bootstrap_sd"):
            if row[name] is not None:
                metrics[f"{key}.{name}"] = row[name]
        counts, _ = np.histogram(logd, bins=edges)
        hist_rows += [{"size": n, "log10_density_low": float(a), "log10_density_high": float(b), "latents": int(c)}
                      for a, b, c in zip(edges[:-1], edges[1:], counts)]
    tables["sizes"] = size_rows
    tables["density_histogram"] = hist_rows

    boot_values = {"alive": boot["alive"], "dead": np.array(sizes)[None, :] - boot["alive"],
                   "median_density": boot["median_density"]}
    values = {"alive": alive, "dead": dead, "median_density": med_density}
    power_fits = {q: fit_power_law(q, sizes, values[q], boot_values[q], config.ci_level) for q in POWER_LAW_QUANTITIES}
    fit_rows = []
    for q, fit in power_fits.items():
        prefix = f"{q}_power_law"
        metrics[f"{prefix}.estimated"] = int(fit.estimated)
        if fit.estimated:
            metrics[f"{prefix}.exponent"] = fit.exponent
            metrics[f"{prefix}.prefactor"] = fit.prefactor
            metrics[f"{prefix}.r2"] = fit.r2
            if fit.se_fit is not None:
                metrics[f"{prefix}.exponent_se_fit"] = fit.se_fit
            if fit.ci_low is not None:
                metrics[f"{prefix}.exponent_ci_low"] = fit.ci_low
                metrics[f"{prefix}.exponent_ci_high"] = fit.ci_high
                metrics[f"{prefix}.bootstrap_shift"] = fit.bootstrap_shift
        else:
            notes.append(f"{q} power law not fitted: {fit.reason}")
        fit_rows.append({"quantity": q, "estimated": int(fit.estimated), "exponent": _num(fit.exponent),
                         "prefactor": _num(fit.prefactor), "r2": _num(fit.r2), "se_fit": _num(fit.se_fit),
                         "ci_low": _num(fit.ci_low), "ci_high": _num(fit.ci_high),
                         "percentile_low": _num(fit.percentile_low), "percentile_high": _num(fit.percentile_high),
                         "bootstrap_sd": _num(fit.bootstrap_sd), "bootstrap_shift": _num(fit.bootstrap_shift),
                         "bootstrap_used": fit.bootstrap_used, "reason": fit.reason})
    tables["power_law_fits"] = fit_rows

    # ---- (b) completeness ---------------------------------------------------------------------
    freq = train.frequency
    no_forms = np.array([len(c.forms) == 0 for c in concepts], dtype=bool)
    few_eval = ~no_forms & (n_occ < config.min_eval_occurrences)
    no_train = ~no_forms & ~few_eval & (train.counts == 0)
    judged = ~(no_forms | few_eval | no_train)
    concept_rows = []
    for ci, tc in enumerate(concepts):
        status = ("judged" if judged[ci] else "excluded: no surface form" if no_forms[ci]
                  else f"excluded: < {config.min_eval_occurrences} evaluation occurrences" if few_eval[ci]
                  else "excluded: absent from the training split")
        concept_rows.append({"concept": tc.name, "category": tc.category, "surfaces": "; ".join(map(repr, tc.surfaces)),
                             "dropped_surfaces": "; ".join(map(repr, tc.dropped)),
                             "train_count": int(train.counts[ci]), "frequency": float(freq[ci]),
                             "eval_occurrences": int(n_occ[ci]), "status": status})
    tables["concepts"] = concept_rows
    metrics.update({"completeness.concepts_total": C, "completeness.concepts_judged": int(judged.sum()),
                    "completeness.concepts_excluded": int(C - judged.sum()),
                    "completeness.concepts_excluded_few_eval": int(few_eval.sum()),
                    "completeness.concepts_excluded_no_train": int(no_train.sum()),
                    "completeness.concepts_excluded_no_forms": int(no_forms.sum()),
                    "completeness.train_tokens": train.n_tokens,
                    "completeness.word_boundaries_checked": int(inputs.boundaries is not None)})

    jidx = np.flatnonzero(judged)
    J = len(jidx)
    log_alive = np.log10(np.maximum(alive, 1)).astype(float)
    # [J, S] grids: x = log10(f * A_n), u = log10 f, y = exists
    xs = np.log10(freq[jidx])[:, None] + log_alive[None, :] if J else np.zeros((0, S))
    us = np.repeat(np.log10(freq[jidx])[:, None], S, axis=1) if J else np.zeros((0, S))
    ys = np.column_stack([judgements[n].exists[jidx] for n in sizes]).astype(float) if J else np.zeros((0, S))
    judgement_rows = []
    for jj, ci in enumerate(jidx):
        for si, n in enumerate(sizes):
            jd = judgements[n]
            judgement_rows.append({"concept": concepts[ci].name, "category": concepts[ci].category, "size": n,
                                   "alive": int(alive[si]), "frequency": float(freq[ci]),
                                   "log10_freq_times_alive": float(xs[jj, si]), "eval_occurrences": int(n_occ[ci]),
                                   "best_feature": int(jd.best_feature[ci]), "precision": float(jd.precision[ci]),
                                   "recall": float(jd.recall[ci]), "exists": int(jd.exists[ci])})
    tables["concept_judgements"] = judgement_rows
    x, u, y = xs.ravel(), us.ravel(), ys.ravel()
    size_idx = np.tile(np.arange(S), J)
    metrics["completeness.pairs_judged"] = int(len(y))
    metrics["completeness.pairs_exist"] = int(y.sum())
    for si, n in enumerate(sizes):
        metrics[f"n{n}.completeness.pairs_exist"] = int(ys[:, si].sum())

    summary: dict[str, Any] = {"pairs_judged": int(len(y)), "pairs_exist": int(y.sum())}
    fit = fit_logistic(x, y) if J and len(np.unique(x)) >= 2 else None
    problem = ("no concept could be judged" if not J else "all judged points have the same x" if fit is None
               else _x50_problem(fit, x, config.min_events))
    metrics["completeness.x50_estimated"] = int(not problem)
    if problem:
        summary["x50"] = None
        summary["x50_reason"] = problem
        notes.append(f"completeness 50% point not estimated: {problem}")
    else:
        metrics["completeness.x50"] = fit.x50
        metrics["completeness.slope"] = fit.slope
        metrics["completeness.freq50_times_alive"] = 10.0 ** fit.x50
        summary.update(x50=fit.x50, slope=fit.slope, intercept=fit.intercept, freq50_times_alive=10.0 ** fit.x50)
        # cluster bootstrap over concepts: resample concepts, keep each one's S judgements together
        boot_x50 = []
        for _ in tqdm(range(config.n_bootstrap), desc="bootstrap (concepts)", disable=not config.progress, leave=False):
            pick = rng_concepts.integers(0, J, J)
            bx, by = xs[pick].ravel(), ys[pick].ravel()
            if len(np.unique(bx)) < 2:
                continue
            bf = fit_logistic(bx, by)
            if not _x50_problem(bf, bx, config.min_events, require_in_range=False):
                boot_x50.append(bf.x50)
        frac = len(boot_x50) / config.n_bootstrap if config.n_bootstrap else 0.0
        metrics["completeness.bootstrap_estimable_fraction"] = frac
        ci_ok = config.n_bootstrap > 0 and frac >= config.min_estimable_fraction and len(boot_x50) >= 2
        metrics["completeness.x50_ci_estimated"] = int(ci_ok)
        if ci_ok:
            tail = 100 * (1 - config.ci_level) / 2
            lo, hi = np.percentile(boot_x50, [tail, 100 - tail])
            metrics["completeness.x50_ci_low"], metrics["completeness.x50_ci_high"] = float(lo), float(hi)
            metrics["completeness.freq50_times_alive_ci_low"] = 10.0 ** float(lo)
            metrics["completeness.freq50_times_alive_ci_high"] = 10.0 ** float(hi)
            summary.update(x50_ci=[float(lo), float(hi)])
        else:
            notes.append(f"completeness x50 CI not reported: only {len(boot_x50)} of {config.n_bootstrap} concept "
                         f"resamples gave an estimable 50% point (need {config.min_estimable_fraction:.0%})")

    # collapse across sizes
    col = _collapse(x, u, y, size_idx, log_alive, config.min_events) if J else {"per_size": {}, "lr_estimated": False,
                                                                                 "spread_estimated": False,
                                                                                 "sizes_with_x50": 0,
                                                                                 "lr_reason": "no concept judged"}
    metrics["completeness.collapse.lr_estimated"] = int(col["lr_estimated"])
    if col["lr_estimated"]:
        for k in ("lr_stat", "lr_df", "lr_pvalue", "lr_stat_unrescaled", "lr_pvalue_unrescaled"):
            metrics[f"completeness.collapse.{k}"] = col[k]
    else:
        notes.append(f"collapse likelihood-ratio test not run: {col['lr_reason']}")
    metrics["completeness.collapse.sizes_with_x50"] = col["sizes_with_x50"]
    metrics["completeness.collapse.spread_estimated"] = int(col["spread_estimated"])
    if col["spread_estimated"]:
        metrics["completeness.collapse.x50_sd_rescaled"] = col["x50_sd_rescaled"]
        metrics["completeness.collapse.x50_sd_unrescaled"] = col["x50_sd_unrescaled"]
        if col["spread_ratio"] is not None:
            metrics["completeness.collapse.spread_ratio"] = col["spread_ratio"]
    per_size_rows = []
    for si, n in enumerate(sizes):
        entry = col["per_size"].get(si)
        est = entry is not None and entry["x50"] is not None
        metrics[f"n{n}.completeness.x50_estimated"] = int(est)
        if est:
            metrics[f"n{n}.completeness.x50"] = entry["x50"]
        per_size_rows.append({"size": n, "alive": int(alive[si]), "pairs": J, "exist": int(ys[:, si].sum()) if J else 0,
                              "x50": _num(entry["x50"]) if entry else None,
                              "u50_log10_frequency": _num(entry["u50"]) if entry else None,
                              "slope": _num(entry["fit"].slope) if entry else None,
                              "reason": (entry["problem"] if entry else "fewer than 2 distinct x values")})
    tables["completeness_per_size"] = per_size_rows
    summary["collapse"] = {k: _num(v) if not isinstance(v, str) else v for k, v in col.items() if k != "per_size"}

    documents["scaling_summary"] = {
        "sizes": list(sizes), "evaluated_tokens": n_eval,
        "alive": alive.tolist(), "dead": dead.tolist(),
        "power_laws": {q: {k: (_num(v) if not isinstance(v, str) else v) for k, v in vars(f).items()}
                       for q, f in power_fits.items()},
        "completeness": summary,
        "notes": notes,
        "methods": {
            "alive": "a latent is alive if it fires (activation > 0) on at least one evaluated row",
            "evaluated_rows": "rows with >= 1 active latent in some size (outlier rows carry no code)",
            "power_law_ci": "bootstrap over evaluation contexts (same resample for all sizes); "
                            "CI = estimate -+ z sd(bootstrap); bootstrap_shift = median(bootstrap) - estimate",
            "concept_feature": (f"exists iff some latent has precision >= {config.precision_threshold} "
                                f"(share of its firing tokens that are concept tokens) and recall >= "
                                f"{config.recall_threshold} (share of the concept's occurrences it fires on)"),
            "exclusion": f"concepts with < {config.min_eval_occurrences} evaluation occurrences or none in training",
            "logistic": "Firth-penalised logistic regression of exists on x = log10(frequency x alive), pooled",
            "x50_ci": "percentile bootstrap over concepts (cluster: all sizes of a concept together)",
            "collapse": "penalised LR test: per-size curves vs one curve in x (and vs one in log10 frequency); "
                        "SD of per-size 50% points in x and in log10 frequency",
        },
    }

    figures = {"alive_power_law": _figure_power_law(sizes, alive, dead, power_fits),
               "density_distribution": _figure_densities(sizes, per_size, n_eval, edges)}
    if J:
        figures["completeness_curves"] = _figure_completeness(sizes, xs, us, ys, fit if not problem else None, col)
    interactive = {"completeness": _plotly_completeness(sizes, xs, ys, [concepts[c].name for c in jidx],
                                                        fit if not problem else None)}
    return AnalysisOutput(metrics=metrics, tables=tables, figures=figures, interactive=interactive,
                          documents=documents)


# --------------------------------------------------------------------------------------
# Figures (matplotlib Figure objects built directly; no pyplot state)
# --------------------------------------------------------------------------------------


def _size_colors(sizes: Sequence[int]) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(len(sizes) - 1, 1)) for i in range(len(sizes))]


def _figure_power_law(sizes: Sequence[int], alive: np.ndarray, dead: np.ndarray,
                      fits: Mapping[str, PowerLawFit]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    n = np.asarray(sizes, dtype=float)
    grid = np.geomspace(n.min(), n.max(), 50)
    ax1.loglog(n, n, ":", color="grey", label="all latents alive")
    ax1.loglog(n, alive, "o", color="C0", label="alive")
    f = fits["alive"]
    if f.estimated:
        ci = f" [{f.ci_low:.3f}, {f.ci_high:.3f}]" if f.ci_low is not None else ""
        ax1.loglog(grid, f.prefactor * grid ** f.exponent, "-", color="C0",
                   label=f"fit: alpha = {f.exponent:.3f}{ci}")
    ax1.set_xlabel("dictionary size n")
    ax1.set_ylabel("alive latents")
    ax1.legend(fontsize=8)
    ax1.set_title("alive latents vs size")
    ax2.semilogx(n, dead / n, "o-", color="C3")
    ax2.set_xlabel("dictionary size n")
    ax2.set_ylabel("dead fraction")
    ax2.set_title("dead fraction vs size")
    fig.tight_layout()
    return fig


def _figure_densities(sizes: Sequence[int], per_size: Sequence[_SizeStats], n_eval: int, edges: np.ndarray) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for color, n, st in zip(_size_colors(sizes), sizes, per_size):
        logd = np.log10(st.fires[st.fires > 0] / n_eval)
        counts, _ = np.histogram(logd, bins=edges)
        ax.stairs(counts / max(n, 1), edges, color=color, label=f"n = {n}")
    ax.axvline(math.log10(1 / n_eval), ls=":", color="grey", label="one firing")
    ax.set_xlabel("log10 firing density (alive latents)")
    ax.set_ylabel("fraction of the dictionary")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _binned(x: np.ndarray, y: np.ndarray, width: float = 0.25, min_points: int = 3) -> tuple[np.ndarray, np.ndarray]:
    bins = np.floor(x / width)
    centers, fracs = [], []
    for b in np.unique(bins):
        sel = bins == b
        if sel.sum() >= min_points:
            centers.append((b + 0.5) * width)
            fracs.append(y[sel].mean())
    return np.array(centers), np.array(fracs)


def _figure_completeness(sizes: Sequence[int], xs: np.ndarray, us: np.ndarray, ys: np.ndarray,
                         fit: LogisticFit | None, col: Mapping[str, Any]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    colors = _size_colors(sizes)
    for si, (n, color) in enumerate(zip(sizes, colors)):
        for ax, grid in ((ax1, xs), (ax2, us)):
            cx, cy = _binned(grid[:, si], ys[:, si])
            ax.plot(cx, cy, "o", color=color, alpha=0.8, label=f"n = {n}")
        entry = col["per_size"].get(si)
        if entry is not None:
            g = np.linspace(xs[:, si].min(), xs[:, si].max(), 100)
            p = special.expit(entry["fit"].intercept + entry["fit"].slope * g)
            ax1.plot(g, p, "--", color=color, lw=0.8)
            ax2.plot(g - (xs[0, si] - us[0, si]), p, "--", color=color, lw=0.8)
    if fit is not None:
        g = np.linspace(xs.min(), xs.max(), 200)
        ax1.plot(g, special.expit(fit.intercept + fit.slope * g), "k-", lw=2, label=f"shared fit, x50 = {fit.x50:.2f}")
        ax1.axvline(fit.x50, color="k", ls=":")
    ax1.axvline(0.0, color="grey", ls="-.", lw=0.8, label="frequency = 1 / alive")
    ax1.set_xlabel("log10(frequency x alive latents)")
    ax1.set_ylabel("P(concept-specific latent exists)")
    ax1.set_title("rescaled")
    ax2.set_xlabel("log10 frequency")
    ax2.set_title("not rescaled")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _plotly_completeness(sizes: Sequence[int], xs: np.ndarray, ys: np.ndarray, names: Sequence[str],
                         fit: LogisticFit | None) -> dict[str, Any]:
    import plotly.graph_objects as go

    traces = []
    jitter = np.random.default_rng(0).uniform(-0.03, 0.03, size=ys.shape)
    for si, n in enumerate(sizes):
        traces.append(go.Scatter(x=xs[:, si].tolist(), y=(ys[:, si] + jitter[:, si]).tolist(), mode="markers",
                                 name=f"n = {n}", text=list(names), opacity=0.6,
                                 hovertemplate="%{text}<br>x = %{x:.2f}<extra>" + f"n = {n}" + "</extra>"))
    if fit is not None and xs.size:
        g = np.linspace(float(xs.min()), float(xs.max()), 200)
        traces.append(go.Scatter(x=g.tolist(), y=special.expit(fit.intercept + fit.slope * g).tolist(),
                                 mode="lines", name=f"shared fit (x50 = {fit.x50:.2f})", line={"color": "black"}))
    layout = go.Layout(title="Feature completeness: does a concept-specific latent exist?",
                       xaxis={"title": "log10(frequency x alive latents)"},
                       yaxis={"title": "exists (jittered) / P(exists)"})
    return go.Figure(data=traces, layout=layout).to_plotly_json()
