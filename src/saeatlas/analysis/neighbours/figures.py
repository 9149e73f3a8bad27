"""The neighbourhood analysis's figures: the UMAP maps, the top-1 cosine histograms beside the
isotropic null, and the interactive (Plotly) map."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def maps_figure(sizes: tuple[int, ...], coords: dict[int, np.ndarray], top1: dict[int, np.ndarray],
                joint: dict[int, np.ndarray] | None) -> Any:
    """Per-size UMAP maps coloured by each feature's top-1 neighbour cosine (bright = part of a
    tight group), and the joint map coloured by size."""
    from matplotlib.figure import Figure

    panels = len(sizes) + (joint is not None)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(4.0 * cols, 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_axis_off()
    marker = lambda n: max(0.3, min(8.0, 3000.0 / n))  # noqa: E731  (points shrink as n grows)
    sc = None
    for ax, s in zip(axes, sizes):
        sc = ax.scatter(coords[s][:, 0], coords[s][:, 1], c=top1[s], s=marker(s), cmap="viridis", vmin=0.0,
                        vmax=1.0, linewidths=0, rasterized=True)
        ax.set_title(f"n = {s}")
        ax.set_xticks([])
        ax.set_yticks([])
    if sc is not None:
        fig.colorbar(sc, ax=axes[:len(sizes)].tolist(), shrink=0.8, label="top-1 neighbour cosine")
    if joint is not None:
        ax = axes[len(sizes)]
        total = sum(len(v) for v in joint.values())
        for s in sizes:
            ax.scatter(joint[s][:, 0], joint[s][:, 1], s=marker(total), linewidths=0, rasterized=True,
                       label=str(s))
        ax.set_title("all sizes, one map")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=4, title="size", title_fontsize=7)
    return fig


def cosine_figure(sizes: tuple[int, ...], top1: dict[int, np.ndarray], top1_null: dict[int, np.ndarray]) -> Any:
    """Histogram of top-1 neighbour cosines per size, real beside the isotropic null."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.0 * len(sizes), 3.0), layout="constrained")
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    bins = np.linspace(-0.2, 1.0, 61)
    for ax, s in zip(axes, sizes):
        ax.hist(np.clip(top1[s], -0.2, 1.0), bins=bins, alpha=0.7, label="decoder")
        ax.hist(np.clip(top1_null[s], -0.2, 1.0), bins=bins, alpha=0.7, label="isotropic null")
        ax.set_title(f"n = {s}")
        ax.set_xlabel("top-1 neighbour cosine")
    axes[0].set_ylabel("features")
    axes[0].legend(fontsize=7)
    return fig


def interactive_map(sizes: tuple[int, ...], coords: dict[int, np.ndarray], idx: dict[int, np.ndarray],
                    cos: dict[int, np.ndarray], joint_map: bool) -> dict[str, Any]:
    """Plotly scattergl: the joint map (one trace per size, so the legend colours and toggles
    sizes), or without a joint map the per-size maps as traces, all but the first hidden (their
    coordinate systems are unrelated). Hover: ``size:feature`` and its nearest neighbour."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, s in enumerate(sizes):
        text = [f"{s}:{f}<br>nearest: {s}:{idx[s][f, 0]} (cos {cos[s][f, 0]:.3f})" for f in range(s)]
        fig.add_trace(go.Scattergl(
            x=np.round(coords[s][:, 0], 4).tolist(), y=np.round(coords[s][:, 1], 4).tolist(), mode="markers",
            name=f"n={s}", text=text, hovertemplate="%{text}<extra></extra>",
            marker={"size": 4, "opacity": 0.7},
            visible=True if (joint_map or i == 0) else "legendonly"))
    title = ("Joint UMAP of the decoder directions of all sizes (colour = size)" if joint_map
             else "UMAP of the decoder directions, one size at a time (pick a size in the legend)")
    fig.update_layout(title=title, xaxis={"showticklabels": False}, yaxis={"showticklabels": False},
                      legend={"title": {"text": "dictionary size"}}, margin={"t": 50, "l": 5, "r": 5, "b": 5})
    return fig.to_plotly_json()
