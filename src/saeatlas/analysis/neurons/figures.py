"""The neurons figure: the distribution of each feature's largest |r| with any MLP neuron, per
dictionary size, beside the two nulls and the threshold (matplotlib, no pyplot state)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from saeatlas.analysis.common.plotting import new_figure, size_colors
from saeatlas.analysis.common.published import label, value

NULL_STYLE = {"random": ("black", "--", "random residual directions"),
              "rotation": ("grey", ":", "rotated neurons")}
PUBLISHED = "templeton2024_frac_max_neuron_corr_le_0_3"


def max_corr_figure(layer: int, series: Mapping[str, np.ndarray], edges: np.ndarray, threshold: float,
                    neurons: int) -> Any:
    """Density of max |r| per size (viridis, smallest dark) and per null (black dashed: random
    residual directions; grey dotted: rotated neurons), the threshold as a red line; each label
    carries the fraction at or below it."""
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    sizes = [k for k in series if k.startswith("n")]
    width = np.diff(edges)
    for key, color in zip(sizes, size_colors(len(sizes))):
        _step(ax, series[key], edges, width, threshold, color, "-", f"{key.replace('n', 'n = ', 1)}", 1.6)
    for key, (color, ls, name) in NULL_STYLE.items():
        if key in series:
            _step(ax, series[key], edges, width, threshold, color, ls, name, 1.2)
    ax.axvline(threshold, color="C3", lw=1, label=f"r = {threshold:g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"largest |Pearson r| with any of the {neurons} MLP neurons")
    ax.set_ylabel("density")
    published = label("neurons", PUBLISHED).split("(", 1)[1].rstrip(")")
    ax.set_title(f"Layer {layer}: each feature's largest |r| with any MLP neuron (in brackets: share ≤ {threshold:g})"
                 f"\npublished: {value('neurons', PUBLISHED):.0%} of features ≤ 0.3 ({published})", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _step(ax: Any, values: np.ndarray, edges: np.ndarray, width: np.ndarray, threshold: float, color: Any,
          ls: str, name: str, lw: float) -> None:
    """One density as a step line, labelled with its share at or below the threshold."""
    if values.size == 0:
        return
    counts = np.histogram(values, bins=edges)[0]
    density = counts / (values.size * width)
    share = float(np.mean(values <= threshold))
    ax.stairs(density, edges, color=color, ls=ls, lw=lw, label=f"{name} ({share:.0%})")
