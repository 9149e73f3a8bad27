"""Linear probes shared by the probing and absorption analyses: a standardised L2 logistic
regression (its test accuracy with a Wilson interval, or the fitted probe itself with its
direction in the input space), F1, SAEBench's latent ranking by class-mean difference, the
dense block of a few chosen latents, and the group split (whole token ids on one side).

Why shared: absorption (Chanin et al. 2024) is measured against the same kind of probe the
first-letter gate fits, on the same split; one implementation keeps the two analyses' numbers
comparable."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from saeatlas.analysis.common.stats import wilson_interval


@dataclass(frozen=True)
class Score:
    """Test accuracy of one probe: ``correct / n`` with its Wilson interval."""

    correct: int
    n: int
    ci_low: float
    ci_high: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.n


@dataclass
class LinearProbe:
    """A logistic regression fitted on standardised columns (``(x - mean) / sd``)."""

    model: Any  # sklearn LogisticRegression
    mean: np.ndarray
    sd: np.ndarray

    def _z(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.sd

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(self._z(x))

    def direction(self) -> np.ndarray:
        """Unit direction of a binary probe in the *input* space: the logit is
        ``w · (x - mean) / sd + b``, so its gradient in x is ``w / sd``."""
        w = np.asarray(self.model.coef_, dtype=np.float64)
        if w.shape[0] != 1:
            raise ValueError(f"direction() needs a binary probe, this one has {w.shape[0]} rows of weights")
        v = w[0] / self.sd
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 else v


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, c: float, max_iter: int,
              balanced: bool = False) -> LinearProbe:
    """Standardise on the training rows (a latent's scale is the trainer's choice, a residual
    coordinate's the model's: L2 should not prefer either) and fit an L2 logistic regression
    (multinomial for more than two classes). ``balanced`` weights the classes inversely to their
    frequency: a one-vs-rest probe for one letter of 26 otherwise buys accuracy with recall."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x_train = np.asarray(x_train, dtype=np.float64)
    mean = x_train.mean(0)
    sd = x_train.std(0)
    sd[sd == 0] = 1.0  # a constant column carries nothing; leave it at 0 after centring
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=c, max_iter=max_iter, class_weight="balanced" if balanced else None)
        model.fit((x_train - mean) / sd, y_train)
    return LinearProbe(model, mean, sd)


def fit_score(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, c: float,
              max_iter: int, ci_level: float) -> Score:
    """``fit_probe`` on the training rows, scored on the test rows (accuracy, Wilson interval)."""
    probe = fit_probe(x_train, y_train, c, max_iter)
    correct = int((probe.predict(x_test) == np.asarray(y_test)).sum())
    return Score(correct, len(y_test), *wilson_interval(correct, len(y_test), ci_level))


def f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the positive class (0 when there is no true or predicted positive)."""
    y_true, y_pred = np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool)
    tp = int((y_true & y_pred).sum())
    denom = int(y_true.sum()) + int(y_pred.sum())
    return 2.0 * tp / denom if denom else 0.0


def rank_latents(codes_train: Any, y_train: np.ndarray, signed: bool = False) -> np.ndarray:
    """Latents ordered by ``|mean(code | y = 1) - mean(code | y = 0)|`` over the training units,
    largest first (SAEBench's ranking; ties in latent order); ``signed`` ranks by the difference
    itself (latents that fire *more* on the positives first). ``codes_train`` is sparse
    [units, n_latents]: the means are sparse column sums, nothing is densified."""
    y = np.asarray(y_train)
    pos = np.asarray(codes_train[y == 1].mean(axis=0)).ravel()
    neg = np.asarray(codes_train[y == 0].mean(axis=0)).ravel()
    diff = pos - neg
    return np.argsort(-(diff if signed else np.abs(diff)), kind="stable")


def columns(codes: Any, cols: np.ndarray) -> np.ndarray:
    """The dense ``[units, len(cols)]`` block of the chosen latents (the only densified part)."""
    return np.asarray(codes[:, np.asarray(cols)].toarray(), dtype=np.float64)


def group_split(groups: np.ndarray, y: np.ndarray, train_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``is_train`` per unit: whole groups (token ids, or each unit its own group) go to one side,
    ``train_fraction`` of the groups of each class (a group's class: its most common label), at
    least one group on each side where a class has two or more."""
    ug, inverse = np.unique(groups, return_inverse=True)
    classes = np.unique(y)
    votes = np.zeros((len(ug), len(classes)), dtype=np.int64)
    np.add.at(votes, (inverse, np.searchsorted(classes, y)), 1)
    major = votes.argmax(1)
    train_group = np.zeros(len(ug), dtype=bool)
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(major == c))
        n = len(members)
        n_train = min(max(int(round(train_fraction * n)), 1), n - 1) if n >= 2 else n
        train_group[members[:n_train]] = True
    return train_group[inverse]
