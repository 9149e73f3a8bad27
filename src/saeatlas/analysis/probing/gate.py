"""The first-letter gate (Chanin et al. 2024, *A is for Absorption*): can a linear probe on the
residual stream read the first letter of a word-initial token at this layer? Absorption is
measured against that probe's directions, so where it does no better than always guessing the
commonest letter there is nothing to measure.

Units: ordinary rows whose token begins a word (a space, then an ASCII letter); the class is
that letter. At most ``first_letter_max_per_token`` occurrences of one token id (" the" would
otherwise be most of the t's) and ``first_letter_per_class`` rows per letter. The split is by
token id: a word seen in training never appears in the test set, so the probe has to read the
letter, not recognise the word. Letters with fewer than ``min_examples_per_class`` rows, or that
the split leaves on one side only, are dropped and named.

Baselines on the same test rows: the majority class (always the commonest training letter), chance
(1 / letters) and the same probe fitted on shuffled training labels (what the probe reaches when
the labels carry nothing: about the majority baseline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from saeatlas.analysis.probing.config import ProbingConfig
from saeatlas.analysis.probing.probes import Score, fit_score
from saeatlas.analysis.probing.tasks import first_letter, group_split


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


def letter_split(tokens: np.ndarray, strings: Mapping[int, str], ordinary: np.ndarray, config: ProbingConfig,
                 rng: np.random.Generator) -> LetterSplit | str:
    """The gate's rows, letters and split (see the module docstring), or the reason there is none."""
    tokens = np.asarray(tokens)
    ids = np.unique(tokens)
    letter_of = {int(i): first_letter(strings.get(int(i), "")) for i in ids}
    word_ids = np.array([i for i in ids if letter_of[int(i)] is not None], dtype=np.int64)
    rows = np.flatnonzero(np.isin(tokens, word_ids) & np.asarray(ordinary, dtype=bool))
    rows = rows[cap_per_group(tokens[rows], config.first_letter_max_per_token, rng)]
    names = np.array([letter_of[int(t)] for t in tokens[rows]], dtype="<U1")
    dropped: dict[str, str] = {}
    for letter, n in zip(*np.unique(names, return_counts=True)):
        if n < config.min_examples_per_class:
            dropped[str(letter)] = f"{n} rows, fewer than min_examples_per_class = {config.min_examples_per_class}"
    keep = ~np.isin(names, list(dropped))
    rows, names = rows[keep], names[keep]
    if len(np.unique(names)) < 2:
        return f"{len(np.unique(names))} letter(s) with at least {config.min_examples_per_class} word-initial rows"
    letters, y = np.unique(names, return_inverse=True)
    is_train = group_split(tokens[rows], y, config.train_fraction, rng)
    cap_train = max(1, int(round(config.train_fraction * config.first_letter_per_class)))
    cap_test = max(1, config.first_letter_per_class - cap_train)
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


def first_letter_gate(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                      config: ProbingConfig, rng: np.random.Generator, letters: tuple[str, ...] = (),
                      dropped: Mapping[str, str] | None = None) -> GateResult:
    """The multinomial probe on the residual rows, beside the majority-class, chance and
    shuffled-label baselines on the same test rows."""
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    classes = np.unique(y_train)
    if len(classes) < 2:
        return GateResult(False, f"{len(classes)} class(es) in the training rows")
    score = fit_score(x_train, y_train, x_test, y_test, config.inverse_l2, config.max_iter, config.ci_level)
    commonest = classes[np.argmax([(y_train == c).sum() for c in classes])]
    majority = float((y_test == commonest).mean())
    shuffled = fit_score(x_train, rng.permutation(y_train), x_test, y_test, config.inverse_l2, config.max_iter,
                         config.ci_level)
    return GateResult(True, score=score, majority=majority, chance=1.0 / len(classes), shuffled=shuffled,
                      letters=tuple(letters), n_train=len(y_train), dropped=dict(dropped or {}))
