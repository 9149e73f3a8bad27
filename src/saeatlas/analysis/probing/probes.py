"""The probes: SAEBench's latent ranking (absolute difference of class means on the training
split), a standardised L2 logistic regression, its test accuracy with a Wilson interval, and the
random-latent draws of the baseline."""

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


def fit_score(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, c: float,
              max_iter: int, ci_level: float) -> Score:
    """Standardise on the training rows (a latent's scale is the trainer's choice, a residual
    coordinate's the model's: L2 should not prefer either), fit an L2 logistic regression
    (multinomial for more than two classes), score it on the test rows."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x_train = np.asarray(x_train, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    mean = x_train.mean(0)
    sd = x_train.std(0)
    sd[sd == 0] = 1.0  # a constant column carries nothing; leave it at 0 after centring
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=c, max_iter=max_iter).fit((x_train - mean) / sd, y_train)
    correct = int((clf.predict((x_test - mean) / sd) == y_test).sum())
    return Score(correct, len(y_test), *wilson_interval(correct, len(y_test), ci_level))


def rank_latents(codes_train: Any, y_train: np.ndarray) -> np.ndarray:
    """Latents ordered by ``|mean(code | y = 1) - mean(code | y = 0)|`` over the training units,
    largest first (SAEBench's ranking; ties in latent order). ``codes_train`` is sparse
    [units, n_latents]: the means are sparse column sums, nothing is densified."""
    y = np.asarray(y_train)
    pos = np.asarray(codes_train[y == 1].mean(axis=0)).ravel()
    neg = np.asarray(codes_train[y == 0].mean(axis=0)).ravel()
    return np.argsort(-np.abs(pos - neg), kind="stable")


def columns(codes: Any, cols: np.ndarray) -> np.ndarray:
    """The dense ``[units, len(cols)]`` block of the chosen latents (the only densified part)."""
    return np.asarray(codes[:, np.asarray(cols)].toarray(), dtype=np.float64)


def active_latents(codes_train: Any) -> np.ndarray:
    """Latents that fire on at least one training unit: the random baseline draws from these (a
    latent silent on the task's units is a constant column: drawing those would pin the baseline
    at chance whatever the dictionary holds)."""
    return np.flatnonzero(np.asarray(codes_train.getnnz(axis=0)) > 0)
