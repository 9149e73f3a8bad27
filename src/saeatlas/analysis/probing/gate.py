"""The first-letter gate of the probing analysis: the shared first-letter task
(``analysis/common/first_letter.py``: rows, split by token id, the multinomial probe and its
baselines) with the probing section's settings. Absorption (``analysis/absorption/``) runs the
same gate on its own rows before it measures anything."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from saeatlas.analysis.common import first_letter as shared
from saeatlas.analysis.common.first_letter import GateResult, LetterSplit
from saeatlas.analysis.probing.config import ProbingConfig

__all__ = ["GateResult", "LetterSplit", "first_letter_gate", "letter_split"]


def letter_split(tokens: np.ndarray, strings: Mapping[int, str], ordinary: np.ndarray, config: ProbingConfig,
                 rng: np.random.Generator) -> LetterSplit | str:
    """The gate's rows, letters and split with ``probing.first_letter_*`` settings."""
    return shared.letter_split(tokens, strings, ordinary, per_letter=config.first_letter_per_class,
                               max_per_token=config.first_letter_max_per_token,
                               min_per_letter=config.min_examples_per_class, train_fraction=config.train_fraction,
                               rng=rng, min_key="min_examples_per_class")


def first_letter_gate(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                      config: ProbingConfig, rng: np.random.Generator, letters: tuple[str, ...] = (),
                      dropped: Mapping[str, str] | None = None) -> GateResult:
    """The shared gate with the probing section's regularisation, iterations and interval level."""
    return shared.first_letter_gate(x_train, y_train, x_test, y_test, c=config.inverse_l2, max_iter=config.max_iter,
                                    ci_level=config.ci_level, rng=rng, letters=letters, dropped=dropped)
