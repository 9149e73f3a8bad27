"""The probing tasks: labels (from the tokenizer's string of each token id, from the corpus domain
of each row or context), and each task's balanced, seeded train/test split.

A task's *units* are what one example is: a row of the store (token level) or a context
(context level). Every split is seeded, and a task that cannot be split with enough examples is
returned as a ``Skipped`` with the reason, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from saeatlas.analysis.common.probes import group_split

# Token-level tasks, in report order. Three are functions of the token's string; is_code_token
# is a property of where the token stands (a row of a code-domain document).
TOKEN_TASKS = ("is_digit", "is_capitalised", "starts_with_space", "is_code_token")
CODE_DOMAIN = "code"


def is_digit(s: str) -> int | None:
    """1 if the token's string holds a digit, else 0."""
    return int(any(ch.isdigit() for ch in s))


def is_capitalised(s: str) -> int | None:
    """1 if the token's first non-space character is an upper-case letter, 0 if lower case; None
    (not part of the task) if it is no cased letter (digits, punctuation, an empty string), so the
    task asks about case, not about letters against punctuation."""
    body = s.lstrip()
    if not body or not (body[0].isupper() or body[0].islower()):
        return None
    return int(body[0].isupper())


def starts_with_space(s: str) -> int | None:
    """1 if the token's string begins with a space (a byte-level BPE word start), else 0; None for
    an empty string."""
    return None if not s else int(s[0] == " ")


STRING_TASKS: dict[str, Callable[[str], int | None]] = {
    "is_digit": is_digit, "is_capitalised": is_capitalised, "starts_with_space": starts_with_space}


def id_labels(tokens: np.ndarray, strings: Mapping[int, str], label: Callable[[str], int | None]) -> np.ndarray:
    """Per row: ``label`` of its token's string as 0/1, -1 where the task does not apply. Each
    distinct id is labelled once. A token id without a string is an error naming it."""
    ids, inverse = np.unique(np.asarray(tokens), return_inverse=True)
    missing = [int(i) for i in ids if int(i) not in strings]
    if missing:
        raise ValueError(f"no string for token id(s) {missing[:10]} (the tokenizer does not match the store)")
    per_id = np.array([-1 if (v := label(strings[int(i)])) is None else v for i in ids], dtype=np.int8)
    return per_id[inverse]


def token_task_labels(tokens: np.ndarray, strings: Mapping[int, str], domains: np.ndarray,
                      domain_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every token-level task's row labels (0/1, -1 = not in the task). is_code_token is left out
    when the corpus has no code domain."""
    out = {name: id_labels(tokens, strings, fn) for name, fn in STRING_TASKS.items()}
    if CODE_DOMAIN in domain_names:
        out["is_code_token"] = (np.asarray(domains) == domain_names.index(CODE_DOMAIN)).astype(np.int8)
    return out


def context_domains(domains: np.ndarray, ordinary: np.ndarray, positions: int, n_domains: int,
                    purity: float) -> np.ndarray:
    """Per context (``positions`` consecutive rows): the domain holding the largest share of its
    ordinary rows if that share is at least ``purity``, else -1 (also for a context without an
    ordinary row). Rows past the last whole context are ignored."""
    n_ctx = len(domains) // positions
    dom = np.asarray(domains[:n_ctx * positions]).reshape(n_ctx, positions)
    ok = np.asarray(ordinary[:n_ctx * positions]).reshape(n_ctx, positions)
    counts = np.stack([((dom == g) & ok).sum(1) for g in range(n_domains)], axis=1)
    total = ok.sum(1)
    best = counts.argmax(1)
    share = counts[np.arange(n_ctx), best] / np.maximum(total, 1)
    return np.where((total > 0) & (share >= purity), best, -1)


@dataclass
class TaskSplit:
    """A task ready to probe: units (row or context ids) and 0/1 (or class) labels per side."""

    name: str
    level: str  # "token" or "context"
    train: np.ndarray
    test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


@dataclass
class Skipped:
    name: str
    level: str
    reason: str


def take_per_class(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Positions in ``y`` of ``n`` units of every class (seeded, without replacement), sorted."""
    pick = [rng.choice(np.flatnonzero(y == c), size=n, replace=False) for c in np.unique(y)]
    return np.sort(np.concatenate(pick)) if pick else np.zeros(0, dtype=np.int64)


def balanced_split(name: str, level: str, units: np.ndarray, y: np.ndarray, groups: np.ndarray, per_class: int,
                   train_fraction: float, min_per_class: int, rng: np.random.Generator) -> TaskSplit | Skipped:
    """A binary task, balanced on both sides: ``groups`` split by ``group_split``, then as many
    units of each class per side as the rarer class has there, at most
    ``round(train_fraction * per_class)`` for training and the rest of ``per_class`` for testing.
    Skipped (with the reason) if a class has fewer than ``min_per_class`` units, or a side would
    hold none of a class."""
    units, y, groups = np.asarray(units), np.asarray(y), np.asarray(groups)
    counts = {c: int((y == c).sum()) for c in (0, 1)}
    if min(counts.values()) < min_per_class:
        rare = min(counts, key=counts.get)
        return Skipped(name, level, f"{counts[rare]} {'positive' if rare else 'negative'} examples, fewer than "
                                    f"min_examples_per_class = {min_per_class}")
    is_train = group_split(groups, y, train_fraction, rng)
    cap_train = max(1, int(round(train_fraction * per_class)))
    cap_test = max(1, per_class - cap_train)
    sides = []
    for side, cap in ((is_train, cap_train), (~is_train, cap_test)):
        n = min(cap, *(int(((y == c) & side).sum()) for c in (0, 1)))
        if n < 1:
            where = "training" if side is is_train else "test"
            return Skipped(name, level, f"the split by {'token id' if level == 'token' else level} left no "
                                        f"{where} example of one class (too few distinct units)")
        pos = np.flatnonzero(side)
        sides.append(pos[take_per_class(y[pos], n, rng)])
    (tr, te) = sides
    return TaskSplit(name, level, units[tr], units[te], y[tr].astype(np.int8), y[te].astype(np.int8))
