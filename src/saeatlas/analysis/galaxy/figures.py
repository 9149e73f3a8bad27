"""The galaxy figure (spectra, slopes, negentropies; matplotlib) and its interactive spectrum
view (a Plotly figure dict)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from saeatlas.analysis.common.plotting import size_colors
from saeatlas.analysis.galaxy.clouds import CloudResult, Pair
from saeatlas.analysis.galaxy.config import GalaxyConfig
from saeatlas.analysis.common.published import value
from saeatlas.analysis.galaxy.spectrum import SlopeFit


def _fit_line(f: SlopeFit, config: GalaxyConfig) -> tuple[np.ndarray, np.ndarray]:
    r = np.array([config.rank_min, config.rank_max], dtype=float)
    return r, 10.0 ** f.log10_prefactor * r ** (-f.alpha)


def spectrum_figure(layer: int, pairs: list[Pair], act: Pair, config: GalaxyConfig) -> Any:
    """Left: log-log spectra (sizes, their nulls dotted, activations black), fit window shaded,
    fitted lines dashed. Middle: α per size with CI, null and activations beside. Right:
    negentropy per size with CI, null beside."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.5), layout="constrained")
    ax, ax2, ax3 = fig.subplots(1, 3)
    _spectra_panel(ax, layer, pairs, act, config)
    _slope_panel(ax2, pairs, act, config)
    _negentropy_panel(ax3, pairs, act, config)
    return fig


def _spectra_panel(ax: Any, layer: int, pairs: list[Pair], act: Pair, config: GalaxyConfig) -> None:
    for (res, null), color in zip(pairs, size_colors(len(pairs))):
        ranks = np.arange(1, len(res.eigenvalues) + 1)
        pos = res.eigenvalues > 0
        ax.loglog(ranks[pos], res.eigenvalues[pos], color=color, lw=1.2, label=f"n = {res.size}")
        ax.loglog(ranks[null.eigenvalues > 0], null.eigenvalues[null.eigenvalues > 0], ":", color=color, lw=0.9)
        if res.fit.estimated:
            ax.loglog(*_fit_line(res.fit, config), "--", color="k", lw=0.8)
    ares, _ = act
    pos = ares.eigenvalues > 0
    ax.loglog(np.arange(1, len(ares.eigenvalues) + 1)[pos], ares.eigenvalues[pos], color="k", lw=1.5,
              label="activations")
    if ares.fit.estimated:
        ax.loglog(*_fit_line(ares.fit, config), "--", color="grey", lw=0.8)
    ax.axvspan(config.rank_min, config.rank_max, color="grey", alpha=0.12, label="fit window")
    ax.plot([], [], ":", color="grey", label="isotropic Gaussian (same n)")
    ax.set_xlabel("rank r")
    ax.set_ylabel("covariance eigenvalue λ_r")
    ax.set_title(f"layer {layer}: eigenvalue spectrum of the cloud")
    ax.legend(fontsize=7)


def _bars(axis: Any, pairs: list[Pair], get: Callable[[Pair], Any], ci: Callable[[Pair], Any], offset: float,
          color: Any, label: str) -> None:
    """One point with its interval per size (sizes without a value are skipped)."""
    vals, lows, highs, xs = [], [], [], []
    for i, pair in enumerate(pairs):
        v, (lo, hi) = get(pair), ci(pair)
        if v is None:
            continue
        xs.append(i + offset)
        vals.append(v)
        lows.append(v - lo if lo is not None else 0.0)
        highs.append(hi - v if hi is not None else 0.0)
    if vals:
        axis.errorbar(xs, vals, yerr=[lows, highs], fmt="o", color=color, capsize=3, label=label)


def _slope_panel(ax2: Any, pairs: list[Pair], act: Pair, config: GalaxyConfig) -> None:
    ares, _ = act
    _bars(ax2, pairs, lambda p: p[0].fit.alpha, lambda p: (p[0].fit.ci_low, p[0].fit.ci_high), -0.1, "C0",
          "SAE decoders")
    _bars(ax2, pairs, lambda p: p[1].fit.alpha, lambda p: (p[1].fit.ci_low, p[1].fit.ci_high), 0.1, "grey",
          "isotropic Gaussian")
    # the published window (Li et al.'s ranks), hollow markers, beside ours
    _bars(ax2, pairs, lambda p: p[0].fit_goc.alpha, lambda p: (p[0].fit_goc.ci_low, p[0].fit_goc.ci_high), -0.25,
          "C1", f"SAE decoders, ranks {config.published_rank_min}-{config.published_rank_max}")
    _bars(ax2, pairs, lambda p: p[1].fit_goc.alpha, lambda p: (p[1].fit_goc.ci_low, p[1].fit_goc.ci_high), 0.25,
          "silver", f"isotropic Gaussian, ranks {config.published_rank_min}-{config.published_rank_max}")
    if ares.fit.estimated:
        ax2.axhline(ares.fit.alpha, color="k", lw=1, label=f"activations ({ares.fit.alpha:.3f})")
        if ares.fit.ci_low is not None:
            ax2.axhspan(ares.fit.ci_low, ares.fit.ci_high, color="k", alpha=0.08)
    ax2.axhline(value("galaxy", "li2024_slope_layer12"), color="C3", ls="--", lw=0.8,
                label="Li et al. 2024, Gemma layer 12 (ranks 10-150)")
    ax2.axhline(value("galaxy", "li2024_slope_gaussian"), color="C3", ls=":", lw=0.8,
                label="Li et al. 2024, Gaussian (ranks 10-150)")
    ax2.set_xticks(np.arange(len(pairs)), [str(r.size) for r, _ in pairs])
    ax2.set_xlabel("dictionary size")
    ax2.set_ylabel(f"power-law slope α (ranks {config.rank_min}-{config.rank_max}; orange: "
                   f"{config.published_rank_min}-{config.published_rank_max})")
    ax2.set_title("slope of the spectrum")
    ax2.legend(fontsize=7)


