"""The neurons analysis of one layer: every size's features, and the two nulls, against the MLP
neurons, through one streaming Pearson estimator (``moments.py``; methods: the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

import numpy as np

from saeatlas.analysis.common.output import AnalysisOutput
from saeatlas.analysis.common.published import reference_metrics
from saeatlas.analysis.common.stats import wilson_interval
from saeatlas.analysis.common.threads import limit_threads
from saeatlas.analysis.neurons.config import NeuronsConfig
from saeatlas.analysis.neurons.figures import max_corr_figure
from saeatlas.analysis.neurons.moments import BestNeurons, CrossMoments, best_neurons
from saeatlas.progress import bar

NULLS = ("random", "rotation")  # random residual directions; the neurons rotated


class Rows(Protocol):
    """Token rows read a slice at a time: a NumPy array (or memmap), or the stage's store view."""

    shape: tuple[int, ...]

    def __getitem__(self, rows: slice) -> np.ndarray: ...


class Codes(Protocol):
    """A size's sparse codes, rows aligned with the token rows (``saeatlas.codes.SparseCodes``)."""

    indices: np.ndarray  # [N, k]
    values: np.ndarray  # [N, k]
    n_latents: int


@dataclass
class NeuronsInputs:
    """One layer: every size's codes, the MLP neurons and the residual rows of the same held-out
    tokens (row i of each is token i), and which rows are ordinary (massive activations out)."""

    layer: int
    sizes: tuple[int, ...]
    codes: Mapping[int, Codes]
    neurons: Rows  # [N, m] raw MLP hidden activations
    residual: Rows  # [N, d] residual rows, normalised as the SAEs saw them
    ordinary: np.ndarray  # bool [N]

    def validate(self) -> tuple[int, int, int]:
        """Shapes agree; returns (N, m, d)."""
        sizes = tuple(int(s) for s in self.sizes)
        if not sizes or any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"sizes must be one or more strictly ascending dictionary sizes, got {sizes}")
        n, m = self.neurons.shape
        if self.residual.shape[0] != n or len(self.ordinary) != n:
            raise ValueError(f"neurons have {n} rows, residual {self.residual.shape[0]}, ordinary mask "
                             f"{len(self.ordinary)}: the rows must be the same tokens")
        for s in sizes:
            c = self.codes.get(s)
            if c is None:
                raise ValueError(f"size {s}: no codes given (have sizes {sorted(self.codes)})")
            if c.n_latents != s or c.indices.shape[0] != n:
                raise ValueError(f"size {s}: codes of {c.n_latents} latents over {c.indices.shape[0]} rows, "
                                 f"expected {s} latents over {n} rows")
        if int(np.count_nonzero(self.ordinary)) < 2:
            raise ValueError("fewer than 2 ordinary token rows: no correlation can be estimated")
        return int(n), int(m), int(self.residual.shape[1])


def chunks(n: int, rows: int, desc: str) -> Any:
    return bar(range(0, n, rows), desc=desc, unit="chunk")


def feature_moments(codes: Codes, inputs: NeuronsInputs, m: int, chunk_rows: int) -> CrossMoments:
    """Moments of one size's features and the neurons over the ordinary rows."""
    n = len(inputs.ordinary)
    acc = CrossMoments(codes.n_latents, m)
    for start in chunks(n, chunk_rows, f"neurons n={codes.n_latents}"):
        keep = np.asarray(inputs.ordinary[start:start + chunk_rows], dtype=bool)
        acc.add_sparse(np.asarray(codes.indices[start:start + chunk_rows])[keep],
                       np.asarray(codes.values[start:start + chunk_rows])[keep],
                       np.asarray(inputs.neurons[start:start + chunk_rows])[keep])
    return acc


