"""The crystals figures: each task's quality per space against the shuffled-pair null (raw and
after LDA), and an interactive 2-D PCA of one task's words with its a -> b arrows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from saeatlas.analysis.crystals.lda import VARIANTS, project_out
from saeatlas.analysis.crystals.quality import QUALITIES

if TYPE_CHECKING:
    from saeatlas.analysis.crystals.compute import TaskRows


def quality_figure(table: list[dict[str, Any]], tasks: list[str], spaces: list[str]) -> Any:
    """Rows: the two qualities; columns: tasks; x: spaces. Observed raw (filled) and after LDA
    (open) with bootstrap CIs, over the shuffled-pair null's mean ± 2 SD (grey: raw, blue: LDA)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.6 * len(tasks) + 1, 5.4), layout="constrained")
    axes = fig.subplots(len(QUALITIES), len(tasks), squeeze=False, sharey="row")
    lookup = {(r["task"], r["space"], r["variant"]): r for r in table}
    x = np.arange(len(spaces))
    for qi, q in enumerate(QUALITIES):
        for ti, task in enumerate(tasks):
            ax = axes[qi, ti]
            for vi, (variant, colour, marker, band) in enumerate((("raw", "C0", "o", "0.75"),
                                                                    ("lda", "C3", "s", "#9ecae1"))):
                rows = [lookup.get((task, s, variant)) for s in spaces]
                _quality_points(ax, rows, q, x, vi, variant, colour, marker, band, first=ti == 0)
            ax.axhline(0.0, color="k", lw=0.5)
            ax.set_xticks(x, spaces, rotation=45, fontsize=7)
            if qi == 0:
                ax.set_title(task, fontsize=9)
            if ti == 0:
                ax.set_ylabel(q.replace("_", " "))
    axes[0, 0].legend(fontsize=6, loc="best")
    fig.suptitle("Word-pair crystals: quality vs shuffled-pair null (raw and after LDA)", fontsize=10)
    return fig


def _quality_points(ax: Any, rows: list[dict[str, Any] | None], q: str, x: np.ndarray, vi: int, variant: str,
                    colour: str, marker: str, band: str, first: bool) -> None:
    """One variant's points of one panel: the null's mean ± 2 SD band, the value and its CI."""
    ok = [i for i, r in enumerate(rows) if r is not None and r.get(q) is not None]
    if not ok:
        return
    got: list[dict[str, Any]] = [rows[i] for i in ok]  # type: ignore[misc]
    xs = x[ok] + (vi - 0.5) * 0.25
    null = np.array([r[f"{q}_null"] for r in got])
    sd = np.array([r[f"{q}_null_sd"] or 0.0 for r in got])
    ax.bar(xs, 4 * sd, bottom=null - 2 * sd, width=0.22, color=band, alpha=0.8,
           label=f"null ±2sd ({variant})" if first else None)
    val = np.array([r[q] for r in got])
    lo = np.array([r[f"{q}_ci_lo"] if r[f"{q}_ci_lo"] is not None else r[q] for r in got])
    hi = np.array([r[f"{q}_ci_hi"] if r[f"{q}_ci_hi"] is not None else r[q] for r in got])
    ax.errorbar(xs, val, yerr=[val - lo, hi - val], fmt=marker, color=colour, ms=5,
                mfc=colour if variant == "raw" else "white", label=variant if first else None)


def pca_figure(task: "TaskRows", acts: np.ndarray, basis: np.ndarray) -> dict[str, Any]:
    """2-D PCA of the task's words in activation space, arrows a -> b; buttons switch between
    the raw vectors and the LDA-cleaned ones (each with its own PCA)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    titles = []
    for vi, variant in enumerate(VARIANTS):
        vecs = acts if variant == "raw" else project_out(acts, basis)
        a_xy, b_xy, ev = _task_pca(vecs, task)
        lx, ly, sizes = [], [], []
        for (ax_, ay_), (bx_, by_) in zip(a_xy, b_xy):
            lx += [ax_, bx_, None]
            ly += [ay_, by_, None]
            sizes += [0, 11, 0]
        visible = vi == 0
        fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines+markers", line={"color": "grey", "width": 1},
                                 marker={"symbol": "arrow", "angleref": "previous", "size": sizes, "color": "grey"},
                                 hoverinfo="skip", showlegend=False, visible=visible))
        for pts_xy, words, colour, label in ((a_xy, [p[0] for p in task.pairs], "#1f77b4", "a"),
                                             (b_xy, [p[1] for p in task.pairs], "#d62728", "b")):
            fig.add_trace(go.Scatter(x=pts_xy[:, 0], y=pts_xy[:, 1], mode="markers+text", text=words,
                                     textposition="top center", textfont={"size": 9},
                                     marker={"color": colour, "size": 6}, name=f"{label} ({variant})",
                                     visible=visible))
        titles.append(f"{task.name}: PCA of activations ({variant}; PC1 {ev[0]:.0%}, PC2 "
                      f"{ev[1] if len(ev) > 1 else 0.0:.0%} of the task's variance)")
    n_per = 3
    buttons = [{"label": variant, "method": "update",
                "args": [{"visible": [i // n_per == vi for i in range(n_per * len(VARIANTS))]},
                         {"title": {"text": titles[vi]}}]} for vi, variant in enumerate(VARIANTS)]
    fig.update_layout(title={"text": titles[0]}, updatemenus=[{"buttons": buttons, "type": "buttons",
                                                               "direction": "right", "x": 0.0, "y": 1.12}],
                      xaxis_title="PC1", yaxis_title="PC2", margin={"t": 80})
    return fig.to_plotly_json()


def _task_pca(vecs: np.ndarray, task: "TaskRows") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The task's a's and b's on the first two principal axes of its own words, and the
    fraction of the task's variance each of them explains."""
    pts = np.vstack([vecs[task.ia], vecs[task.ib]])
    pts = pts - pts.mean(axis=0)
    _, s, vt = np.linalg.svd(pts, full_matrices=False)
    xy = pts @ vt[:2].T
    if xy.shape[1] < 2:
        xy = np.hstack([xy, np.zeros((len(xy), 2 - xy.shape[1]))])
    ev = (s[:2] ** 2) / max(float((s ** 2).sum()), 1e-300)
    n = len(task.pairs)
    return xy[:n], xy[n:], ev
