"""The crystals analysis: the inputs, and ``run``: every task's crystal quality in every space
(the LM activations and each SAE's codes), raw and after LDA, against shuffled pairs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import sparse

from saeatlas.analysis.common.output import AnalysisOutput
from saeatlas.analysis.common.stats import holm
from saeatlas.analysis.common.threads import limit_threads
from saeatlas.analysis.crystals.config import CrystalsConfig
from saeatlas.analysis.crystals.lda import (VARIANTS, LdaResult, centre_gram, distractor_classes, gram_matrix,
                                            lda_projector)
from saeatlas.analysis.crystals.quality import (QUALITIES, leave_one_out_cosines, observed_cosines, permutations,
                                                task_geometry, task_quality, task_rng)

ACT_SPACE = "act"
STATS = ("null", "null_sd", "excess", "z", "p", "ci_lo", "ci_hi")
TABLE_COLUMNS = ["task", "space", "variant", "n_pairs", "norm_retained"] + [
    f"{q}{k}" for q in QUALITIES
    for k in ("", "_null", "_null_sd", "_excess", "_z", "_p", "_p_holm", "_ci_lo", "_ci_hi")]


@dataclass
class CrystalsInputs:
    """Plain arrays, one row per word of ``words`` in every space.

    ``pairs``: task -> [(a, b)] (the tasks analysed, in order; words must be in ``words``).
    ``activations``: [W, d] LM residual at each word's last token. ``codes``: size -> [W, n]
    SAE codes of the same vectors (dense array or scipy sparse). ``distractors``: label name ->
    [W] per-word values (see ``tasks.distractor_labels``); needs every ``lda_distractors`` name,
    and ``n_tokens`` when ``max_word_tokens > 0``.
    """

    words: Sequence[str]
    pairs: Mapping[str, Sequence[tuple[str, str]]]
    activations: np.ndarray
    codes: Mapping[int, Any] = field(default_factory=dict)
    distractors: Mapping[str, np.ndarray] = field(default_factory=dict)

    def validate(self, config: CrystalsConfig) -> None:
        n_words = len(self.words)
        if len(set(self.words)) != n_words:
            raise ValueError("inputs.words: duplicate words (one row per distinct word)")
        if not self.pairs:
            raise ValueError("inputs.pairs: no tasks")
        index = set(self.words)
        for task, pairs in self.pairs.items():
            missing = sorted({w for p in pairs for w in p} - index)
            if missing:
                raise ValueError(f"task {task!r}: words not in inputs.words: {missing[:10]}")
            if len(pairs) < config.min_pairs:
                raise ValueError(f"task {task!r}: {len(pairs)} pairs < crystals.min_pairs = {config.min_pairs}")
        spaces = {ACT_SPACE: self.activations, **{f"sae_{s}": c for s, c in self.codes.items()}}
        for name, mat in spaces.items():
            if mat.ndim != 2 or mat.shape[0] != n_words:
                raise ValueError(f"space {name}: shape {mat.shape}, expected [{n_words}, dim]")
            data = mat.data if sparse.issparse(mat) else np.asarray(mat)
            if not np.all(np.isfinite(data)):
                raise ValueError(f"space {name}: non-finite values")
        needed = list(config.lda_distractors) + (["n_tokens"] if config.max_word_tokens > 0 else [])
        for name in needed:
            if name not in self.distractors:
                raise ValueError(f"inputs.distractors: missing {name!r} (crystals.lda_distractors / "
                                 f"max_word_tokens need it); have {sorted(self.distractors)}")
            if np.shape(self.distractors[name]) != (n_words,):
                raise ValueError(f"inputs.distractors[{name!r}]: shape {np.shape(self.distractors[name])}, "
                                 f"expected ({n_words},)")


@dataclass
class TaskRows:
    """One evaluated task: the word rows of its usable pairs' a's and b's, and the pairs."""

    name: str
    ia: np.ndarray
    ib: np.ndarray
    pairs: list[tuple[str, str]]


