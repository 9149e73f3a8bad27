"""Step 7: how well a feature's lobe is predicted from its decoder direction."""

from __future__ import annotations

import math
import warnings

import numpy as np

from saeatlas.analysis.common.linalg import unit_rows


def lobe_balanced_accuracy(x: np.ndarray, y: np.ndarray, folds: int, seed: int, max_iter: int) -> float:
    """Balanced accuracy (mean per-class recall) of out-of-fold multinomial logistic regression
    predictions of ``y`` from ``x`` (stratified ``folds``-fold CV; classes weighted inversely to
    their size, since the score weights every class equally)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    clf = LogisticRegression(max_iter=max_iter, class_weight="balanced")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        pred = cross_val_predict(clf, x, y, cv=cv)
    return float(balanced_accuracy_score(y, pred))


def classifier_inputs(dec: np.ndarray, max_features: int, rng_sub: np.random.Generator,
                      rng_rand: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The features the classifier sees (a seeded subsample of at most ``max_features``, sorted),
    their unit decoder rows ×√d, and as many random Gaussian vectors (the chance baseline)."""
    m, d = dec.shape
    sub = np.sort(rng_sub.choice(m, size=min(m, max_features), replace=False))
    x_dec = unit_rows(dec)[sub] * np.float32(math.sqrt(d))
    x_rand = rng_rand.standard_normal((sub.size, d)).astype(np.float32)
    return sub, x_dec, x_rand


def classifier_metrics(k: int, x_dec: np.ndarray, x_rand: np.ndarray, y: np.ndarray, folds: int, seed: int,
                       max_iter: int) -> dict[str, float]:
    """``k<k>.balanced_accuracy`` from decoder rows, ``_random`` from random vectors and ``_chance``
    (1 / classes); nothing when the subsample holds a single lobe."""
    classes = np.unique(y).size
    if classes < 2:
        return {}
    p = f"k{k}."
    return {p + "balanced_accuracy": lobe_balanced_accuracy(x_dec, y, folds, seed, max_iter),
            p + "balanced_accuracy_random": lobe_balanced_accuracy(x_rand, y, folds, seed, max_iter),
            p + "balanced_accuracy_chance": 1.0 / classes}