def _negentropy_panel(ax3: Any, pairs: list[Pair], act: Pair, config: GalaxyConfig) -> None:
    ares, _ = act
    _bars(ax3, pairs, lambda p: p[0].entropy.negentropy,
          lambda p: (p[0].entropy.ci.get("ci_low"), p[0].entropy.ci.get("ci_high")), -0.1, "C2", "SAE decoders")
    _bars(ax3, pairs, lambda p: p[1].entropy.negentropy,
          lambda p: (p[1].entropy.ci.get("ci_low"), p[1].entropy.ci.get("ci_high")), 0.1, "grey",
          "isotropic Gaussian")
    if ares.entropy.estimated:
        ax3.axhline(ares.entropy.negentropy, color="k", lw=1, label=f"activations ({ares.entropy.negentropy:.3f})")
    ax3.axhline(0.0, color="grey", lw=0.6)
    ax3.set_xticks(np.arange(len(pairs)), [str(r.size) for r, _ in pairs])
    ax3.set_xlabel("dictionary size")
    ax3.set_ylabel(f"negentropy (nats, top {config.entropy_dims} PCs, whitened)")
    ax3.set_title("clustering: distance from a Gaussian")
    ax3.legend(fontsize=7)


def spectrum_plotly(layer: int, pairs: list[Pair], act: Pair, config: GalaxyConfig) -> dict[str, Any]:
    """Every cloud's spectrum on log-log axes (nulls dotted), its fitted line and the fit window."""
    import plotly.graph_objects as go
    from matplotlib.colors import to_hex

    traces: list[Any] = []
    for (res, null), color in zip(pairs, [to_hex(c) for c in size_colors(len(pairs))]):
        traces += _spectrum_traces(res, f"n = {res.size}", color, "solid", 2, f"n{res.size}", config)
        traces += _spectrum_traces(null, f"Gaussian, n = {res.size}", color, "dot", 1, f"n{res.size}", config)
    traces += _spectrum_traces(act[0], "activations", "black", "solid", 2.5, "act", config)
    traces += _spectrum_traces(act[1], "Gaussian, activations' n", "black", "dot", 1, "act", config)
    fig = go.Figure(data=traces)
    fig.add_vrect(x0=config.rank_min, x1=config.rank_max, fillcolor="grey", opacity=0.12, line_width=0,
                  annotation_text="fit window", annotation_position="top left")
    fig.update_layout(title=f"Layer {layer}: covariance eigenvalue spectra of the SAE decoder clouds "
                            f"(unit rows, centred) vs isotropic Gaussian and activations",
                      xaxis={"title": "rank r", "type": "log"}, yaxis={"title": "eigenvalue λ_r", "type": "log"})
    return fig.to_plotly_json()


def _spectrum_traces(res: CloudResult, name: str, color: str, dash: str, width: float, group: str,
                     config: GalaxyConfig) -> list[Any]:
    """One cloud's spectrum line and, where fitted, its power-law line."""
    import plotly.graph_objects as go

    pos = res.eigenvalues > 0
    ranks = np.arange(1, len(res.eigenvalues) + 1)[pos]
    slope = f"α = {res.fit.alpha:.3f}" if res.fit.estimated else "no fit"
    traces = [go.Scatter(x=ranks.tolist(), y=res.eigenvalues[pos].tolist(), mode="lines", name=name,
                         legendgroup=group, line={"color": color, "dash": dash, "width": width},
                         hovertemplate=f"{name}<br>rank %{{x}}<br>λ = %{{y:.4g}}<br>{slope}<extra></extra>")]
    if res.fit.estimated:
        r, v = _fit_line(res.fit, config)
        traces.append(go.Scatter(x=r.tolist(), y=v.tolist(), mode="lines", legendgroup=group, showlegend=False,
                                 line={"color": "black", "dash": "dash", "width": 1}, name=f"fit {name}",
                                 hovertemplate=f"fit {name}: {slope}<extra></extra>"))
    return traces
