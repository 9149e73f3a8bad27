"""The lobes analysis's figures: AMI and classifier accuracy against k (matplotlib), and the
lobe x domain enrichment heatmap (a Plotly figure dict)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from saeatlas.analysis.common.published import value


def domain_heatmap(ylabels: list[str], xlabels: list[str], z: list[list[float | None]],
                   text: list[list[str]]) -> dict[str, Any]:
    """Lobe x domain log2 enrichment as a Plotly heatmap (0 = the corpus base rate)."""
    import plotly.graph_objects as go

    finite = [abs(v) for row in z for v in row if v is not None]
    lim = max(finite + [1.0])
    fig = go.Figure(go.Heatmap(z=z, x=xlabels, y=ylabels, text=text, colorscale="RdBu_r", zmid=0, zmin=-lim,
                               zmax=lim, colorbar={"title": "log2 enrichment"},
                               hovertemplate="%{y}<br>%{x}: %{text}<extra></extra>"))
    fig.update_layout(title="What the co-occurrence lobes fire on: lobe x corpus domain enrichment "
                            "(firing share / base rate)", yaxis={"autorange": "reversed"},
                      margin={"t": 50, "l": 5, "r": 5, "b": 5})
    return fig.to_plotly_json()


def ami_figure(ks_done: Sequence[int], metrics: Mapping[str, float]) -> Any:
    """AMI vs k with both nulls (mean ± 2 sd) and the published reference; balanced accuracy vs k
    beside random vectors and chance."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    ks = np.array(ks_done)
    if ks.size:
        def series(name: str) -> np.ndarray:
            return np.array([metrics.get(f"k{k}.{name}", np.nan) for k in ks])

        ax.plot(ks, series("ami"), "o-", label="co-occurrence lobes vs geometric clusters (ours)")
        for prefix, label, color in (("ami_null", "label-shuffle null", "grey"),
                                     ("ami_density_null", "density-matched null", "tab:orange")):
            mean, sd = series(prefix + "_mean"), series(prefix + "_sd")
            ax.plot(ks, mean, "--", color=color, label=f"{label} (mean ± 2 sd)")
            ax.fill_between(ks, mean - 2 * sd, mean + 2 * sd, color=color, alpha=0.25)
        ba = series("balanced_accuracy")
        sel = np.isfinite(ba)
        if sel.any():
            ax2.plot(ks[sel], ba[sel], "o-", label="decoder vectors")
            ax2.plot(ks[sel], series("balanced_accuracy_random")[sel], "s--", label="random Gaussian vectors")
            ax2.plot(ks[sel], series("balanced_accuracy_chance")[sel], ":", color="k", label="chance (1/k)")
    gks = sorted(int(key[5:-4]) for key in metrics if key.startswith("goc.k") and key.endswith(".ami"))
    if gks:
        ax.plot(gks, [metrics[f"goc.k{k}.ami"] for k in gks], "D-", color="tab:green",
                label="the same, published protocol (document windows)")
    ax.plot([2], [value("lobes", "li2024_ami_k2")], "k*", ms=10, label="Li et al. 2024 (Gemma-2-2B, approx.)")
    ax.plot([128, 256], [value("lobes", "li2024_ami_k128_256")] * 2, "k*", ms=10)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("clusters k")
    ax.set_ylabel("adjusted mutual information")
    ax.set_title("Functional lobes vs geometric clusters")
    ax.legend(fontsize=7)
    ax2.plot([2], [value("lobes", "li2024_balanced_accuracy_k2")], "k*", ms=10, label="Li et al. 2024: decoder")
    ax2.plot([2], [value("lobes", "li2024_balanced_accuracy_random_k2")], "kx", ms=8,
             label="Li et al. 2024: random")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("lobes k")
    ax2.set_ylabel("balanced accuracy (out-of-fold)")
    ax2.set_title("Predicting a feature's lobe from its direction")
    ax2.set_ylim(0, 1.02)
    ax2.legend(fontsize=7)
    return fig
