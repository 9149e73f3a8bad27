#!/usr/bin/env python
"""Throughput and peak RSS of the lobes analysis's co-occurrence counting pass, against a dense
GEMM roofline, at two token counts.

The pass (``saeatlas.analysis.lobes.cooccurrence.count_cooccurrence``) streams the code store chunk by
chunk, builds the sparse binary block x feature matrix ``B`` of each chunk and accumulates
``C += BᵀB`` into one n x n matrix. Reported:

- ``count_tokens_per_s_<N>``: code rows per second through the whole pass (reading the memmapped
  store, building ``B``, the product, the final symmetrisation);
- ``pair_increments_per_s_<N>``: useful work per second, ``Σ_b u_b (u_b + 1) / 2`` (the distinct
  upper-triangle entries of ``C`` that block ``b`` with ``u_b`` firing features increments);
- ``gemm_equivalent_fraction_of_roofline_<N>``: the time a dense fp32 GEMM computing ``BᵀB`` over
  all blocks would take at this machine's measured matmul rate (``2·N_blocks·n²`` FLOPs /
  roofline GFLOP/s), divided by the measured time. 1.0 means the pass runs as fast as a plain GEMM
  of that size would at the roofline. It can exceed 1: the dense path uses ``syrk`` (only the
  upper triangle: half the FLOPs), and the sparse path does only ``Σ u_b²`` increments instead of
  ``N_blocks·n²``. It is below 1 by whatever the pass adds to the multiply (reading codes, building
  ``B``, densifying it, symmetrising ``C``) and by syrk running below GEMM speed on thin blocks;
- ``rss_ratio_<big>_over_<small>``: peak RSS of the larger token count over the smaller one, each
  in a fresh subprocess (``ru_maxrss`` is per process): ≈ 1 means memory does not grow with
  tokens. The n x n float32 ``C`` (1.36 GB at n = 18432) dominates both. The code store is a
  memmap (8·k bytes per token); its pages count in RSS once read but are page cache the kernel can
  drop, so RSS growth up to ``code_store_mb`` is that cache, not heap;
- ``counts_nonzero_fraction_<N>`` and ``counts_sparse_mb_<N>``: how full ``C`` is, and what it would
  take as CSR (int32 indices + float32 values + int64 row pointers) beside ``counts_dense_mb``:
  the measurement behind keeping ``C`` dense.

Codes: synthetic TopK-like (k = 32 per token, n = 18432 by default), with a skewed firing density
(log10 density ~ Normal, sd 0.7: densities spread over ~3 decades, as in trained SAEs) and
burstiness (half of each token's latents come from a 64-latent pool drawn per context, as topical
features recur within a document). Written to a temporary code store through the library's
``CodeWriter`` and read back through ``SparseCodes`` as the stage does. ``--analysis`` also runs
the whole lobes analysis (``run``) on the smaller token count with a synthetic decoder and domains,
and prints its runtime and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from activation_store import RESULT, child_result, label, peak_rss_mb  # noqa: E402
from roofline import load_line, measure_roofline  # noqa: E402

K = 32
POOL = 64  # latents in a context's topical pool
PPC = 128  # positions per context (the default study's contexts)
D_MODEL = 576


def synthetic_chunks(n_tokens: int, n_latents: int, rows: int,
                     seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(indices int32 [r, K], values float32 [r, K])`` blocks of TopK-like codes (see the module
    docstring); chunk boundaries fall on context boundaries (``rows`` a multiple of PPC)."""
    rng = np.random.default_rng(seed)
    log_density = rng.normal(0.0, 0.7, n_latents)
    cdf = np.cumsum(10.0 ** log_density)
    cdf /= cdf[-1]
    for start in range(0, n_tokens, rows):
        r = min(rows, n_tokens - start)
        contexts = -(-r // PPC)
        pools = np.searchsorted(cdf, rng.random((contexts, POOL)))  # each context's topical latents
        ctx = np.arange(r) // PPC
        topical = pools[ctx[:, None], rng.integers(0, POOL, (r, K // 2))]
        general = np.searchsorted(cdf, rng.random((r, K - K // 2)))
        idx = np.minimum(np.hstack([topical, general]), n_latents - 1).astype(np.int32)
        val = rng.lognormal(0.0, 0.5, (r, K)).astype(np.float32)
        yield idx, val


def write_codes(directory: Path, n_tokens: int, n_latents: int, decoder: bool = False) -> float:
    """A synthetic code store; returns its size in MB."""
    from saeatlas.codes import CodeWriter

    writer = CodeWriter(directory, n_tokens, K, n_latents)
    for idx, val in synthetic_chunks(n_tokens, n_latents, 64 * PPC):
        writer.append(idx, val)
    rows = np.random.default_rng(1).standard_normal((n_latents, D_MODEL)).astype(np.float32) if decoder else None
    writer.finish(decoder=rows)
    return sum(f.stat().st_size for f in directory.iterdir()) / 1e6


def count_child(n_tokens: int, n_latents: int, block_size: int, chunk_rows: int, method: str,
                tmp_root: str) -> dict[str, Any]:
    from saeatlas.analysis.lobes.cooccurrence import count_cooccurrence, iter_code_chunks
    from saeatlas.codes import SparseCodes

    out: dict[str, Any] = {"tokens": n_tokens, "rss_base_mb": peak_rss_mb()}
    with tempfile.TemporaryDirectory(prefix="saeatlas-cooc-bench-", dir=tmp_root) as tmp:
        out["code_store_mb"] = write_codes(Path(tmp) / "codes", n_tokens, n_latents)
        out["rss_after_store_mb"] = peak_rss_mb()
        store = SparseCodes.open(Path(tmp) / "codes")
        t0 = time.perf_counter()
        counts = count_cooccurrence(iter_code_chunks(store, chunk_rows), n_latents, PPC, block_size, method=method)
        out["seconds"] = time.perf_counter() - t0
        c = counts.counts
        assert c is not None
        assert np.array_equal(np.diag(c), counts.block_counts)  # the pass saw every block
        nnz = int(np.count_nonzero(c))
        out.update(n_blocks=counts.n_blocks, pair_increments=counts.pair_increments, nonzero=nnz,
                   nonzero_fraction=nnz / c.size, dense_mb=c.nbytes / 1e6,
                   sparse_mb=(nnz * 8 + (n_latents + 1) * 8) / 1e6, dense_blocks=counts.dense_blocks,
                   sparse_blocks=counts.sparse_blocks,
                   mean_block_latents=float(counts.block_counts.sum() / max(counts.n_blocks, 1)))
    out["rss_peak_mb"] = peak_rss_mb()
    return out


def analysis_child(n_tokens: int, n_latents: int, tmp_root: str) -> dict[str, Any]:
    """The whole lobes analysis at this size (default config), codes streamed from a store."""
    from saeatlas.analysis.lobes.compute import LobesInputs, run
    from saeatlas.analysis.lobes.config import LobesConfig
    from saeatlas.codes import SparseCodes

    out: dict[str, Any] = {"tokens": n_tokens, "rss_base_mb": peak_rss_mb()}
    with tempfile.TemporaryDirectory(prefix="saeatlas-lobes-bench-", dir=tmp_root) as tmp:
        write_codes(Path(tmp) / "codes", n_tokens, n_latents, decoder=True)
        store = SparseCodes.open(Path(tmp) / "codes")
        domains = (np.arange(n_tokens) // PPC % 6).astype(np.int64)  # one domain per context
        inputs = LobesInputs(store, n_latents, PPC, np.asarray(store.decoder()), domains,
                             ("wiki", "literature", "news", "dialogue", "code", "docs"))
        t0 = time.perf_counter()
        result = run(LobesConfig(), inputs)
        out["seconds"] = time.perf_counter() - t0
        out["metrics"] = {k: v for k, v in result.metrics.items() if k.startswith(("n_", "eig.", "k2.", "k256."))}
    out["rss_peak_mb"] = peak_rss_mb()
    return out


def run_child(args: argparse.Namespace, n_tokens: int, analysis: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(n_tokens), "--size", str(args.size), "--block-size",
           str(args.block_size), "--chunk-rows", str(args.chunk_rows), "--method", args.method, "--tmp-dir",
           args.tmp_dir] + (["--analysis"] if analysis else [])
    return child_result(cmd, f"{n_tokens} tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[50_000, 200_000],
                        help="token counts, each in a fresh subprocess (default 50000 200000)")
    parser.add_argument("--size", type=int, default=18_432, help="dictionary size n (default 18432)")
    parser.add_argument("--block-size", type=int, default=128, help="block size in positions (default 128)")
    parser.add_argument("--chunk-rows", type=int, default=8192, help="code rows per chunk (default 8192)")
    parser.add_argument("--method", default="auto", choices=["auto", "dense", "sparse"])
    parser.add_argument("--analysis", action="store_true",
                        help="also time the whole lobes analysis on the first token count (slow at n=18432)")
    parser.add_argument("--tmp-dir", default=tempfile.gettempdir())
    parser.add_argument("--roofline-seconds", type=float, default=3.0)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        os.environ.setdefault("SAEATLAS_PROGRESS", "0")  # no progress bars in a timed child
        if args.analysis:
            result = analysis_child(args.child, args.size, args.tmp_dir)
        else:
            result = count_child(args.child, args.size, args.block_size, args.chunk_rows, args.method, args.tmp_dir)
        print(RESULT + json.dumps(result))
        return

    print(load_line())
    print(f"n={args.size}, k={K}, block {args.block_size} of {PPC}-position contexts, chunks of {args.chunk_rows} "
          f"rows, method {args.method}; synthetic skewed, bursty TopK codes")
    results = []
    for n_tokens in args.tokens:
        r = run_child(args, n_tokens)
        results.append(r)
        print(f"{r['tokens']:>9} tokens: {r['seconds']:.2f} s, {r['n_blocks']} blocks "
              f"({r['dense_blocks']} dense, {r['sparse_blocks']} sparse), {r['mean_block_latents']:.0f} latents per "
              f"block, C {r['nonzero_fraction']:.3f} full; code store {r['code_store_mb']:.0f} MB; peak RSS "
              f"{r['rss_peak_mb']:.0f} MB (after store {r['rss_after_store_mb']:.0f})", flush=True)
    if args.analysis:
        a = run_child(args, args.tokens[0], analysis=True)
        print(f"lobes analysis at {a['tokens']} tokens: {json.dumps(a['metrics'])}")
        print(f"analysis_seconds_{label(a['tokens'])}: {a['seconds']:.1f}")
        print(f"analysis_peak_rss_mb_{label(a['tokens'])}: {a['rss_peak_mb']:.0f}")
    roofline = measure_roofline(args.roofline_seconds)
    print(f"roofline_gflops: {roofline:.1f}")
    for r in results:
        tag = label(r["tokens"])
        gemm_s = 2.0 * r["n_blocks"] * args.size ** 2 / (roofline * 1e9)
        print(f"count_tokens_per_s_{tag}: {r['tokens'] / r['seconds']:.0f}")
        print(f"pair_increments_per_s_{tag}: {r['pair_increments'] / r['seconds']:.4g}")
        print(f"gemm_equivalent_fraction_of_roofline_{tag}: {gemm_s / r['seconds']:.4g}")
        print(f"counts_nonzero_fraction_{tag}: {r['nonzero_fraction']:.4f}")
        print(f"counts_sparse_mb_{tag}: {r['sparse_mb']:.4g}")
    print(f"counts_dense_mb: {results[-1]['dense_mb']:.4g}")
    if len(results) > 1:
        big, small = results[-1], results[0]
        print(f"rss_ratio_{label(big['tokens'])}_over_{label(small['tokens'])}: "
              f"{big['rss_peak_mb'] / small['rss_peak_mb']:.2f}")


if __name__ == "__main__":
    main()