@dataclass
class _SpaceResult:
    metrics: dict[str, float]
    rows: list[dict[str, Any]]
    pair_rows: list[dict[str, Any]]
    lda_rows: list[dict[str, Any]]
    basis: np.ndarray


def run(config: CrystalsConfig, inputs: CrystalsInputs) -> AnalysisOutput:
    """Crystal quality of every task in every space, raw and after LDA, against shuffled pairs.

    Metrics (``<q>`` = ``cos_mean`` | ``silhouette``, ``<v>`` = "" (raw) | ``_lda``, spaces
    ``act`` and ``sae_<size>``): ``<task>.n_pairs``, ``.n_dropped``, ``.evaluated``;
    ``<task>.<space>.<q><v>`` and ``<q><v>_null``, ``_null_sd``, ``_excess``, ``_z``, ``_p``,
    ``_ci_lo``, ``_ci_hi``; ``<task>.<space>.lda_norm_retained``; ``<space>.lda_directions``,
    ``<space>.lda_variance_removed``; ``mean.<space>.<q><v>`` and ``mean.<space>.<q><v>_null``
    (over tasks); ``<space>.<q><v>_significant`` (tasks with Holm-adjusted p ≤ alpha). Undefined
    numbers (a silhouette with one task, z with a constant null) are left out. Tables
    ``crystals`` (task × space × variant), ``crystal_pairs`` (per pair: ‖δ‖ and leave-one-out
    cosine), ``lda`` (per space and distractor). Figure ``crystals_quality``; interactive
    ``crystals_pca`` (the projection task's words in activation space, arrows a -> b; absent
    if that task was not evaluated).
    """
    inputs.validate(config)
    if config.projection_task and config.projection_task not in inputs.pairs:
        raise ValueError(f"crystals.projection_task {config.projection_task!r} is not among the tasks "
                         f"{list(inputs.pairs)}")
    # 1. the usable pairs of each task (word-token filter); small tasks are reported, not evaluated
    tasks, metrics = select_pairs(config, inputs)
    # 2. the spaces, the words' distractor classes, and each task's permutations and resamples
    spaces: list[tuple[str, Any]] = [(ACT_SPACE, inputs.activations)]
    spaces += [(f"sae_{s}", inputs.codes[s]) for s in sorted(inputs.codes)]
    classes = {name: distractor_classes(np.asarray(inputs.distractors[name]), name in config.categorical_distractors,
                                        config.lda_bins, config.lda_min_class)
               for name in config.lda_distractors}
    perms = {t.name: permutations(len(t.pairs), config.n_permutations, task_rng(config.seed, t.name, 0))
             for t in tasks}
    boots = {t.name: task_rng(config.seed, t.name, 1).integers(0, len(t.pairs), (config.n_bootstrap, len(t.pairs)))
             for t in tasks}
    # 3. per space: its LDA axes, then every task's qualities raw and cleaned, against the null
    results = []
    for space, x in spaces:
        gram = gram_matrix(x)  # the one large product ([W, n] times its transpose): BLAS threads help here
        # Everything else works on [W, W] or smaller arrays, where BLAS threads only add
        # overhead: on the shared 2-core box a 250x250 eigh took ~1 s threaded, ~0.01 s single.
        with limit_threads(1):
            results.append(analyse_space(config, space, x, gram, classes, tasks, perms, boots))
    # 4. metrics (finite only), tables and figures
    for res in results:
        metrics.update(res.metrics)
    metrics = {k: v for k, v in metrics.items() if not (isinstance(v, float) and not math.isfinite(v))}
    table = [r for res in results for r in res.rows]
    out = AnalysisOutput(metrics=metrics, tables={"crystals": table,
                                                  "crystal_pairs": [r for res in results for r in res.pair_rows],
                                                  "lda": [r for res in results for r in res.lda_rows]})
    _add_figures(out, config, inputs, tasks, [s for s, _ in spaces], results[0].basis)
    return out


