"""The concepts of the completeness experiment: the shipped lists (``saeatlas/data/concepts``),
whole words drawn from the corpus by frequency band (``corpus_words``), their token-id forms,
and which tokens glue onto their neighbours into one word."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

CONCEPT_DIR = Path(__file__).resolve().parents[2] / "data" / "concepts"
CATEGORIES = ("elements", "countries", "capitals", "animals", "foods", "months", "weekdays", "numbers", "colours")
WORDS_CATEGORY = "words"  # the category of the concepts drawn from the corpus (``corpus_words``)


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



@dataclass(frozen=True)
class WordSampling:
    """How ``corpus_words`` draws whole words from the corpus (``ScalingConfig``'s ``words_*`` keys)."""

    per_band: int  # words drawn per frequency band (all of a band if it holds fewer); 0: none
    log10_min: float  # lowest band starts at this log10 frequency
    log10_max: float  # highest band ends here
    band_width: float  # decades per band
    min_letters: int  # shortest word kept
    min_whole_share: float  # share of a token's occurrences that must be a whole word


def corpus_words(contexts: np.ndarray, token_texts: Sequence[str], sampling: WordSampling,
                 rng: np.random.Generator, exclude: Iterable[str] = ()) -> list[Concept]:
    """Whole words of the corpus, drawn stratified by log10 frequency (category ``words``).

    Why: the shipped lists are named things (elements, countries, ...) and in a corpus of 10^6
    tokens almost all are too rare to be judged on 10^5 evaluation tokens, so their frequencies
    span well under two decades and the completeness curve has no "found" side. Scaling
    Monosemanticity's x axis is frequency; its concepts are words or names whose feature either
    exists or not. Ordinary words are the same kind of item at the frequencies a dictionary of
    10^3..10^4 latents resolves, so drawing an equal number per half-decade of frequency
    gives a judged set that spans the curve instead of sitting at one end of it.

    A candidate is a vocabulary token " word" (leading space, ASCII letters only, at least
    ``min_letters`` of them) that is a whole word, i.e. the next token does not glue onto it,
    in at least ``min_whole_share`` of its occurrences: this keeps " people" and drops word
    pieces such as " con" (" con" + "cept"). Casings are one word ("the", "The"); its name is
    the casing seen most often, so ``tokenize_concepts`` adds the capitalised forms of a
    lower-case word and leaves a proper name ("Paris") as written. Frequency for the banding
    is whole-word occurrences / tokens of ``contexts`` (no BOS column). Words whose lower-case
    name is in ``exclude`` (the shipped lists) are skipped, so no word is two concepts. Words in
    a band are drawn with ``rng`` without replacement from the candidates sorted by name
    (deterministic for a seed).
    """
    if sampling.per_band <= 0:
        return []
    tok = np.asarray(contexts, dtype=np.int64)
    if tok.ndim != 2:
        raise ValueError(f"corpus_words: contexts must be 2-D [n_contexts, T], got shape {tok.shape}")
    key_of, keys = _word_keys(token_texts, sampling.min_letters, {e.lower() for e in exclude})
    if not keys or tok.size == 0:
        return []
    glued = np.array([bool(t) and t[0].isalnum() for t in token_texts], dtype=bool)
    nxt = np.zeros(tok.shape, dtype=bool)
    nxt[:, :-1] = _take(glued, tok[:, 1:])
    ids = _take_int(key_of, tok)
    is_word = ids >= 0
    total = np.bincount(ids[is_word], minlength=len(keys))
    whole = np.bincount(ids[is_word & ~nxt], minlength=len(keys))
    name = _most_common_casing(tok[is_word & ~nxt], key_of, token_texts, len(keys))
    share = whole / np.maximum(total, 1)
    log_f = np.log10(np.maximum(whole, 1e-300) / tok.size)
    edges = np.arange(sampling.log10_min, sampling.log10_max + 1e-9, sampling.band_width)
    out: list[Concept] = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        band = np.flatnonzero((whole > 0) & (share >= sampling.min_whole_share) & (log_f >= lo) & (log_f < hi))
        band = band[np.argsort([keys[k] for k in band], kind="stable")]
        pick = rng.choice(band, size=min(sampling.per_band, len(band)), replace=False) if len(band) else band
        out += [Concept(name[k], WORDS_CATEGORY) for k in sorted(pick, key=lambda k: keys[k])]
    return out


def _word_keys(token_texts: Sequence[str], min_letters: int, exclude: set[str]) -> tuple[np.ndarray, list[str]]:
    """Per token id, the index of its lower-case word (-1: not a " word" token), and the words."""
    key_of = np.full(len(token_texts), -1, dtype=np.int64)
    index: dict[str, int] = {}
    for t, text in enumerate(token_texts):
        w = text[1:]
        if text[:1] == " " and len(w) >= min_letters and w.isascii() and w.isalpha() and w.lower() not in exclude:
            key_of[t] = index.setdefault(w.lower(), len(index))
    return key_of, list(index)


def _most_common_casing(word_tokens: np.ndarray, key_of: np.ndarray, token_texts: Sequence[str],
                        n_keys: int) -> list[str]:
    """For each word, the spelling (token text without its space) of its most frequent casing."""
    ids, counts = np.unique(word_tokens, return_counts=True)
    best = np.full(n_keys, -1, dtype=np.int64)
    best_count = np.zeros(n_keys, dtype=np.int64)
    for t, c in zip(ids.tolist(), counts.tolist()):
        k = key_of[t]
        if c > best_count[k]:
            best[k], best_count[k] = t, c
    return [token_texts[t][1:] if t >= 0 else "" for t in best.tolist()]


def _take(mask: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """mask[ids], False for ids outside the mask (special tokens added after the vocabulary)."""
    out = np.zeros(ids.shape, dtype=bool)
    inside = (ids >= 0) & (ids < len(mask))
    out[inside] = mask[ids[inside]]
    return out


def _take_int(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """table[ids], -1 for ids outside the table."""
    out = np.full(ids.shape, -1, dtype=np.int64)
    inside = (ids >= 0) & (ids < len(table))
    out[inside] = table[ids[inside]]
    return out
