"""The shipped concept lists (``saeatlas/data/concepts``), their token-id forms, and which
tokens glue onto their neighbours into one word."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

CONCEPT_DIR = Path(__file__).resolve().parents[2] / "data" / "concepts"
CATEGORIES = ("elements", "countries", "capitals", "animals", "foods")


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

