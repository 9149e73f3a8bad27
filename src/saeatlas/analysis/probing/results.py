"""What the probing analysis writes: flat metrics, the ``summary``, ``accuracy`` and ``tasks``
tables and the ``probing_summary`` document."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Sequence

import numpy as np
from scipy import stats

from saeatlas.analysis.probing.compute import ProbingResult, TaskResult
from saeatlas.analysis.probing.config import ProbingConfig
from saeatlas.analysis.probing.probes import Score


def mean_over_tasks(scores: Sequence[Score], ci_level: float) -> tuple[float, float, float]:
    """Mean accuracy over tasks with a normal interval from the tasks' binomial variances
    (independent test sets): ``var = Σ p_t (1 - p_t) / n_t / T²``, clipped to [0, 1]."""
    if not scores:
        return math.nan, math.nan, math.nan
    p = np.array([s.accuracy for s in scores])
    n = np.array([s.n for s in scores], dtype=np.float64)
    mean = float(p.mean())
    se = math.sqrt(float((p * (1 - p) / n).sum())) / len(p)
    z = float(stats.norm.ppf(0.5 + ci_level / 2))
    return mean, max(0.0, mean - z * se), min(1.0, mean + z * se)


def random_mean(draws: Sequence[Score]) -> float:
    return float(np.mean([s.accuracy for s in draws]))


def _finite(out: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def size_means(config: ProbingConfig, tasks: list[TaskResult], size: int) -> dict[int, dict[str, float]]:
    """Per k: the mean top-k accuracy over tasks (with its interval) and the mean random-k accuracy."""
    out = {}
    for k in config.k_values:
        mean, low, high = mean_over_tasks([t.top[size][k] for t in tasks], config.ci_level)
        out[k] = {"mean_accuracy": mean, "mean_accuracy_ci_low": low, "mean_accuracy_ci_high": high,
                  "mean_random": float(np.mean([random_mean(t.random[size][k]) for t in tasks])) if tasks
                  else math.nan}
    return out


def gate_metrics(config: ProbingConfig, result: ProbingResult) -> dict[str, float]:
    g = result.gate
    out: dict[str, float] = {"first_letter.estimated": int(g.estimated), "first_letter.passes": int(g.passes(
        config.gate_factor))}
    if g.estimated and g.score is not None and g.shuffled is not None:
        out.update({"first_letter.accuracy": g.score.accuracy, "first_letter.accuracy_ci_low": g.score.ci_low,
                    "first_letter.accuracy_ci_high": g.score.ci_high, "first_letter.majority": g.majority,
                    "first_letter.chance": g.chance, "first_letter.shuffled": g.shuffled.accuracy,
                    "first_letter.classes": len(g.letters), "first_letter.n_train": g.n_train,
                    "first_letter.n_test": g.score.n,
                    "first_letter.ratio_to_majority": g.score.accuracy / g.majority if g.majority else math.nan})
    return out


def metrics(config: ProbingConfig, result: ProbingResult) -> dict[str, float]:
    out: dict[str, float] = {"layer": result.layer, "d": result.d, "tasks": len(result.tasks),
                             "tasks_skipped": len(result.skipped)}
    for s in result.skipped:
        out[f"task.{s.name}.estimated"] = 0
    for t in result.tasks:
        name = t.split.name
        out.update({f"task.{name}.estimated": 1, f"task.{name}.n_train": len(t.split.y_train),
                    f"task.{name}.n_test": len(t.split.y_test), f"residual.{name}.accuracy": t.residual.accuracy})
    mean, low, high = mean_over_tasks([t.residual for t in result.tasks], config.ci_level)
    out.update({"residual.mean_accuracy": mean, "residual.mean_accuracy_ci_low": low,
                "residual.mean_accuracy_ci_high": high})
    for size in result.sizes:
        for t in result.tasks:
            out[f"n{size}.{t.split.name}.top_latent"] = int(t.latents[size][0])
            for k in config.k_values:
                out[f"n{size}.{t.split.name}.k{k}.accuracy"] = t.top[size][k].accuracy
                out[f"n{size}.{t.split.name}.k{k}.random"] = random_mean(t.random[size][k])
        for k, vals in size_means(config, result.tasks, size).items():
            out.update({f"n{size}.k{k}.{key}": v for key, v in vals.items()})
    if result.sizes:
        largest = result.sizes[-1]
        out["largest.size"] = largest
        for k, vals in size_means(config, result.tasks, largest).items():
            out.update({f"largest.k{k}.{key}": v for key, v in vals.items()})
    out.update(gate_metrics(config, result))
    out.update({"config.k_max": max(config.k_values), "config.tokens_per_class": config.tokens_per_class,
                "config.contexts_per_class": config.contexts_per_class, "config.random_draws": config.random_draws,
                "config.train_fraction": config.train_fraction, "config.gate_factor": config.gate_factor})
    return _finite(out)


def summary_table(config: ProbingConfig, result: ProbingResult) -> list[dict[str, Any]]:
    """One row per size and k: mean accuracy over tasks (interval), random-k and residual beside."""
    res_mean, _, _ = mean_over_tasks([t.residual for t in result.tasks], config.ci_level)
    rows = []
    for size in result.sizes:
        for k, vals in size_means(config, result.tasks, size).items():
            rows.append({"layer": result.layer, "size": size, "k": k, "tasks": len(result.tasks),
                         **{key: _clean(v) for key, v in vals.items()}, "residual_mean_accuracy": _clean(res_mean)})
    return rows


def accuracy_table(config: ProbingConfig, result: ProbingResult) -> list[dict[str, Any]]:
    """One row per task, size and k (and one per task for the residual probe): accuracy with its
    Wilson interval, the random-k mean and sd over draws, the chosen latents."""
    rows = []
    for t in result.tasks:
        s = t.split
        base = {"layer": result.layer, "task": s.name, "level": s.level, "n_train": len(s.y_train),
                "n_test": len(s.y_test)}
        rows.append({**base, "size": 0, "k": 0, "probe": "residual", **_score(t.residual), "random_mean": None,
                     "random_sd": None, "latents": ""})
        for size in result.sizes:
            for k in config.k_values:
                acc = [d.accuracy for d in t.random[size][k]]
                rows.append({**base, "size": size, "k": k, "probe": "top_k", **_score(t.top[size][k]),
                             "random_mean": float(np.mean(acc)),
                             "random_sd": float(np.std(acc, ddof=1)) if len(acc) > 1 else None,
                             "latents": " ".join(str(int(i)) for i in t.latents[size][:k])})
    return rows


def tasks_table(result: ProbingResult) -> list[dict[str, Any]]:
    """Every task, probed or skipped, and why."""
    rows = [{"task": t.split.name, "level": t.split.level, "estimated": 1, "n_train": len(t.split.y_train),
             "n_test": len(t.split.y_test), "reason": ""} for t in result.tasks]
    rows += [{"task": s.name, "level": s.level, "estimated": 0, "n_train": 0, "n_test": 0, "reason": s.reason}
             for s in result.skipped]
    return rows


def _score(s: Score) -> dict[str, Any]:
    return {"accuracy": s.accuracy, "ci_low": s.ci_low, "ci_high": s.ci_high, "correct": s.correct}


def _clean(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def notes(config: ProbingConfig, result: ProbingResult) -> list[str]:
    out = [f"task {s.name} ({s.level}) skipped: {s.reason}" for s in result.skipped]
    g = result.gate
    if not g.estimated:
        out.append(f"first-letter gate not run: {g.reason}")
    out += [f"first-letter gate: letter {letter} dropped: {why}" for letter, why in sorted(g.dropped.items())]
    return out


def summary_document(config: ProbingConfig, result: ProbingResult) -> dict[str, Any]:
    g = result.gate
    return {
        "layer": result.layer, "d": result.d, "sizes": list(result.sizes), "config": asdict(config),
        "tasks": [t["task"] for t in tasks_table(result) if t["estimated"]],
        "notes": notes(config, result),
        "first_letter": {"letters": list(g.letters), "dropped": dict(g.dropped), "reason": g.reason},
        "methods": {
            "ranking": "latents by |mean code on positives - mean code on negatives| over the training units "
                       "(SAEBench's sparse probing)",
            "probe": f"features standardised on the training units, L2 logistic regression (C = {config.inverse_l2}, "
                     f"lbfgs, at most {config.max_iter} iterations), test accuracy with a Wilson interval",
            "context_tasks": f"unit = a context; features = mean over its ordinary rows; label = its majority domain "
                             f"if that holds >= {config.context_purity} of the rows; split by context",
            "token_tasks": "unit = an ordinary row; labels from the tokenizer's string of the token id (is_code_token: "
                           "the row's document domain); split by "
                           + ("token id" if config.split_by_token_id else "row"),
            "balance": "each side of the split balanced by seeded subsampling of the larger class",
            "baselines": f"residual: the same probe on the full residual (store scale); random: k latents drawn "
                         f"among those active on the training units, {config.random_draws} draws averaged",
            "mean_over_tasks": "unweighted mean of the tasks' accuracies, normal interval from their binomial "
                               "variances",
            "first_letter": "multinomial probe on the residual of word-initial tokens (space + ASCII letter), split "
                            "by token id; beside the majority class, chance and shuffled training labels",
        },
    }
