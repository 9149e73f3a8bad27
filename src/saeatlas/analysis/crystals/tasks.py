"""The shipped word-pair tasks (``saeatlas/data/word_pairs/*.tsv``), their vocabulary, and the
per-word distractor labels (word length, token count, first token) that LDA removes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

TASK_DIR = Path(__file__).resolve().parents[2] / "data" / "word_pairs"
TASKS = ("country_capital", "male_female", "singular_plural", "present_past", "adjective_comparative",
         "english_french")
DISTRACTORS = ("length", "n_tokens", "first_token")


def available_tasks() -> tuple[str, ...]:
    """Names of the shipped tasks (the ``*.tsv`` stems in ``saeatlas/data/word_pairs``)."""
    return tuple(sorted(p.stem for p in TASK_DIR.glob("*.tsv")))


def parse_pairs(text: str, source: str = "<text>") -> list[tuple[str, str]]:
    """Pairs from TSV text: ``a<TAB>b`` per line, ``#`` lines are comments, blank lines skipped.

    Malformed data fails with ``source:line``: a line without exactly two fields, an empty or
    padded field, ``a == b`` (a zero difference vector has no direction) or a repeated pair.
    """
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        where = f"{source}:{lineno}"
        if len(parts) != 2:
            raise ValueError(f"{where}: expected 'a<TAB>b', got {len(parts)} field(s): {line!r}")
        a, b = parts
        if not a or not b or a != a.strip() or b != b.strip():
            raise ValueError(f"{where}: empty field or surrounding whitespace: {line!r}")
        if a == b:
            raise ValueError(f"{where}: a and b are the same word {a!r} (zero difference vector)")
        if (a, b) in seen:
            raise ValueError(f"{where}: duplicate pair {a!r} -> {b!r}")
        seen.add((a, b))
        pairs.append((a, b))
    return pairs


def load_tasks(names: Iterable[str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """The shipped tasks ``name -> [(a, b), ...]`` in file order (all of ``TASKS`` by default)."""
    wanted = TASKS if names is None else tuple(names)
    known = available_tasks()
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown word-pair task(s) {unknown}; shipped: {list(known)}")
    out = {}
    for name in wanted:
        path = TASK_DIR / f"{name}.tsv"
        out[name] = parse_pairs(path.read_text(encoding="utf-8"), str(path))
    return out


def vocabulary(tasks: Mapping[str, Sequence[tuple[str, str]]]) -> tuple[str, ...]:
    """Every distinct word of the tasks, in first-appearance order: one vector per word string
    (a word in two tasks, e.g. "king" in male_female and english_french, has one vector)."""
    seen: dict[str, None] = {}
    for pairs in tasks.values():
        for a, b in pairs:
            seen.setdefault(a)
            seen.setdefault(b)
    return tuple(seen)


def distractor_labels(words: Sequence[str], token_ids: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """Per-word distractor labels from each word's token ids *as tokenised in the template*:
    ``length`` (characters), ``n_tokens`` and ``first_token`` (id of the word's first token)."""
    if len(words) != len(token_ids):
        raise ValueError(f"{len(words)} words but {len(token_ids)} token-id lists")
    if any(len(ids) == 0 for ids in token_ids):
        raise ValueError("every word needs at least one token")
    return {"length": np.array([len(w) for w in words], dtype=np.int64),
            "n_tokens": np.array([len(ids) for ids in token_ids], dtype=np.int64),
            "first_token": np.array([int(ids[0]) for ids in token_ids], dtype=np.int64)}