def _add_figures(out: AnalysisOutput, config: CrystalsConfig, inputs: CrystalsInputs, tasks: list[TaskRows],
                 spaces: list[str], act_basis: np.ndarray) -> None:
    """The quality figure, and the PCA view of the projection task (when it was evaluated)."""
    from saeatlas.analysis.crystals.figures import pca_figure, quality_figure

    if not tasks:
        return
    out.figures["crystals_quality"] = quality_figure(out.tables["crystals"], [t.name for t in tasks], spaces)
    chosen = next((t for t in tasks if t.name == (config.projection_task or tasks[0].name)), None)
    if chosen is not None:
        out.interactive["crystals_pca"] = pca_figure(chosen, np.asarray(inputs.activations, dtype=np.float64),
                                                     act_basis)


def select_pairs(config: CrystalsConfig, inputs: CrystalsInputs) -> tuple[list[TaskRows], dict[str, float]]:
    """Word rows of each task's usable pairs (both words ≤ ``max_word_tokens`` tokens); tasks
    left with fewer than ``min_pairs`` are reported and not evaluated."""
    row = {w: i for i, w in enumerate(inputs.words)}
    n_tok = np.asarray(inputs.distractors["n_tokens"]) if config.max_word_tokens > 0 else None
    tasks, metrics = [], {}
    for task, pairs in inputs.pairs.items():
        keep = [(a, b) for a, b in pairs
                if n_tok is None or max(n_tok[row[a]], n_tok[row[b]]) <= config.max_word_tokens]
        metrics[f"{task}.n_pairs"] = len(keep)
        metrics[f"{task}.n_dropped"] = len(pairs) - len(keep)
        ok = len(keep) >= config.min_pairs
        metrics[f"{task}.evaluated"] = int(ok)
        if ok:
            tasks.append(TaskRows(task, np.array([row[a] for a, _ in keep]), np.array([row[b] for _, b in keep]),
                                  keep))
    return tasks, metrics


def analyse_space(config: CrystalsConfig, space: str, x: Any, gram: np.ndarray, classes: Mapping[str, np.ndarray],
                  tasks: list[TaskRows], perms: Mapping[str, np.ndarray], boots: Mapping[str, np.ndarray]
                  ) -> _SpaceResult:
    """LDA axes of one space, then every task's qualities, raw and cleaned (see the package doc)."""
    metrics: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    pair_rows: list[dict[str, Any]] = []
    lda = lda_projector(x, classes, config, gram=gram)
    grams = _cleaned_grams(space, x, gram, lda, metrics)
    lda_rows = [{"space": space, "distractor": name, "n_classes": lda.n_classes[name],
                 "n_directions": lda.n_directions[name]} for name in config.lda_distractors]
    for variant in VARIANTS:
        rows_here = []
        for t in tasks:
            row, pairs = _task_row(config, space, variant, grams, t, tasks, perms[t.name], boots[t.name], metrics)
            pair_rows += pairs
            rows_here.append(row)
        _holm_across_tasks(config, space, "" if variant == "raw" else "_lda", rows_here, metrics)
        rows += [{c: r.get(c) for c in TABLE_COLUMNS} for r in rows_here]
    return _SpaceResult(metrics, rows, pair_rows, lda_rows, lda.basis)


def _cleaned_grams(space: str, x: Any, gram: np.ndarray, lda: LdaResult, metrics: dict[str, float]
                   ) -> dict[str, np.ndarray]:
    """The raw Gram and the cleaned one ``G' = G - (XU)(XU)ᵀ``; records the number of axes and
    the fraction of the words' total (centred) variance that the projection removed."""
    xu = np.asarray(x @ lda.basis) if lda.basis.shape[1] else np.zeros((gram.shape[0], 0))
    grams = {"raw": gram, "lda": gram - xu @ xu.T}
    total_var = float(np.trace(centre_gram(gram)))
    metrics[f"{space}.lda_directions"] = int(lda.basis.shape[1])
    metrics[f"{space}.lda_variance_removed"] = (
        1.0 - float(np.trace(centre_gram(grams["lda"]))) / total_var if total_var > 0 else 0.0)
    return grams