def null_directions(config: NeuronsConfig, d: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded unit directions [d, R] in the residual stream (Gaussian columns, normalised: uniform
    on the sphere) and R ≤ m columns of a Haar rotation of neuron space [m, R]."""
    rng = np.random.default_rng([config.seed, 1])
    u = rng.standard_normal((d, config.random_directions))
    u /= np.linalg.norm(u, axis=0, keepdims=True)
    # the first R columns of a Haar rotation: QR of a Gaussian [m, R] with R's signs moved into Q
    # (Mezzadri 2007), without the cost of the whole [m, m] rotation when R < m
    q, r = np.linalg.qr(np.random.default_rng([config.seed, 2]).standard_normal((m, min(config.random_directions, m))))
    return u, q * np.sign(np.diag(r))


def null_moments(config: NeuronsConfig, inputs: NeuronsInputs, d: int, m: int) -> dict[str, CrossMoments]:
    """Both nulls in one pass over the rows: residual projections on random unit directions vs the
    neurons, and the neurons' own rotated directions vs the neurons."""
    u, q = null_directions(config, d, m)
    u32, q32 = u.astype(np.float32), q.astype(np.float32)
    acc = {"random": CrossMoments(u.shape[1], m), "rotation": CrossMoments(q.shape[1], m)}
    n, step = len(inputs.ordinary), config.chunk_rows
    for start in chunks(n, step, "neurons nulls"):
        keep = np.asarray(inputs.ordinary[start:start + step], dtype=bool)
        neurons = np.asarray(inputs.neurons[start:start + step], dtype=np.float32)[keep]
        residual = np.asarray(inputs.residual[start:start + step], dtype=np.float32)[keep]
        acc["random"].add_dense(residual @ u32, neurons)
        acc["rotation"].add_dense(neurons @ q32, neurons)
    return acc


def summary(best: BestNeurons, threshold: float) -> dict[str, float]:
    """The numbers of one set of signals (a size's features or a null's directions)."""
    alive = best.alive_max_abs
    below = int(np.count_nonzero(alive <= threshold))
    low, high = wilson_interval(below, alive.size, 0.95)
    out = {"signals": float(best.defined.size), "alive": float(alive.size),
           "dead": float(best.defined.size - alive.size)}
    if alive.size:
        out.update({
            "frac_le_threshold": below / alive.size, "frac_le_threshold_ci_low": low,
            "frac_le_threshold_ci_high": high,
            "frac_le_threshold_signed": float(np.mean(best.max_signed[best.defined] <= threshold)),
            "median_max_corr": float(np.median(alive)), "mean_max_corr": float(alive.mean()),
            "q90_max_corr": float(np.quantile(alive, 0.9)),
            "distinct_best_neurons": float(np.unique(best.top_index[best.defined, 0]).size),
        })
    return out


def top_table(best: BestNeurons) -> list[dict[str, Any]]:
    """One row per feature: max |r| and its top neurons (index, signed r); blank where dead."""
    rows = []
    t = best.top_index.shape[1]
    for f in range(best.defined.size):
        ok = bool(best.defined[f])
        row: dict[str, Any] = {"feature": f, "max_abs_corr": round(float(best.max_abs[f]), 5) if ok else None}
        for j in range(t):
            row[f"neuron_{j + 1}"] = int(best.top_index[f, j]) if ok else None
            row[f"corr_{j + 1}"] = round(float(best.top_corr[f, j]), 5) if ok else None
        rows.append(row)
    return rows


def histograms(series: Mapping[str, np.ndarray], bins: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Densities of max |r| on [0, 1] per series (a size ``n<size>`` or a null) as table rows."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = {name: np.histogram(v, bins=edges)[0] for name, v in series.items()}
    rows = [{"bin_low": round(float(edges[i]), 6), "bin_high": round(float(edges[i + 1]), 6),
             **{name: int(c[i]) for name, c in counts.items()}} for i in range(bins)]
    return edges, rows


def run(config: NeuronsConfig, inputs: NeuronsInputs, *, blas_threads: int | None = 1) -> AnalysisOutput:
    """Per size: each alive feature's max |Pearson r| with any neuron, the fraction at most
    ``threshold`` (with a Wilson interval), its median; the same for both nulls.

    Metrics: ``layer``, ``neurons``, ``tokens`` (ordinary rows used), ``dead_neurons``;
    ``n<size>.<name>`` and ``random.<name>``, ``rotation.<name>`` with names ``signals``,
    ``alive``, ``dead``, ``frac_le_threshold`` (+ ``_ci_low``/``_ci_high``),
    ``frac_le_threshold_signed`` (max signed r instead of |r|), ``median_max_corr``,
    ``mean_max_corr``, ``q90_max_corr``, ``distinct_best_neurons``; ``largest.*`` repeats the
    largest size's; ``config.threshold``; ``reference.*`` the published figures. Tables
    ``top_neurons_n<size>`` (the browser's), ``fractions``, ``max_corr_histogram``; figure
    ``neurons_max_corr``.

    ``blas_threads`` caps BLAS threads (1 by default: on shared cores threads spin-wait on each
    other); None leaves them as they are. It does not change the numbers.
    """
    n, m, d = inputs.validate()
    with limit_threads(blas_threads or None, "blas"):
        best = {s: best_neurons(feature_moments(inputs.codes[s], inputs, m, config.chunk_rows), config.top_neurons)
                for s in inputs.sizes}
        null_acc = null_moments(config, inputs, d, m)
        nulls = {name: best_neurons(acc, 1) for name, acc in null_acc.items()}
    return _output(config, inputs, best, nulls, m, null_acc["rotation"])


def _output(config: NeuronsConfig, inputs: NeuronsInputs, best: dict[int, BestNeurons],
            nulls: dict[str, BestNeurons], m: int, acc: CrossMoments) -> AnalysisOutput:
    sizes = tuple(int(s) for s in inputs.sizes)
    per = {f"n{s}": summary(best[s], config.threshold) for s in sizes} | \
          {name: summary(nulls[name], config.threshold) for name in NULLS}
    metrics: dict[str, float] = {"layer": float(inputs.layer), "neurons": float(m), "tokens": float(acc.rows),
                                 "dead_neurons": float(m - int(acc.neuron_defined().sum())),
                                 "config.threshold": config.threshold, "largest.size": float(sizes[-1])}
    for key, values in per.items():
        metrics.update({f"{key}.{name}": v for name, v in values.items()})
    metrics.update({f"largest.{name}": v for name, v in per[f"n{sizes[-1]}"].items()})
    metrics.update(reference_metrics("neurons"))
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}  # not estimated: absent
    series = {f"n{s}": best[s].alive_max_abs for s in sizes} | {name: nulls[name].alive_max_abs for name in NULLS}
    edges, hist_rows = histograms(series, config.histogram_bins)
    fractions = [{"series": key, **{k: round(v, 6) for k, v in values.items()}} for key, values in per.items()]
    return AnalysisOutput(
        metrics=metrics,
        tables={**{f"top_neurons_n{s}": top_table(best[s]) for s in sizes}, "fractions": fractions,
                "max_corr_histogram": hist_rows},
        figures={"neurons_max_corr": max_corr_figure(inputs.layer, series, edges, config.threshold, m)},
    )
