#!/usr/bin/env python
"""The neurons stage's streaming estimator: peak RSS at two token counts (it must stay flat) and
the throughput of its dense null pass against the fp32 matmul roofline.

Why: the stage correlates every feature of every size with every MLP neuron over the held-out
tokens. Its state is the [features x neurons] cross moment, which does not depend on the token
count; the rows are read a chunk at a time from memmaps. Each token count runs in a fresh
subprocess, so its ``ru_maxrss`` is its own: a ratio near 1 between the larger and the smaller
count means memory is flat. The neuron, residual and code arrays are memmaps, whose file-backed
pages count in RSS once read (page cache the kernel can drop): so the flatness is read on the
estimator's peak *anonymous* memory (RssAnon, sampled while it runs), and the whole peak RSS is
printed beside it. Token counts should both exceed ``neurons.chunk_rows`` (8192): below it a
chunk, and so the working arrays, is smaller.

Data: synthetic, at the real shapes (d = 576 residual, m = 1536 neurons, k = 32 active latents per
token): the estimator's cost does not depend on what the values mean.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from activation_store import RESULT, child_result, label, peak_rss_mb  # noqa: E402
from roofline import load_line, measure_roofline  # noqa: E402

D, M, K = 576, 1536, 32


class _PeakAnon:
    """Samples this process's anonymous resident memory (RssAnon: heap and arrays, not the
    memmapped files' page cache) every few milliseconds and keeps the peak."""

    def __init__(self, interval: float = 0.02):
        import threading

        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    @staticmethod
    def now_mb() -> float:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak = max(self.peak, self.now_mb())

    def __enter__(self) -> "_PeakAnon":
        self.peak = self.now_mb()
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now_mb())


class _Codes:
    def __init__(self, indices: np.ndarray, values: np.ndarray, n_latents: int):
        self.indices, self.values, self.n_latents = indices, values, n_latents


def _memmap(path: Path, shape: tuple[int, ...], dtype: Any, fill: Any, chunk: int = 16_384) -> np.ndarray:
    """A .npy memmap filled chunk by chunk (bounded memory while writing)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    for start in range(0, shape[0], chunk):
        stop = min(start + chunk, shape[0])
        out[start:stop] = fill(start, stop)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def child(n_tokens: int, size: int, tmp_root: str, directions: int) -> dict[str, Any]:
    from saeatlas.analysis.neurons.compute import NeuronsInputs, feature_moments, null_moments
    from saeatlas.analysis.neurons.config import NeuronsConfig
    from saeatlas.analysis.neurons.moments import best_neurons

    out: dict[str, Any] = {"rss_base_mb": peak_rss_mb(), "tokens": n_tokens}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="saeatlas-neurons-bench-", dir=tmp_root) as tmp:
        root = Path(tmp)
        neurons = _memmap(root / "neurons.npy", (n_tokens, M), np.float32,
                          lambda a, b: rng.standard_normal((b - a, M), dtype=np.float32))
        residual = _memmap(root / "residual.npy", (n_tokens, D), np.float32,
                           lambda a, b: rng.standard_normal((b - a, D), dtype=np.float32))
        indices = _memmap(root / "indices.npy", (n_tokens, K), np.int32,
                          lambda a, b: rng.integers(0, size, (b - a, K), dtype=np.int32))
        values = _memmap(root / "values.npy", (n_tokens, K), np.float32,
                         lambda a, b: rng.exponential(1.0, (b - a, K)).astype(np.float32))
        out["files_mb"] = sum(p.stat().st_size for p in root.iterdir()) / 1e6
        out["rss_after_data_mb"] = peak_rss_mb()
        config = NeuronsConfig(random_directions=directions)
        inputs = NeuronsInputs(15, (size,), {size: _Codes(indices, values, size)}, neurons, residual,
                               np.ones(n_tokens, dtype=bool))
        inputs.validate()
        with _PeakAnon() as anon:
            t0 = time.perf_counter()
            moments = feature_moments(inputs.codes[size], inputs, M, config.chunk_rows)
            best_neurons(moments, config.top_neurons)
            out["features_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for acc in null_moments(config, inputs, D, M).values():
                best_neurons(acc, config.top_neurons)
            out["nulls_s"] = time.perf_counter() - t0
        out["anon_peak_mb"] = anon.peak
        out["chunk_rows"] = config.chunk_rows
        out["random_directions"] = config.random_directions
    out["rss_peak_mb"] = peak_rss_mb()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[50_000, 200_000],
                        help="token counts, each in a fresh subprocess (default 50000 200000)")
    parser.add_argument("--size", type=int, default=18_432, help="dictionary size (default 18432)")
    parser.add_argument("--random-directions", type=int, default=1024,
                        help="directions of each null (default 1024, as params.yaml)")
    parser.add_argument("--tmp-dir", default=tempfile.gettempdir())
    parser.add_argument("--roofline-seconds", type=float, default=3.0)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(RESULT + json.dumps(child(args.child, args.size, args.tmp_dir, args.random_directions)))
        return
    print(load_line())
    results = []
    for n_tokens in args.tokens:
        cmd = [sys.executable, __file__, "--child", str(n_tokens), "--size", str(args.size), "--tmp-dir", args.tmp_dir,
               "--random-directions", str(args.random_directions)]
        r = child_result(cmd, f"{n_tokens} tokens")
        results.append(r)
        print(f"{n_tokens:>9} tokens, n = {args.size}: features {r['features_s']:.1f} s, nulls {r['nulls_s']:.1f} s; "
              f"peak anonymous memory of the estimator {r['anon_peak_mb']:.0f} MB; peak RSS {r['rss_peak_mb']:.0f} MB "
              f"(memmapped files {r['files_mb']:.0f} MB, chunks of {r['chunk_rows']} rows)", flush=True)
    roofline = measure_roofline(args.roofline_seconds)
    big = results[-1]
    r_dirs = big["random_directions"]
    # dense null pass: residual @ U [d x R], neurons @ Q [m x R], then each signal block against the
    # neurons ([R x N] @ [N x m]) twice, plus the squares (negligible)
    flops = 2.0 * big["tokens"] * (D * r_dirs + M * min(r_dirs, M) + 2 * r_dirs * M)
    print(f"roofline_gflops: {roofline:.1f}")
    print(f"nulls_gflops_{label(big['tokens'])}: {flops / big['nulls_s'] / 1e9:.1f}")
    print(f"nulls_fraction_of_roofline_{label(big['tokens'])}: {flops / big['nulls_s'] / 1e9 / roofline:.3f}")
    if len(results) > 1:
        small = results[0]
        print(f"anon_ratio_{label(big['tokens'])}_over_{label(small['tokens'])}: "
              f"{big['anon_peak_mb'] / small['anon_peak_mb']:.2f}")
        print(f"rss_ratio_{label(big['tokens'])}_over_{label(small['tokens'])}: "
              f"{big['rss_peak_mb'] / small['rss_peak_mb']:.2f}  (includes the memmaps' page cache)")


if __name__ == "__main__":
    main()
