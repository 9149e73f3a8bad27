"""The report sections of the core stages (the analyses bring their own ``section.py``): the run
itself, and training and quality per dictionary size. Built from the stages' written outputs only,
through the same ``Section`` interface, with their figures written as Plotly JSON."""

from __future__ import annotations

import csv
import json
import os
import platform
from pathlib import Path
from typing import Any, Mapping

from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric
from saeatlas.artifacts import write_bytes_atomic, write_csv_atomic

QUALITY_COLUMNS = ("size", "fvu", "l0", "dead_fraction", "dense_fraction", "ce_loss_recovered", "delta_ce",
                   "kl_sae", "train_seconds", "tokens_per_second")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write_figure(path: Path, figure: Any) -> None:
    write_bytes_atomic(path, figure.to_json().encode("utf-8"))


def _curves_figure(curves: Mapping[int, list[dict[str, str]]]) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    import plotly.colors

    fig = make_subplots(rows=1, cols=2, subplot_titles=("training FVU (batch)", "dead fraction"))
    palette = plotly.colors.qualitative.Plotly
    for i, (size, rows) in enumerate(curves.items()):
        line = {"color": palette[i % len(palette)]}  # one colour per size in both panels
        tokens = [float(r["tokens"]) for r in rows]
        fig.add_trace(go.Scatter(x=tokens, y=[float(r["fvu"]) for r in rows], name=f"n={size}", mode="lines",
                                 legendgroup=str(size), line=line), row=1, col=1)
        fig.add_trace(go.Scatter(x=tokens, y=[float(r["dead_fraction"]) for r in rows], name=f"n={size}",
                                 mode="lines", legendgroup=str(size), showlegend=False, line=line), row=1, col=2)
    fig.update_xaxes(title_text="training tokens")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_layout(height=360, margin={"t": 40, "l": 50, "r": 10, "b": 40})
    return fig


def _density_figure(densities: Mapping[int, list[dict[str, str]]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for size, rows in densities.items():
        fig.add_trace(go.Scatter(x=[float(r["log10_density"]) for r in rows], y=[int(r["latents"]) for r in rows],
                                 name=f"n={size}", mode="lines+markers", line={"shape": "hvh"}))
    fig.update_layout(height=320, xaxis_title="log10 firing density (held-out tokens)", yaxis_title="features",
                      margin={"t": 20, "l": 50, "r": 10, "b": 40})
    return fig


def _quality_rows(sizes: tuple[int, ...], sae_dir: Any) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        ev, tr = read_json(sae_dir(size) / "metrics.json"), read_json(sae_dir(size) / "train_metrics.json")
        rows.append({"size": size, **{k: ev.get(k) for k in QUALITY_COLUMNS[1:8]},
                     "train_seconds": tr.get("seconds"), "tokens_per_second": tr.get("tokens_per_second")})
    return rows


ARCHITECTURE_NAMES = {"topk": "TopK", "batchtopk": "BatchTopK", "matryoshka": "Matryoshka (BatchTopK)",
                      "relu": "ReLU (L1)"}


def quality_section(layer: int, sizes: tuple[int, ...], sae_dir: Any, activation_metrics: Mapping[str, Any],
                    out_dir: Path, architecture: str = "topk") -> tuple[Section, list[dict[str, Any]]]:
    """Training curves, held-out quality per size and the massive-activation exclusion, stated."""
    rows = _quality_rows(sizes, sae_dir)
    write_csv_atomic(out_dir / "quality.csv", rows, QUALITY_COLUMNS)
    _write_figure(out_dir / "training_curves.plotly.json",
                  _curves_figure({s: read_csv(sae_dir(s) / "training_log.csv") for s in sizes}))
    _write_figure(out_dir / "density.plotly.json",
                  _density_figure({s: read_csv(sae_dir(s) / "density_histogram.csv") for s in sizes}))
    outliers = metric(activation_metrics, "train.outlier_rows")
    share = metric(activation_metrics, "train.outlier_share_of_sum_sq_norm")
    tokens = metric(activation_metrics, "train.tokens")
    largest, smallest = rows[-1], rows[0]
    summary = (
        f"{len(sizes)} {ARCHITECTURE_NAMES[architecture]} SAEs on layer {layer}, held-out FVU from "
        f"{_g(smallest['fvu'])} (n = {smallest['size']}) "
        f"to {_g(largest['fvu'])} (n = {largest['size']}); CE loss recovered {_g(smallest['ce_loss_recovered'])} to "
        f"{_g(largest['ce_loss_recovered'])}. Massive activations: {_g(outliers)} of {_g(tokens)} training rows "
        f"(norm > outlier_factor x median) carry {_g(share)} of the summed squared norm; they are excluded from "
        "training and from FVU, and kept in the spliced CE/KL.")
    numbers = tuple(Number(f"held-out FVU, n = {r['size']}", r["fvu"]) for r in rows) + tuple(
        Number(f"CE loss recovered, n = {r['size']}", r["ce_loss_recovered"]) for r in rows)
    return Section(
        title="Training and quality per size", summary=summary, numbers=numbers, order=10,
        figures=(Figure("training_curves.plotly.json", "Training curves per size: batch FVU (log scale) and the "
                        "fraction of dead latents against training tokens. No null: these are the SAEs' own curves."),
                 Figure("density.plotly.json", "Firing density of every feature on held-out tokens, per size "
                        "(Scaling Monosemanticity's density histograms); dead features sit at the left edge.")),
        tables=(Table("quality.csv", "One row per size: held-out FVU, L0, dead and dense fractions, CE loss "
                      "recovered, ΔCE, KL of the spliced SAE, training seconds and tokens per second."),),
    ), rows


def _g(value: Any) -> str:
    return "n/a" if value is None else (f"{value:,.0f}" if isinstance(value, (int, float)) and abs(value) >= 1000
                                        else f"{value:.3g}")


def stage_seconds(logs: Path) -> list[dict[str, Any]]:
    """Wall-clock seconds of every job: from the first timestamp of its log to the log's last
    write (its mtime: a stage's last output is often a progress bar, which has no timestamp)."""
    from datetime import datetime

    out = []
    for log in sorted(logs.glob("*.log")):
        stamps = []
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                stamps.append(datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f"))
            except ValueError:
                continue
        if stamps:
            end = max(stamps[-1], datetime.fromtimestamp(log.stat().st_mtime))
            out.append({"job": log.stem, "seconds": round((end - stamps[0]).total_seconds(), 1)})
    return out


def machine() -> dict[str, str]:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": str(os.cpu_count()), "torch_threads": str(torch.get_num_threads()), "device": device}
