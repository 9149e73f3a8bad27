"""Finding the concepts in token arrays: counts in the training split (the frequencies) and
occurrences in the evaluation rows (where the codes are)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from saeatlas.progress import bar
from saeatlas.analysis.scaling.concepts import TokenizedConcept, WordBoundaries


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


def _form_table(concepts: Sequence[TokenizedConcept]) -> dict[tuple[int, ...], int]:
    """Token sequence -> index of the concept it belongs to (each sequence to one concept)."""
    table: dict[tuple[int, ...], int] = {}
    for ci, tc in enumerate(concepts):
        for form in tc.forms:
            if table.setdefault(form, ci) != ci:
                raise ValueError(f"token sequence {form} belongs to two concepts; use tokenize_concepts")
    return table


def _match(concepts: Sequence[TokenizedConcept], tokens: np.ndarray, boundaries: WordBoundaries | None) -> _Matches:
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
    table = _form_table(concepts)
    tok = np.ascontiguousarray(tokens, dtype=np.int64)
    if tok.ndim != 2:
        raise ValueError(f"token array must be 2-D [rows, T], got shape {tok.shape}")
    if not table or tok.size == 0:
        return _empty_matches()
    max_id = max(int(tok.max()), max(max(f) for f in table))
    if int(tok.min()) < 0 or min(min(f) for f in table) < 0:
        raise ValueError("token ids must be non-negative")
    bits = max(1, max_id.bit_length())
    by_len: dict[int, list[tuple[tuple[int, ...], int]]] = {}
    for form, ci in table.items():
        by_len.setdefault(len(form), []).append((form, ci))

    parts: list[tuple[np.ndarray, ...]] = []
    for L in bar(sorted(by_len), desc="matching concepts", unit="length"):
        if L <= tok.shape[1]:
            parts += _match_length(tok, by_len[L], L, bits)
    if not parts:
        return _empty_matches()
    concept, row, start, length = (np.concatenate([p[i] for p in parts]).astype(np.int64) for i in range(4))
    if len(concept) == 0:
        return _empty_matches()
    keep = _outermost(row, start, length, tok.shape)
    if boundaries is not None:
        keep &= ~_glued(tok, row, start, length, boundaries)
    concept, row, start, length = concept[keep], row[keep], start[keep], length[keep]
    order = np.lexsort((start, row, concept))
    return _Matches(concept[order], row[order], start[order], length[order])


def _match_length(tok: np.ndarray, group: list[tuple[tuple[int, ...], int]], L: int,
                  bits: int) -> list[tuple[np.ndarray, ...]]:
    """(concept, row, start, length) of every window of ``tok`` equal to one of the forms of
    length L in ``group`` (form, concept): packed-key lookup, then the tails verified."""
    T = tok.shape[1]
    m = min(L, max(1, 63 // bits))  # tokens per packed key
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
        return [(fci[order[pos[cand]]], rows, starts, np.full(len(cand), L))]
    parts: list[tuple[np.ndarray, ...]] = []
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
    return parts


def _outermost(row: np.ndarray, start: np.ndarray, length: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nesting: keep a match unless it overlaps a longer one. cover[p] = length of the longest
    match covering flat position p."""
    n_rows, T = shape
    flat = row * T + start
    cover = np.zeros(n_rows * T, dtype=np.int32)
    lengths = np.unique(length)
    for L in lengths:  # ascending, so longer matches overwrite: cover = max
        sel = length == L
        cover[(flat[sel, None] + np.arange(L)).ravel()] = L
    keep = np.ones(len(row), dtype=bool)
    for L in lengths:
        sel = np.flatnonzero(length == L)
        keep[sel] = cover[flat[sel, None] + np.arange(L)].max(axis=1) <= L
    return keep


def _glued(tok: np.ndarray, row: np.ndarray, start: np.ndarray, length: np.ndarray,
           boundaries: WordBoundaries) -> np.ndarray:
    """Word boundaries: matches glued to the token before their first or after their last."""
    T = tok.shape[1]
    first = tok[row, start]
    last = tok[row, start + length - 1]
    prev = tok[row, np.maximum(start - 1, 0)]
    nxt = tok[row, np.minimum(start + length, T - 1)]
    glued_before = (start > 0) & _lookup(boundaries.glued_right, prev) & _lookup(boundaries.glued_left, first)
    glued_after = (start + length < T) & _lookup(boundaries.glued_right, last) & _lookup(boundaries.glued_left, nxt)
    return glued_before | glued_after


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
                      boundaries: WordBoundaries | None = None, *, skip_first_column: bool = False) -> ConceptCounts:
    """Count every concept's occurrences in ``contexts`` [n_contexts, T] (no match crosses rows).

    ``skip_first_column``: column 0 is the BOS the corpus puts in front of every context: not
    text, so neither matched nor counted among the tokens.
    """
    arr = np.asarray(contexts)
    if skip_first_column:
        arr = arr[:, 1:]
    matches = _match(concepts, arr, boundaries)
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
                     boundaries: WordBoundaries | None = None) -> Occurrences:
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
    matches = _match(concepts, tokens.reshape(-1, P), boundaries)
    return Occurrences(matches.concept, matches.row * P + matches.start, matches.length, len(concepts))

