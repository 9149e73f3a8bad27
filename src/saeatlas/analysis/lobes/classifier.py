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


def split_balanced_accuracy(x: np.ndarray, y: np.ndarray, train: np.ndarray, max_iter: int) -> float:
    """Balanced accuracy on the rows outside ``train`` of a plain logistic regression fitted on the
    rows in ``train`` (Li et al.'s protocol: one split, no class weights)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    test = ~train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(max_iter=max_iter).fit(x[train], y[train])
    return float(balanced_accuracy_score(y[test], clf.predict(x[test])))


def protocol_classifier_metrics(k: int, dec: np.ndarray, y: np.ndarray, train_fraction: float, trials: int,
                                max_iter: int, rng: np.random.Generator) -> dict[str, float]:
    """Li et al.'s lobe classifier: unit decoder rows -> lobe, one ``train_fraction`` split (theirs
    was the first 80% of the features; feature order in an SAE is arbitrary, so a seeded random
    split is the same thing), balanced test accuracy; beside ``trials`` sets of random unit vectors
    in place of the decoder rows (mean, sd, z, p). Nothing when the split leaves one class to train
    on or nothing to test."""
    m = y.size
    n_train = int(round(train_fraction * m))
    train = np.zeros(m, dtype=bool)
    train[rng.permutation(m)[:n_train]] = True
    if np.unique(y[train]).size < 2 or n_train == m:
        return {}
    from saeatlas.analysis.common.stats import null_summary

    acc = split_balanced_accuracy(unit_rows(dec), y, train, max_iter)
    null = np.array([split_balanced_accuracy(unit_rows(rng.standard_normal(dec.shape)), y, train, max_iter)
                     for _ in range(trials)])
    s = null_summary(acc, null)
    p = f"k{k}."
    return {p + "balanced_accuracy": acc, p + "balanced_accuracy_random_mean": s["mean"],
            p + "balanced_accuracy_random_sd": s["sd"], p + "balanced_accuracy_random_z": s["z"],
            p + "balanced_accuracy_random_p": s["p"]}
