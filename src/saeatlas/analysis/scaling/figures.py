"""The figures of the ``scaling`` analysis: matplotlib figures (alive latents and dead fraction
against size, the density distributions, the completeness curves rescaled and not) and the
interactive Plotly view of the completeness judgements."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import special

from saeatlas.analysis.common.plotting import new_figure, size_colors
from saeatlas.analysis.common.stats import PowerLawFit
from saeatlas.analysis.scaling.completeness import LogisticFit
from saeatlas.analysis.scaling.firing import SizeStats


def figure_power_law(sizes: Sequence[int], alive: np.ndarray, dead: np.ndarray,
                     fits: Mapping[str, PowerLawFit]) -> Any:
    """Alive latents against n (log-log, with the fitted power law and its CI) and the dead fraction."""
    fig = new_figure(10, 4)
    ax1, ax2 = fig.subplots(1, 2)
    n = np.asarray(sizes, dtype=float)
    grid = np.geomspace(n.min(), n.max(), 50)
    ax1.loglog(n, n, ":", color="grey", label="all latents alive")
    ax1.loglog(n, alive, "o", color="C0", label="alive")
    f = fits["alive"]
    if f.estimated:
        ci = f" [{f.ci_low:.3f}, {f.ci_high:.3f}]" if f.ci_low is not None else ""
        ax1.loglog(grid, f.prefactor * grid ** f.exponent, "-", color="C0",
                   label=f"fit: alpha = {f.exponent:.3f}{ci}")
    ax1.set_xlabel("dictionary size n")
    ax1.set_ylabel("alive latents")
    ax1.legend(fontsize=8)
    ax1.set_title("alive latents vs size")
    ax2.semilogx(n, dead / n, "o-", color="C3")
    ax2.set_xlabel("dictionary size n")
    ax2.set_ylabel("dead fraction")
    ax2.set_title("dead fraction vs size")
    fig.tight_layout()
    return fig


def figure_densities(sizes: Sequence[int], per_size: Sequence[SizeStats], n_eval: int, edges: np.ndarray) -> Any:
    """Per size, the histogram of log10 firing densities of the alive latents (share of the dictionary)."""
    fig = new_figure(6, 4)
    ax = fig.subplots()
    for color, n, st in zip(size_colors(len(sizes)), sizes, per_size):
        logd = np.log10(st.fires[st.fires > 0] / n_eval)
        counts, _ = np.histogram(logd, bins=edges)
        ax.stairs(counts / max(n, 1), edges, color=color, label=f"n = {n}")
    ax.axvline(math.log10(1 / n_eval), ls=":", color="grey", label="one firing")
    ax.set_xlabel("log10 firing density (alive latents)")
    ax.set_ylabel("fraction of the dictionary")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _binned(x: np.ndarray, y: np.ndarray, width: float = 0.25, min_points: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres and the mean of y in bins of x holding at least ``min_points`` points."""
    bins = np.floor(x / width)
    centers, fracs = [], []
    for b in np.unique(bins):
        sel = bins == b
        if sel.sum() >= min_points:
            centers.append((b + 0.5) * width)
            fracs.append(y[sel].mean())
    return np.array(centers), np.array(fracs)


def figure_completeness(sizes: Sequence[int], xs: np.ndarray, us: np.ndarray, ys: np.ndarray,
                        fit: LogisticFit | None, col: Mapping[str, Any]) -> Any:
    """Binned share of (concept, size) pairs with a concept-specific latent, per size, in x =
    log10(frequency x alive) (left, with the shared fit) and in log10 frequency (right)."""
    fig = new_figure(11, 4)
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    colors = size_colors(len(sizes))
    for si, (n, color) in enumerate(zip(sizes, colors)):
        for ax, grid in ((ax1, xs), (ax2, us)):
            cx, cy = _binned(grid[:, si], ys[:, si])
            ax.plot(cx, cy, "o", color=color, alpha=0.8, label=f"n = {n}")
        entry = col["per_size"].get(si)
        if entry is not None:
            g = np.linspace(xs[:, si].min(), xs[:, si].max(), 100)
            p = special.expit(entry["fit"].intercept + entry["fit"].slope * g)
            ax1.plot(g, p, "--", color=color, lw=0.8)
            ax2.plot(g - (xs[0, si] - us[0, si]), p, "--", color=color, lw=0.8)
    if fit is not None:
        g = np.linspace(xs.min(), xs.max(), 200)
        ax1.plot(g, special.expit(fit.intercept + fit.slope * g), "k-", lw=2, label=f"shared fit, x50 = {fit.x50:.2f}")
        ax1.axvline(fit.x50, color="k", ls=":")
    ax1.axvline(0.0, color="grey", ls="-.", lw=0.8, label="frequency = 1 / alive")
    ax1.set_xlabel("log10(frequency x alive latents)")
    ax1.set_ylabel("P(concept-specific latent exists)")
    ax1.set_title("rescaled")
    ax2.set_xlabel("log10 frequency")
    ax2.set_title("not rescaled")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plotly_completeness(sizes: Sequence[int], xs: np.ndarray, ys: np.ndarray, names: Sequence[str],
                        fit: LogisticFit | None) -> dict[str, Any]:
    """Every judged (concept, size) pair (jittered 0/1) against x, with the shared fit."""
    import plotly.graph_objects as go

    traces = []
    jitter = np.random.default_rng(0).uniform(-0.03, 0.03, size=ys.shape)
    for si, n in enumerate(sizes):
        traces.append(go.Scatter(x=xs[:, si].tolist(), y=(ys[:, si] + jitter[:, si]).tolist(), mode="markers",
                                 name=f"n = {n}", text=list(names), opacity=0.6,
                                 hovertemplate="%{text}<br>x = %{x:.2f}<extra>" + f"n = {n}" + "</extra>"))
    if fit is not None and xs.size:
        g = np.linspace(float(xs.min()), float(xs.max()), 200)
        traces.append(go.Scatter(x=g.tolist(), y=special.expit(fit.intercept + fit.slope * g).tolist(),
                                 mode="lines", name=f"shared fit (x50 = {fit.x50:.2f})", line={"color": "black"}))
    layout = go.Layout(title="Feature completeness: does a concept-specific latent exist?",
                       xaxis={"title": "log10(frequency x alive latents)"},
                       yaxis={"title": "exists (jittered) / P(exists)"})
    return go.Figure(data=traces, layout=layout).to_plotly_json()
