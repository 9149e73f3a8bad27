"""What every analysis returns, and the one writer that puts it on disk.

``run(config, inputs)`` of each analysis returns an ``AnalysisOutput``: flat numeric metrics
(what DVC diffs and MLflow logs), tables (rows of plain values: CSV for people, Parquet for the
report), matplotlib figures (PNG for the report), Plotly figure dicts (interactive views) and
JSON documents (e.g. the split tree). The writer adds provenance (git commit, versions, params
hash). Keeping I/O out of the analyses keeps them pure functions of their inputs.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saeatlas.artifacts import provenance, write_bytes_atomic, write_csv_atomic, write_json_atomic, write_metrics

PROVENANCE_FILE = "provenance.json"


@dataclass
class AnalysisOutput:
    metrics: dict[str, float]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # name -> matplotlib.figure.Figure, built directly (not through pyplot: no global state)
    figures: dict[str, Any] = field(default_factory=dict)
    interactive: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> Plotly figure dict
    documents: dict[str, Any] = field(default_factory=dict)  # name -> JSON-serialisable data


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, default=_json_default, allow_nan=False) + "\n").encode()


def write_output(output: AnalysisOutput, out_dir: Path, metrics_path: Path, params_hash: str) -> None:
    """Write ``output`` under ``out_dir`` (tables/, figures/, *.plotly.json, *.json) and its flat
    metrics to ``metrics_path`` (kept outside ``out_dir`` so DVC can track it as a metric)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in output.tables.items():
        columns = list(rows[0]) if rows else []
        write_csv_atomic(out_dir / "tables" / f"{name}.csv", rows, columns)
    for name, fig in output.figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
        write_bytes_atomic(out_dir / "figures" / f"{name}.png", buf.getvalue())
    for name, fig in output.interactive.items():
        write_bytes_atomic(out_dir / "figures" / f"{name}.plotly.json", _json_bytes(fig))
    for name, doc in output.documents.items():
        write_bytes_atomic(out_dir / f"{name}.json", _json_bytes(doc))
    write_json_atomic(out_dir / PROVENANCE_FILE, provenance(params_hash))
    write_metrics(metrics_path, output.metrics)
