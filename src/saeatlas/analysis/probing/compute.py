"""The probing analysis of one layer: every task's split, the residual probe, and per dictionary
size the top-k and random-k latent probes; the first-letter gate (methods: the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from saeatlas.analysis.common.first_letter import read_rows
from saeatlas.analysis.common.output import AnalysisOutput
from saeatlas.analysis.common.threads import limit_threads
from saeatlas.analysis.probing.config import ProbingConfig
from saeatlas.analysis.probing.gate import GateResult, first_letter_gate, letter_split
from saeatlas.analysis.probing.probes import Score, active_latents, columns, fit_score, rank_latents
from saeatlas.analysis.probing.tasks import (Skipped, TaskSplit, balanced_split, context_domains,
                                             token_task_labels)
from saeatlas.codes import csr_from_code
from saeatlas.progress import bar

# Independent random streams, one per purpose, keyed by (seed, purpose, task, size, draw).
SPLIT, RANDOM, GATE = range(3)
# Contexts pooled per block: bounds the residual rows read at once (256 x positions x d floats).
POOL_CONTEXTS = 256


def stream(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


@dataclass
class ProbingInputs:
    """One layer's held-out split: per row its token, domain and whether it is ordinary; the
    tokenizer's string of every token id; a reader of residual rows; every size's codes."""

    layer: int
    sizes: tuple[int, ...]
    tokens: np.ndarray  # [N] token id of each row
    domains: np.ndarray  # [N] index into domain_names of each row's document
    domain_names: tuple[str, ...]
    ordinary: np.ndarray  # [N] bool: False for massive-activation rows (left out everywhere)
    positions_per_context: int
    strings: Mapping[int, str]  # token id -> the tokenizer's string of it
    # sorted row ids -> their residual rows [len, d], float32, normalised by the store scale
    take: Callable[[np.ndarray], np.ndarray]
    codes: Mapping[int, Any]  # size -> code store: ``indices``, ``values`` [N, width], ``n_latents``
    # [N] corpus document of each row: a domain task splits contexts by their majority document,
    # so that contexts cut from one long document (a play, a module) never sit on both sides
    doc_ids: np.ndarray | None = None

    def validate(self) -> int:
        """Check lengths against each other; return N."""
        n = len(self.tokens)
        for name in ("domains", "ordinary"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, tokens {n}")
        if self.positions_per_context < 1:
            raise ValueError(f"positions_per_context must be >= 1, got {self.positions_per_context}")
        sizes = tuple(self.sizes)
        if not sizes or any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"sizes must be one or more strictly ascending dictionary sizes, got {sizes}")
        for s in sizes:
            c = self.codes.get(s)
            if c is None:
                raise ValueError(f"size {s}: no codes given (have sizes {sorted(self.codes)})")
            if c.indices.shape[0] != n or c.values.shape != c.indices.shape:
                raise ValueError(f"size {s}: codes of shape {c.indices.shape} / {c.values.shape}, expected "
                                 f"[{n}, width] each (rows aligned with the store)")
        return n


@dataclass
class TaskResult:
    """One task's probes: the residual baseline and, per size, per k the top-k probe, the chosen
    latents and the random-k draws."""

    split: TaskSplit
    residual: Score
    top: dict[int, dict[int, Score]] = field(default_factory=dict)  # size -> k -> score
    latents: dict[int, np.ndarray] = field(default_factory=dict)  # size -> the top max(k) latents, ranked
    random: dict[int, dict[int, list[Score]]] = field(default_factory=dict)  # size -> k -> draws


@dataclass
class ProbingResult:
    layer: int
    d: int
    sizes: tuple[int, ...]
    tasks: list[TaskResult]
    skipped: list[Skipped]
    gate: GateResult


def build_tasks(config: ProbingConfig, inputs: ProbingInputs) -> list[TaskSplit | Skipped]:
    """The domain tasks (a context's majority domain vs the rest, one per domain), then the
    token-level tasks, each split by ``balanced_split`` with its own seeded stream."""
    ordinary = np.asarray(inputs.ordinary, dtype=bool)
    out: list[TaskSplit | Skipped] = []
    ctx = context_domains(inputs.domains, ordinary, inputs.positions_per_context, len(inputs.domain_names),
                          config.context_purity)
    eligible = np.flatnonzero(ctx >= 0)
    groups = eligible if inputs.doc_ids is None else context_documents(inputs.doc_ids, ordinary,
                                                                       inputs.positions_per_context)[eligible]
    for g, name in enumerate(inputs.domain_names):
        y = (ctx[eligible] == g).astype(np.int8)
        out.append(balanced_split(f"domain_{name}", "context", eligible, y, groups, config.contexts_per_class,
                                  config.train_fraction, config.min_examples_per_class,
                                  stream(config.seed, SPLIT, len(out))))
    tokens = np.asarray(inputs.tokens)
    labels = token_task_labels(tokens, inputs.strings, inputs.domains, inputs.domain_names)
    for name, lab in labels.items():
        units = np.flatnonzero(ordinary & (lab >= 0))
        groups = tokens[units] if config.split_by_token_id else units
        out.append(balanced_split(name, "token", units, lab[units], groups, config.tokens_per_class,
                                  config.train_fraction, config.min_examples_per_class,
                                  stream(config.seed, SPLIT, len(out))))
    return out


def context_documents(doc_ids: np.ndarray, ordinary: np.ndarray, positions: int) -> np.ndarray:
    """Each context's majority document among its ordinary rows (-1 when it has none)."""
    n_ctx = len(doc_ids) // positions
    docs = np.asarray(doc_ids[:n_ctx * positions]).reshape(n_ctx, positions)
    keep = np.asarray(ordinary[:n_ctx * positions], dtype=bool).reshape(n_ctx, positions)
    out = np.full(n_ctx, -1, dtype=np.int64)
    for c in range(n_ctx):
        values, counts = np.unique(docs[c][keep[c]], return_counts=True)
        if len(values):
            out[c] = values[np.argmax(counts)]
    return out


def context_rows(contexts: np.ndarray, positions: int, ordinary: np.ndarray) -> tuple[np.ndarray, Any]:
    """The ordinary rows of ``contexts`` and the sparse averaging matrix [contexts, rows] that
    mean-pools them per context (1 / the context's ordinary rows)."""
    from scipy import sparse

    rows = (np.asarray(contexts)[:, None] * positions + np.arange(positions)).ravel()
    owner = np.repeat(np.arange(len(contexts)), positions)
    keep = ordinary[rows]
    rows, owner = rows[keep], owner[keep]
    counts = np.bincount(owner, minlength=len(contexts))
    pool = sparse.csr_matrix((1.0 / counts[owner], (owner, np.arange(len(rows)))), shape=(len(contexts), len(rows)))
    return rows, pool


def code_rows(codes: Any, rows: np.ndarray) -> Any:
    """CSR [len(rows), n_latents] of the given rows' codes (read from the memmaps)."""
    rows = np.asarray(rows, dtype=np.int64)
    return csr_from_code(np.asarray(codes.values[rows]), np.asarray(codes.indices[rows]), int(codes.n_latents))


class Features:
    """Each unit's features, computed once for the union of the tasks' units: residual rows (token
    units) or context means of the ordinary rows (context units), and per size the same for the
    codes, kept sparse."""

    def __init__(self, inputs: ProbingInputs, splits: list[TaskSplit]):
        self.inputs = inputs
        self.ordinary = np.asarray(inputs.ordinary, dtype=bool)
        self.units = {level: np.unique(np.concatenate([np.r_[s.train, s.test] for s in splits if s.level == level]
                                                      or [np.zeros(0, dtype=np.int64)])).astype(np.int64)
                      for level in ("token", "context")}
        self._residual = {level: self._pooled(level, inputs.take) for level in self.units}

    def _blocks(self, level: str) -> list[tuple[np.ndarray, Any]]:
        """(rows, pooling matrix or None) blocks covering the level's units in order."""
        units = self.units[level]
        if level == "token":
            return [(units, None)]
        return [context_rows(units[a:a + POOL_CONTEXTS], self.inputs.positions_per_context, self.ordinary)
                for a in range(0, len(units), POOL_CONTEXTS)]

    def _pooled(self, level: str, read: Callable[[np.ndarray], Any]) -> Any:
        from scipy import sparse

        parts = []
        for rows, pool in self._blocks(level):
            block = read(rows)
            parts.append(block if pool is None else pool @ block)
        if not parts:
            return None
        return sparse.vstack(parts).tocsr() if sparse.issparse(parts[0]) else np.concatenate(parts)

    def residual(self, level: str, units: np.ndarray) -> np.ndarray:
        return self._residual[level][np.searchsorted(self.units[level], units)]

    def codes(self, size: int) -> dict[str, Any]:
        """Per level, the sparse codes [level's units, n_latents] of one size."""
        store = self.inputs.codes[size]
        return {level: self._pooled(level, lambda rows: code_rows(store, rows)) for level in self.units}

    def index(self, level: str, units: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.units[level], units)


def probe_size(config: ProbingConfig, task: TaskResult, task_i: int, size: int, codes: Any, at_train: np.ndarray,
               at_test: np.ndarray) -> None:
    """Rank the latents on the task's training units, fit the top-k and random-k probes."""
    s = task.split
    train, test = codes[at_train], codes[at_test]
    order = rank_latents(train, s.y_train)[:max(config.k_values)]
    task.latents[size] = order
    pool = active_latents(train)
    task.top[size], task.random[size] = {}, {}
    fit = (lambda cols: fit_score(columns(train, cols), s.y_train, columns(test, cols), s.y_test,
                                  config.inverse_l2, config.max_iter, config.ci_level))
    for ki, k in enumerate(config.k_values):
        task.top[size][k] = fit(order[:k])
        draws = []
        for draw in range(config.random_draws):
            rng = stream(config.seed, RANDOM, task_i, size, ki, draw)
            pick = rng.choice(pool, size=min(k, len(pool)), replace=False) if len(pool) else order[:k]
            draws.append(fit(np.sort(pick)))
        task.random[size][k] = draws


def run_probes(config: ProbingConfig, inputs: ProbingInputs) -> ProbingResult:
    """Every task's residual probe and its latent probes at every size, then the gate."""
    built = build_tasks(config, inputs)
    splits = [t for t in built if isinstance(t, TaskSplit)]
    skipped = [t for t in built if isinstance(t, Skipped)]
    feats = Features(inputs, splits)
    results = []
    for s in splits:
        res = fit_score(feats.residual(s.level, s.train), s.y_train, feats.residual(s.level, s.test), s.y_test,
                        config.inverse_l2, config.max_iter, config.ci_level)
        results.append(TaskResult(s, res))
    d = next((int(feats.residual(s.level, s.train).shape[1]) for s in splits), 0)
    for size in bar(inputs.sizes, desc="probing (sizes)"):
        per_level = feats.codes(size)
        for i, task in enumerate(results):
            lv = task.split.level
            probe_size(config, task, i, size, per_level[lv], feats.index(lv, task.split.train),
                       feats.index(lv, task.split.test))
    gate = run_gate(config, inputs)
    return ProbingResult(int(inputs.layer), d, tuple(inputs.sizes), results, skipped, gate)


def run_gate(config: ProbingConfig, inputs: ProbingInputs) -> GateResult:
    """The first-letter gate on the residual rows of the word-initial tokens."""
    split = letter_split(inputs.tokens, inputs.strings, inputs.ordinary, config, stream(config.seed, GATE, 0))
    if isinstance(split, str):
        return GateResult(False, split)
    x = read_rows(inputs.take, np.r_[split.rows_train, split.rows_test])
    n = len(split.rows_train)
    return first_letter_gate(x[:n], split.y_train, x[n:], split.y_test, config, stream(config.seed, GATE, 1),
                             split.letters, split.dropped)


def run(config: ProbingConfig, inputs: ProbingInputs, *, blas_threads: int | None = 1) -> AnalysisOutput:
    """Sparse probing of every size on every task beside the residual and random-latent baselines,
    and the first-letter gate.

    Metrics: ``layer``, ``d``, ``tasks``, ``tasks_skipped``; per task ``task.<name>.estimated``
    (0 for a skipped one), ``task.<name>.n_train``, ``n_test``; ``residual.<task>.accuracy`` and
    ``residual.mean_accuracy`` (+ ``_ci_low/high``); per size ``n<size>.<task>.k<k>.accuracy``,
    ``n<size>.<task>.k<k>.random``, ``n<size>.<task>.top_latent``, ``n<size>.k<k>.mean_accuracy``
    (+ ``_ci_low/high``), ``n<size>.k<k>.mean_random``; ``largest.*`` repeats the largest size's
    means; ``first_letter.accuracy`` (+ ``_ci_low/high``), ``.majority``, ``.chance``,
    ``.shuffled``, ``.classes``, ``.n_train``, ``.n_test``, ``.estimated``, ``.passes``;
    ``config.*``. Tables ``summary``, ``accuracy``, ``tasks``; figure ``probing``; document
    ``probing_summary``.

    ``blas_threads`` caps BLAS and OpenMP threads (1 by default: small fits on shared cores);
    None leaves them as they are. The numbers do not depend on it.
    """
    from saeatlas.analysis.probing.figures import probing_figure
    from saeatlas.analysis.probing.results import accuracy_table, metrics, summary_document, summary_table, tasks_table

    inputs.validate()
    with limit_threads(blas_threads or None, None):
        result = run_probes(config, inputs)
    return AnalysisOutput(
        metrics=metrics(config, result),
        tables={"summary": summary_table(config, result), "accuracy": accuracy_table(config, result),
                "tasks": tasks_table(result)},
        figures={"probing": probing_figure(config, result)},
        documents={"probing_summary": summary_document(config, result)},
    )
