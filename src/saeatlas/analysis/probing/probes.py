"""The probes of the probing analysis: the shared ones (``analysis/common/probes.py``: the
standardised logistic regression, SAEBench's latent ranking, the dense block of chosen latents)
and the pool the random-latent baseline draws from."""

from __future__ import annotations

from typing import Any

import numpy as np

from saeatlas.analysis.common.probes import Score, columns, fit_score, rank_latents

__all__ = ["Score", "active_latents", "columns", "fit_score", "rank_latents"]


def active_latents(codes_train: Any) -> np.ndarray:
    """Latents that fire on at least one training unit: the random baseline draws from these (a
    latent silent on the task's units is a constant column: drawing those would pin the baseline
    at chance whatever the dictionary holds)."""
    return np.flatnonzero(np.asarray(codes_train.getnnz(axis=0)) > 0)
