"""The first-letter task of Chanin et al. 2024 (*A is for Absorption*), shared by the probing
analysis (its gate) and the absorption analysis (which measures against the same probe's
directions): the label of a token, the rows and their split by token id, and the gate itself.

Units: ordinary rows whose token begins a word (a space, then an ASCII letter); the class is
that letter. At most ``max_per_token`` occurrences of one token id (" the" would otherwise be most
of the t's) and ``per_letter`` rows per letter. The split is by token id: a word seen in training
never appears in the test set, so a probe has to read the letter, not recognise the word. Letters
with fewer than ``min_per_letter`` rows, or that the split leaves on one side only, are dropped and
named.

The gate: can a linear probe on the residual read the letter at this layer? A multinomial probe
beside the majority class (always the commonest training letter), chance (1 / letters) and the
same probe fitted on shuffled training labels (about the majority baseline). Absorption is
measured against letter directions, so where the probe does no better than guessing the commonest
letter there is nothing to measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from saeatlas.analysis.common.probes import Score, fit_score, group_split


def first_letter(s: str) -> str | None:
    """The lower-case first letter of a token that begins a word: a space then an ASCII letter
    (" Paris" -> "p"); None for any other token (mid-word pieces, punctuation, digits)."""
    if len(s) >= 2 and s[0] == " " and s[1].isascii() and s[1].isalpha():
        return s[1].lower()
    return None


def token_strings(tokenizer: Any, ids: Iterable[int]) -> dict[int, str]:
    """The tokenizer's string of each id (decoded alone: a word-initial token keeps its space)."""
    return {int(i): tokenizer.decode([int(i)], clean_up_tokenization_spaces=False) for i in ids}


@dataclass
class LetterSplit:
    rows_train: np.ndarray
    rows_test: np.ndarray
    y_train: np.ndarray  # letter index into ``letters``
    y_test: np.ndarray
    letters: tuple[str, ...]
    dropped: dict[str, str] = field(default_factory=dict)  # letter -> why it is not a class


@dataclass
class GateResult:
    estimated: bool
    reason: str = ""
    score: Score | None = None
    majority: float | None = None
    chance: float | None = None
    shuffled: Score | None = None
    letters: tuple[str, ...] = ()
    n_train: int = 0
    dropped: dict[str, str] = field(default_factory=dict)

    def passes(self, factor: float) -> bool:
        """The probe beats ``factor`` x the majority baseline, and its interval lies above the
        shuffled-label probe's: the letter is linearly readable here."""
        return bool(self.estimated and self.score is not None and self.shuffled is not None
                    and self.majority is not None and self.score.accuracy > factor * self.majority
                    and self.score.ci_low > self.shuffled.ci_high)


def cap_per_group(groups: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of at most ``cap`` members of every group (seeded), sorted."""
    order = rng.permutation(len(groups))
    order = order[np.argsort(groups[order], kind="stable")]
    g = groups[order]
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    rank = np.arange(len(g)) - np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    return np.sort(order[rank < cap])


def letter_split(tokens: np.ndarray, strings: Mapping[int, str], ordinary: np.ndarray, *, per_letter: int,
                 max_per_token: int, min_per_letter: int, train_fraction: float, rng: np.random.Generator,
                 min_key: str = "the minimum") -> LetterSplit | str:
    """The rows, letters and split (see the module docstring), or the reason there is none.
    ``min_key`` names the setting behind ``min_per_letter`` in the reasons."""
    tokens = np.asarray(tokens)
    ids = np.unique(tokens)
    letter_of = {int(i): first_letter(strings.get(int(i), "")) for i in ids}
    word_ids = np.array([i for i in ids if letter_of[int(i)] is not None], dtype=np.int64)
    rows = np.flatnonzero(np.isin(tokens, word_ids) & np.asarray(ordinary, dtype=bool))
    rows = rows[cap_per_group(tokens[rows], max_per_token, rng)]
    names = np.array([letter_of[int(t)] for t in tokens[rows]], dtype="<U1")
    dropped: dict[str, str] = {}
    for letter, n in zip(*np.unique(names, return_counts=True)):
        if n < min_per_letter:
            dropped[str(letter)] = f"{n} rows, fewer than {min_key} = {min_per_letter}"
    keep = ~np.isin(names, list(dropped))
    rows, names = rows[keep], names[keep]
    if len(np.unique(names)) < 2:
        return f"{len(np.unique(names))} letter(s) with at least {min_per_letter} word-initial rows"
    letters, y = np.unique(names, return_inverse=True)
    is_train = group_split(tokens[rows], y, train_fraction, rng)
    cap_train = max(1, int(round(train_fraction * per_letter)))
    cap_test = max(1, per_letter - cap_train)
    train, test = [], []
    for c, letter in enumerate(letters):
        tr, te = np.flatnonzero((y == c) & is_train), np.flatnonzero((y == c) & ~is_train)
        if not len(tr) or not len(te):
            dropped[str(letter)] = "all its token ids fell on one side of the split"
            continue
        train.append(rng.choice(tr, size=min(cap_train, len(tr)), replace=False))
        test.append(rng.choice(te, size=min(cap_test, len(te)), replace=False))
    if len(train) < 2:
        return f"{len(train)} letter(s) on both sides of the split by token id"
    tr, te = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    kept = tuple(str(letters[c]) for c in np.unique(y[tr]))
    remap = {c: i for i, c in enumerate(np.unique(y[tr]))}
    relabel = np.vectorize(remap.__getitem__, otypes=[np.int64])
    return LetterSplit(rows[tr], rows[te], relabel(y[tr]), relabel(y[te]), kept, dropped)


def read_rows(take: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> np.ndarray:
    """``take(rows)`` for rows in any order: the reader wants them sorted (one pass through the
    memmapped shards), the caller wants them in its own order."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    x_sorted = take(rows[order])
    x = np.empty_like(x_sorted)
    x[order] = x_sorted
    return x


def first_letter_gate(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
                      c: float, max_iter: int, ci_level: float, rng: np.random.Generator,
                      letters: tuple[str, ...] = (), dropped: Mapping[str, str] | None = None) -> GateResult:
    """The multinomial probe on the residual rows, beside the majority-class, chance and
    shuffled-label baselines on the same test rows."""
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    classes = np.unique(y_train)
    if len(classes) < 2:
        return GateResult(False, f"{len(classes)} class(es) in the training rows")
    score = fit_score(x_train, y_train, x_test, y_test, c, max_iter, ci_level)
    commonest = classes[np.argmax([(y_train == k).sum() for k in classes])]
    majority = float((y_test == commonest).mean())
    shuffled = fit_score(x_train, rng.permutation(y_train), x_test, y_test, c, max_iter, ci_level)
    return GateResult(True, score=score, majority=majority, chance=1.0 / len(classes), shuffled=shuffled,
                      letters=tuple(letters), n_train=len(y_train), dropped=dict(dropped or {}))
