"""Figures of the splitting analysis: best-match histograms against the null, class fractions
per pair with the published reference, children per parent, and the split forest (Plotly icicle)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from saeatlas.analysis.common.plotting import new_figure
from saeatlas.analysis.common.published import value
from saeatlas.analysis.splitting.compute import PairResult
from saeatlas.analysis.splitting.config import SplittingConfig


def icicle(doc: dict[str, Any], max_roots: int) -> dict[str, Any]:
    """The split forest as a Plotly icicle: the ``max_roots`` largest trees (by node count)."""
    import plotly.graph_objects as go

    children: dict[str, list[str]] = defaultdict(list)
    incoming: dict[str, dict[str, Any]] = {}
    for e in doc["edges"]:
        children[e["source"]].append(e["target"])
        incoming[e["target"]] = e
    node_info = {n["id"]: n for n in doc["nodes"]}

    def count(node: str) -> int:
        return 1 + sum(count(c) for c in children.get(node, ()))

    roots = [n["id"] for n in doc["nodes"] if n["id"] not in incoming]
    roots.sort(key=lambda r: (-count(r), tuple(int(x) for x in r.split(":"))))
    ids, labels, parents, custom = ["all"], ["split forest"], [""], [["", "", "", ""]]
    stack = [(r, "all") for r in reversed(roots[:max_roots])]
    while stack:
        node, parent = stack.pop()
        info, edge = node_info[node], incoming.get(node)
        ids.append(node)
        labels.append(node)
        parents.append(parent)
        custom.append([info["class"], info["firings"], "" if edge is None else f"{edge['cos']:.3f}",
                       "" if edge is None else f"{edge['containment']:.3f}"])
        stack.extend((c, node) for c in reversed(children.get(node, ())))
    fig = go.Figure(go.Icicle(
        ids=ids, labels=labels, parents=parents, customdata=custom, maxdepth=-1,
        hovertemplate=("%{label}<br>class: %{customdata[0]}<br>firings: %{customdata[1]}"
                       "<br>cos to parent: %{customdata[2]}<br>containment: %{customdata[3]}<extra></extra>"),
    ))
    fig.update_layout(title=f"Split forest across sizes {doc['sizes']} (the {min(len(roots), max_roots)} "
                            f"largest of {len(roots)} trees; node = size:feature)",
                      margin={"t": 50, "l": 5, "r": 5, "b": 5})
    return fig.to_plotly_json()


def match_figure(pairs: list[PairResult], config: SplittingConfig) -> Any:
    """Best-match decoder cosine and activation correlation per pair, real vs null."""
    fig = new_figure(3.2 * len(pairs), 5.6)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(2, len(pairs), squeeze=False)
    bins = np.linspace(-0.2, 1.0, 49)
    for col, pr in enumerate(pairs):
        for row, (key, label, cut) in enumerate((("cos", "best decoder cosine", config.similar_cos),
                                                 ("corr", "best activation correlation", config.identical_corr))):
            ax = axes[row, col]
            ax.hist(np.clip(pr.hist[key], -0.2, 1.0), bins=bins, alpha=0.7, label="real")
            ax.hist(np.clip(pr.hist[key + "_null"], -0.2, 1.0), bins=bins, alpha=0.7, label="null")
            ax.axvline(cut, color="k", lw=0.8, ls="--")
            ax.set_xlabel(label)
            if row == 0:
                ax.set_title(f"{pr.small} → {pr.large}")
            if col == 0:
                ax.set_ylabel("larger-SAE features")
                ax.legend(fontsize=7)
    return fig


def classes_figure(pairs: list[PairResult]) -> Any:
    """Class fractions per pair (real; beside them Leask et al.'s rule on all latents and their
    published similar fraction) and children per parent."""
    fig = new_figure(10, 4)
    fig.set_layout_engine("constrained")
    ax, ax2 = fig.subplots(1, 2)
    x = np.arange(len(pairs))
    bottom = np.zeros(len(pairs))
    for name in ("identical", "split_child", "other_similar", "novel"):
        vals = np.array([pr.metrics[f"pair_{pr.small}_{pr.large}.{name}_fraction"] for pr in pairs])
        ax.bar(x, vals, bottom=bottom, label=name)
        bottom += vals
    leask = [pr.metrics[f"pair_{pr.small}_{pr.large}.leask_reconstruction_fraction"] for pr in pairs]
    ax.plot(x, leask, "k*", ms=9, label="Leask et al.'s rule on all latents (cos ≥ leask_cos)")
    ax.axhline(value("splitting", "leask2025_similar_fraction"), color="k", ls="--", lw=0.8,
               label="Leask et al. 2025: reconstruction-like (published)")
    ax.set_xticks(x, [f"{pr.small}→{pr.large}" for pr in pairs], rotation=30)
    ax.set_ylabel("fraction of larger-SAE features (bars: alive ones)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    kmax = max([max(pr.children_counts, default=2) for pr in pairs] + [2])
    ks = np.arange(2, kmax + 1)
    width = 0.8 / len(pairs)
    for i, pr in enumerate(pairs):
        ax2.bar(ks + i * width - 0.4 + width / 2, [pr.children_counts.get(int(k), 0) for k in ks], width,
                label=f"{pr.small}→{pr.large}")
    ax2.set_xlabel("children per split parent")
    ax2.set_ylabel("families")
    ax2.set_yscale("symlog", linthresh=1)
    ax2.legend(fontsize=7)
    return fig
