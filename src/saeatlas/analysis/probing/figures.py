"""The probing figure: mean accuracy vs k per size beside its baselines, the largest size's tasks,
and the first-letter gate (matplotlib, built directly)."""

from __future__ import annotations

from typing import Any

import numpy as np

from saeatlas.analysis.common.plotting import size_colors
from saeatlas.analysis.probing.compute import ProbingResult
from saeatlas.analysis.probing.config import ProbingConfig


def probing_figure(config: ProbingConfig, result: ProbingResult) -> Any:
    """Left: mean test accuracy over tasks vs k, one line per size (interval shaded), its random-k
    baseline dashed, the residual probe and chance as horizontal lines. Middle: every task at the
    largest size vs k, the task's residual probe as a marker at the right. Right: the gate."""
    from matplotlib.figure import Figure

    from saeatlas.analysis.probing.results import mean_over_tasks, size_means

    fig = Figure(figsize=(16, 4.8), layout="constrained")
    ax, ax2, ax3 = fig.subplots(1, 3)
    ks = np.array(config.k_values)
    for size, color in zip(result.sizes, size_colors(len(result.sizes))):
        if not result.tasks:
            break
        means = size_means(config, result.tasks, size)
        mean = [means[k]["mean_accuracy"] for k in ks]
        ax.plot(ks, mean, "o-", color=color, label=f"n = {size}")
        ax.fill_between(ks, [means[k]["mean_accuracy_ci_low"] for k in ks],
                        [means[k]["mean_accuracy_ci_high"] for k in ks], color=color, alpha=0.15)
        ax.plot(ks, [means[k]["mean_random"] for k in ks], "--", color=color, lw=0.9)
    if result.tasks:
        res, low, high = mean_over_tasks([t.residual for t in result.tasks], config.ci_level)
        ax.axhline(res, color="k", lw=1.2, label=f"full residual ({res:.3f})")
        ax.axhspan(low, high, color="k", alpha=0.08)
    ax.plot([], [], "--", color="grey", label="k random active latents")
    ax.axhline(0.5, color="grey", lw=0.6, ls=":", label="chance")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (latents in the probe)")
    ax.set_ylabel(f"mean test accuracy over {len(result.tasks)} tasks")
    ax.set_title(f"layer {result.layer}: sparse probing")
    ax.legend(fontsize=7)
    _tasks_panel(ax2, config, result, ks)
    _gate_panel(ax3, config, result)
    return fig


def _tasks_panel(ax: Any, config: ProbingConfig, result: ProbingResult, ks: np.ndarray) -> None:
    if not result.sizes or not result.tasks:
        ax.set_axis_off()
        return
    largest = result.sizes[-1]
    for i, t in enumerate(result.tasks):
        color = f"C{i % 10}"
        ax.plot(ks, [t.top[largest][k].accuracy for k in ks], "o-", color=color, lw=1, ms=3, label=t.split.name)
        ax.plot([ks[-1] * 1.6], [t.residual.accuracy], "s", color=color, ms=5)
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xticks([*ks, ks[-1] * 1.6], [*(str(k) for k in ks), "resid."])
    ax.set_xlabel("k (squares: full residual)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"each task, n = {largest}")
    ax.legend(fontsize=6, ncol=2)


def _gate_panel(ax: Any, config: ProbingConfig, result: ProbingResult) -> None:
    g = result.gate
    if not g.estimated or g.score is None or g.shuffled is None:
        ax.text(0.5, 0.5, f"first-letter gate not run:\n{g.reason}", ha="center", va="center", wrap=True, fontsize=8)
        ax.set_axis_off()
        return
    names = ["probe", "shuffled\nlabels", "majority", "chance"]
    vals = [g.score.accuracy, g.shuffled.accuracy, g.majority, g.chance]
    ax.bar(names, vals, color=["C0", "grey", "silver", "lightgrey"])
    ax.errorbar([0, 1], vals[:2], yerr=[[vals[0] - g.score.ci_low, vals[1] - g.shuffled.ci_low],
                                       [g.score.ci_high - vals[0], g.shuffled.ci_high - vals[1]]],
                fmt="none", color="k", capsize=3)
    ax.axhline(config.gate_factor * (g.majority or 0.0), color="C3", ls="--", lw=0.8,
               label=f"{config.gate_factor:g} x majority (gate)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"first letter of word-initial tokens ({len(g.letters)} letters)")
    ax.legend(fontsize=7)
