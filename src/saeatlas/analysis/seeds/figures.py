"""The seed-spread figure: each headline number per seed beside the study seed's own interval."""

from __future__ import annotations

import math
from typing import Any, Mapping

# A headline's within-seed interval, where its analysis writes one: <key>_ci_low / <key>_ci_high.
CI_SUFFIXES = ("_ci_low", "_ci_high")


def finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def spread_figure(per_seed: Mapping[int, Mapping[str, float]], study_seed: int, headlines: tuple[str, ...]) -> Any:
    """One small panel per headline: each seed's value (the study's seed filled), and the study
    seed's within-seed interval as a bar, so the two spreads are compared by eye."""
    from matplotlib.figure import Figure

    keys, seeds = list(headlines), sorted(per_seed)
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        own = per_seed[study_seed]
        if all(finite(own.get(key + s)) for s in CI_SUFFIXES):
            ax.axhspan(own[key + "_ci_low"], own[key + "_ci_high"], color="0.85", label="within-seed CI")
        shown = [s for s in seeds if finite(per_seed[s].get(key))]
        for s in shown:
            ax.plot([s], [per_seed[s][key]], "o", color="C0", mfc="C0" if s == study_seed else "white")
        if not shown:
            ax.text(0.5, 0.5, "not estimated", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_title(key, fontsize=8)
        ax.set_xlabel("seed", fontsize=7)
        ax.set_xticks(seeds)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig
