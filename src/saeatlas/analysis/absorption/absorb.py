"""The two per-letter steps of the absorption measurement, on small arrays: the letter's main
latents (k-sparse probing with the feature-splitting threshold) and the absorption rule on the
tokens the main latents miss. Pure numpy/scipy; the caller hands in only the first-letter rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from saeatlas.analysis.common.probes import columns, f1, fit_probe, rank_latents


@dataclass
class MainLatents:
    """A letter's main latents at one size: the top latents by class-mean difference, as many as
    the k-sparse probe's F1 kept rising by more than the splitting threshold; the training F1 at
    each k tried; the test F1 of the chosen k."""

    latents: np.ndarray  # ranked, len = chosen k
    f1_train: list[float]  # F1 on the training rows at k = 1, 2, ... (one past the chosen k, if tried)
    f1_test: float


def main_latents(train: Any, y_train: np.ndarray, test: Any, y_test: np.ndarray, *, split_threshold: float,
                 max_k: int, c: float, max_iter: int) -> MainLatents:
    """k-sparse probing (SAEBench, after Gurnee et al. 2023) as Chanin et al. use it to find a
    letter's latents: rank the latents by the class-mean difference on the training rows (signed:
    a main latent fires *more* on the letter), fit a balanced logistic probe on the top k, and add
    the (k+1)-th latent while that raises the training F1 by more than ``split_threshold``. The
    extra latents are a split feature (several latents share the letter), not absorption.
    ``train``/``test`` are sparse [rows, n_latents]; only the k chosen columns are densified."""
    y_train, y_test = np.asarray(y_train, dtype=bool), np.asarray(y_test, dtype=bool)
    order = rank_latents(train, y_train.astype(np.int8), signed=True)[:max_k]
    scores, probes = [], []
    for k in range(1, len(order) + 1):
        probe = fit_probe(columns(train, order[:k]), y_train, c, max_iter, balanced=True)
        scores.append(f1(y_train, probe.predict(columns(train, order[:k]))))
        probes.append(probe)
        if k > 1 and scores[-1] - scores[-2] <= split_threshold:
            break
    k = len(scores) if len(scores) < 2 or scores[-1] - scores[-2] > split_threshold else len(scores) - 1
    test_f1 = f1(y_test, probes[k - 1].predict(columns(test, order[:k])))
    return MainLatents(order[:k], scores, test_f1)


@dataclass
class Absorbed:
    """Per token handed in: whether it is absorbed, the largest absorber (-1: none) and its share
    of the positive projection."""

    absorbed: np.ndarray  # bool [m]
    absorber: np.ndarray  # int [m]
    share: np.ndarray  # float [m]


def main_fires(indices: np.ndarray, values: np.ndarray, main: np.ndarray) -> np.ndarray:
    """Per row of fixed-width codes: does any main latent fire (a non-zero value)?"""
    return (np.isin(indices, main) & (values > 0)).any(axis=1)


def absorption(indices: np.ndarray, values: np.ndarray, projection: np.ndarray, cosine: np.ndarray, *,
               probe_cos: float, share: float, signal: float = 0.0) -> Absorbed:
    """The absorption rule on tokens where the main latents are silent. ``indices``/``values``
    [m, width]: their codes; ``projection`` [n_latents]: each decoder row's dot product with the
    direction p (raw decoder units: every number below is a ratio, so the store scale cancels);
    ``cosine`` [n_latents]: its cosine with p.

    A latent's contribution to the probe's projection of the reconstruction is ``a_i (d_i . p)``.
    An *absorber* is an active latent with ``cos(d_i, p) >= probe_cos`` and a positive
    contribution. The token is absorbed when the largest absorber carries at least ``share`` of
    the larger of the token's positive projection ``sum_j max(0, a_j (d_j . p))`` and ``signal``,
    the letter's typical projection (the caller's: how far the letter's reconstructions sit above
    the other letters' along p, same units). The relative part alone is met by any latent that
    happens to point along p when little else does (a random direction passes it about as often);
    the absolute part asks the absorber to carry a sizeable part of what the letter normally puts
    on p. The decoder bias is the same for every token and is left out."""
    indices, values = np.asarray(indices), np.asarray(values, dtype=np.float64)
    m = len(indices)
    if m == 0 or indices.shape[1] == 0:
        return Absorbed(np.zeros(m, dtype=bool), np.full(m, -1, dtype=np.int64), np.zeros(m))
    active = values > 0
    contrib = np.where(active, values * projection[indices], 0.0)
    positive = np.clip(contrib, 0.0, None).sum(axis=1)
    candidate = active & (cosine[indices] >= probe_cos) & (contrib > 0)
    best_contrib = np.where(candidate, contrib, 0.0)
    at = best_contrib.argmax(axis=1)
    best = best_contrib[np.arange(m), at]
    frac = np.divide(best, positive, out=np.zeros_like(best), where=positive > 0)
    absorbed = (best > 0) & (best >= share * np.maximum(positive, max(signal, 0.0)))
    absorber = np.where(best > 0, indices[np.arange(m), at], -1).astype(np.int64)
    return Absorbed(absorbed, absorber, frac)
