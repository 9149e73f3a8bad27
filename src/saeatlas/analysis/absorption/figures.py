"""The absorption figure: rates vs dictionary size beside the null, and each letter at the largest
size (matplotlib, built directly). Below the gate: the gate's bars, and nothing else to show."""

from __future__ import annotations

from typing import Any

import numpy as np

from saeatlas.analysis.absorption.compute import AbsorptionResult
from saeatlas.analysis.absorption.config import AbsorptionConfig


def absorption_figure(config: AbsorptionConfig, result: AbsorptionResult) -> Any:
    """Left: mean absorption rate, false-negative rate and the null's rate over letters vs size
    (bootstrap intervals). Right: per letter at the largest size, absorption and null rates."""
    from matplotlib.figure import Figure

    if not result.passes:
        fig = Figure(figsize=(6, 4.2), layout="constrained")
        _gate_panel(fig.subplots(), config, result)
        return fig
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=(1, 1.6))
    _sizes_panel(ax, config, result)
    _letters_panel(ax2, result)
    return fig


def _sizes_panel(ax: Any, config: AbsorptionConfig, result: AbsorptionResult) -> None:
    from saeatlas.analysis.absorption.results import size_summary

    sizes = np.array(result.sizes)
    rows = [size_summary(config, result.per_size[s], s) for s in result.sizes]
    for key, style, label in (("absorption_rate", "o-", "absorption rate"),
                              ("false_negative_rate", "s--", "false-negative rate (main latents silent)"),
                              ("absorption_rate_null", "^:", "null: random direction")):
        mean = np.array([r.get(key, np.nan) for r in rows])
        line, = ax.plot(sizes, mean, style, label=label)
        low = np.array([r.get(f"{key}_ci_low", np.nan) for r in rows])
        high = np.array([r.get(f"{key}_ci_high", np.nan) for r in rows])
        ax.fill_between(sizes, low, high, color=line.get_color(), alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("dictionary size n")
    ax.set_ylabel(f"mean over {len(result.probes)} letters (share of probe true positives)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"layer {result.layer}: first-letter absorption")
    ax.legend(fontsize=7)


def _letters_panel(ax: Any, result: AbsorptionResult) -> None:
    largest = result.sizes[-1]
    letters = result.per_size[largest]
    x = np.arange(len(letters))
    ax.bar(x - 0.2, [s.rate for s in letters], 0.4, label="absorption rate")
    ax.bar(x + 0.2, [s.null_rate for s in letters], 0.4, color="grey", label="null")
    ax.plot(x, [s.fn_rate for s in letters], "k_", ms=10, label="false-negative rate")
    ax.set_xticks(x, [s.letter for s in letters])
    ax.set_xlabel("first letter")
    ax.set_ylabel("share of the letter's probe true positives")
    ax.set_title(f"each letter, n = {largest}")
    ax.legend(fontsize=7)


def _gate_panel(ax: Any, config: AbsorptionConfig, result: AbsorptionResult) -> None:
    g = result.gate
    if not g.estimated or g.score is None or g.shuffled is None:
        ax.text(0.5, 0.5, f"first-letter gate not run:\n{g.reason}", ha="center", va="center", wrap=True, fontsize=8)
        ax.set_axis_off()
        return
    ax.bar(["probe", "shuffled\nlabels", "majority", "chance"], [g.score.accuracy, g.shuffled.accuracy, g.majority,
                                                                  g.chance],
           color=["C0", "grey", "silver", "lightgrey"])
    ax.axhline(config.gate_factor * (g.majority or 0.0), color="C3", ls="--", lw=0.8,
               label=f"{config.gate_factor:g} x majority (gate)")
    ax.set_ylabel("test accuracy")
    ax.set_title("first-letter gate failed: absorption not measured")
    ax.legend(fontsize=7)