def _task_row(config: CrystalsConfig, space: str, variant: str, grams: Mapping[str, np.ndarray], t: TaskRows,
              tasks: list[TaskRows], perms: np.ndarray, boots: np.ndarray, metrics: dict[str, float]
              ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One task in one space and variant: its qualities against the null (table row and
    metrics), the norm its offsets retain after LDA, and its per-pair rows."""
    g, sfx = grams[variant], ("" if variant == "raw" else "_lda")
    geo = task_geometry(g, t.ia, t.ib, *_others(tasks, t))
    stats = task_quality(geo, perms, boots)
    row: dict[str, Any] = {"task": t.name, "space": space, "variant": variant, "n_pairs": len(t.pairs)}
    for q in QUALITIES:
        if not math.isfinite(stats[q].value):  # silhouette without another task
            continue
        summ = stats[q].summary(config.ci_level)
        row[q] = summ["value"]
        metrics[f"{t.name}.{space}.{q}{sfx}"] = summ["value"]
        for k in STATS:
            row[f"{q}_{k}"] = _fmt(summ[k])
            if row[f"{q}_{k}"] is not None:
                metrics[f"{t.name}.{space}.{q}{sfx}_{k}"] = row[f"{q}_{k}"]
    d_sq = _delta_sq(g, t.ia, t.ib)
    row["norm_retained"] = 1.0
    if variant == "lda":  # fraction of the task's Σ‖δ‖² that survives the projection
        d0 = float(_delta_sq(grams["raw"], t.ia, t.ib).sum())
        row["norm_retained"] = float(d_sq.sum()) / d0 if d0 > 0 else None
        if row["norm_retained"] is not None:
            metrics[f"{t.name}.{space}.lda_norm_retained"] = row["norm_retained"]
    loo = leave_one_out_cosines(observed_cosines(geo)[0])
    pair_rows = [{"task": t.name, "space": space, "variant": variant, "a": a, "b": b,
                  "delta_norm": float(dn), "loo_cos": float(lc)}
                 for (a, b), dn, lc in zip(t.pairs, np.sqrt(d_sq), loo)]
    return row, pair_rows


def _holm_across_tasks(config: CrystalsConfig, space: str, sfx: str, rows: list[dict[str, Any]],
                       metrics: dict[str, float]) -> None:
    """Holm-adjusted p-values across the tasks of one space and variant (into the rows), the
    number significant at ``alpha``, and the tasks' mean quality and mean null."""
    for q in QUALITIES:
        defined = [r for r in rows if r.get(f"{q}_p") is not None]
        adj = holm([r[f"{q}_p"] for r in defined]) if defined else np.zeros(0)
        for r, pa in zip(defined, adj):
            r[f"{q}_p_holm"] = float(pa)
        if defined:
            metrics[f"{space}.{q}{sfx}_significant"] = int(np.sum(adj <= config.alpha))
            metrics[f"mean.{space}.{q}{sfx}"] = float(np.mean([r[q] for r in defined]))
            metrics[f"mean.{space}.{q}{sfx}_null"] = float(np.mean([r[f"{q}_null"] for r in defined]))


def _others(tasks: list[TaskRows], t: TaskRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the other tasks' a's and b's, and their task index 0..T-2."""
    others = [u for u in tasks if u is not t]
    if not others:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return (np.concatenate([u.ia for u in others]), np.concatenate([u.ib for u in others]),
            np.concatenate([np.full(len(u.ia), j) for j, u in enumerate(others)]))


def _delta_sq(gram: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """``‖b_i - a_i‖² = G[b,b] - 2 G[a,b] + G[a,a]`` per pair (clipped at 0 against round-off)."""
    return np.clip(gram[ib, ib] - 2.0 * gram[ia, ib] + gram[ia, ia], 0.0, None)


def _fmt(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)
