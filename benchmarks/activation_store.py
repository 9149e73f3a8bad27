#!/usr/bin/env python
"""Write/read throughput (MB/s) and peak RSS of the activation store, at two store sizes.

Why: the activations stage streams the residual stream of every corpus token to disk, and SAE
training reads it back for many epochs. Both paths must be fast and, above all, use memory
bounded by the shard size, not by the store size. Each size runs in a fresh subprocess, so
its peak RSS (``ru_maxrss``) is its own; a peak RSS ratio of ~1 between a 10x larger and a
smaller store means memory is flat.

Per size, in a temporary directory, on synthetic float32 activations (d = 576) generated
shard by shard (never all in RAM):
- write: ``StoreWriter.write_shard`` for every shard (np.save, fsync, rename, sha256, sum of
  squares, manifest rewrite, as the library does), then the tokens/doc_ids columns and
  ``finish`` (norms.npy and the scale); time spent generating the random rows is excluded;
- read: full passes of ``ActivationStore.minibatches(4096, seed=0)`` (shuffled, normalised)
  and of ``iter_sequential(4096)``, 3 each by default, the median reported. The files are
  still in the page cache (as right after the stage wrote them); ``--cold`` evicts them
  (posix_fadvise DONTNEED) before each pass so that the disk is measured too.
MB/s counts activation bytes only (n_tokens * d * 4). Note: ``minibatches`` holds up to
4 shards (buffer_shards) several times over, so its peak is reached only once a store has
more than two groups of 4 shards (> ~130k tokens at 16,384 rows/shard).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import load_line  # noqa: E402

D_MODEL = 576
RESULT = "RESULT "


def label(n: int) -> str:
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{suffix}"
    return str(n)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def evict(directory: Path) -> None:
    """Drop this store's (clean, fsync'd) pages from the page cache."""
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def write_store(directory: Path, n_tokens: int, shard_rows: int) -> tuple[float, float]:
    """Write a synthetic store; return (seconds in the library's writer, seconds generating)."""
    from saeatlas import activations

    header = {"fingerprint": f"benchmark-{n_tokens}-{shard_rows}", "format": activations.FORMAT,
              "context_length": 129, "positions_per_context": 128, "bos_excluded": True,
              "n_contexts": -(-n_tokens // 128), "shard_contexts": shard_rows // 128,
              "dtype": "float32", "d_model": D_MODEL}
    writer = activations.StoreWriter(directory, header)
    rng = np.random.default_rng(0)
    t_write = t_gen = 0.0
    for index, start in enumerate(range(0, n_tokens, shard_rows)):
        t0 = time.perf_counter()
        rows = rng.standard_normal((min(shard_rows, n_tokens - start), D_MODEL), dtype=np.float32)
        t1 = time.perf_counter()
        writer.write_shard(index, rows)
        t_gen += t1 - t0
        t_write += time.perf_counter() - t1
        del rows
    t0 = time.perf_counter()
    starts = range(0, n_tokens, shard_rows)
    ids = lambda s: np.arange(s, min(s + shard_rows, n_tokens), dtype=np.int64)  # noqa: E731
    files = {
        "tokens.npy": writer.write_column("tokens.npy", np.int32, n_tokens, (ids(s) % 49152 for s in starts)),
        "doc_ids.npy": writer.write_column("doc_ids.npy", np.int32, n_tokens, (ids(s) // 1000 for s in starts)),
    }
    writer.finish(D_MODEL, 10.0, files)  # also writes norms.npy: a second pass over the shards
    return t_write + time.perf_counter() - t0, t_gen


def timed_pass(batches: Iterator[Any]) -> tuple[float, int]:
    t0 = time.perf_counter()
    rows = 0
    for batch in batches:
        rows += batch.shape[0]
    return time.perf_counter() - t0, rows


def child(n_tokens: int, shard_rows: int, batch: int, tmp_root: str, cold: bool,
          read_repeats: int) -> dict[str, Any]:
    from saeatlas.activations import ActivationStore

    out: dict[str, Any] = {"tokens": n_tokens, "rss_base_mb": peak_rss_mb()}
    mb = n_tokens * D_MODEL * 4 / 1e6
    with tempfile.TemporaryDirectory(prefix="saeatlas-store-bench-", dir=tmp_root) as tmp:
        directory = Path(tmp) / "store"
        t_write, t_gen = write_store(directory, n_tokens, shard_rows)
        out.update(mb=mb, write_s=t_write, gen_s=t_gen, write_mb_s=mb / t_write,
                   rss_after_write_mb=peak_rss_mb())
        store = ActivationStore.open(directory)
        assert store.n_tokens == n_tokens
        for name, make in (("minibatches", lambda: store.minibatches(batch, seed=0)),
                           ("sequential", lambda: store.iter_sequential(batch))):
            times = []
            for _ in range(read_repeats):
                if cold:
                    evict(directory)
                sec, rows = timed_pass(make())
                expect = n_tokens - n_tokens % batch if name == "minibatches" else n_tokens
                assert rows == expect, (name, rows, expect)
                times.append(sec)
            sec = statistics.median(times)
            out.update({f"{name}_s": sec, f"{name}_mb_s": mb / sec, f"rss_after_{name}_mb": peak_rss_mb()})
    out["rss_peak_mb"] = peak_rss_mb()
    return out


def child_result(cmd: list[str], what: str) -> dict[str, Any]:
    """Run a benchmark child in a fresh process (so its peak RSS is its own) and return the JSON
    it printed on its last ``RESULT`` line; exit with its stderr if it failed."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"child for {what} failed (exit status {proc.returncode}):\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)][-1]
    return json.loads(line[len(RESULT):])


def run_child(n_tokens: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(n_tokens), "--shard-rows", str(args.shard_rows),
           "--batch", str(args.batch), "--tmp-dir", args.tmp_dir, "--read-repeats", str(args.read_repeats)]
    cmd += ["--cold"] * args.cold
    return child_result(cmd, f"{n_tokens} tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="store sizes in tokens, each in a fresh subprocess (default 100000 1000000)")
    parser.add_argument("--shard-rows", type=int, default=16_384, help="rows per shard (default 16384)")
    parser.add_argument("--batch", type=int, default=4096, help="read batch size (default 4096)")
    parser.add_argument("--tmp-dir", default=tempfile.gettempdir(),
                        help=f"where the temporary stores go (default {tempfile.gettempdir()})")
    parser.add_argument("--read-repeats", type=int, default=3,
                        help="passes per read path; the median is reported (default 3)")
    parser.add_argument("--cold", action="store_true",
                        help="evict the store from the page cache before each read pass")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        result = child(args.child, args.shard_rows, args.batch, args.tmp_dir, args.cold, args.read_repeats)
        print(RESULT + json.dumps(result))
        return

    print(load_line())
    print(f"d_model {D_MODEL}, float32, {args.shard_rows} rows/shard, read batch {args.batch} "
          f"(median of {args.read_repeats} passes), "
          f"reads {'cold (evicted)' if args.cold else 'warm (page cache)'}, tmp {args.tmp_dir}")
    print(f"{'tokens':>9} {'MB':>7} {'write MB/s':>10} {'minibatch MB/s':>14} {'seq MB/s':>9} "
          f"{'RSS base':>8} {'after write':>11} {'after mb':>8} {'peak RSS MB':>11}")
    results = []
    for n in args.tokens:
        r = run_child(n, args)
        results.append(r)
        print(f"{n:>9} {r['mb']:>7.0f} {r['write_mb_s']:>10.0f} {r['minibatches_mb_s']:>14.0f} "
              f"{r['sequential_mb_s']:>9.0f} {r['rss_base_mb']:>8.0f} {r['rss_after_write_mb']:>11.0f} "
              f"{r['rss_after_minibatches_mb']:>8.0f} {r['rss_peak_mb']:>11.0f}", flush=True)
    for r in results:
        tag = label(r["tokens"])
        print(f"write_mb_s_{tag}: {r['write_mb_s']:.0f}")
        print(f"read_minibatches_mb_s_{tag}: {r['minibatches_mb_s']:.0f}")
        print(f"read_sequential_mb_s_{tag}: {r['sequential_mb_s']:.0f}")
    if len(results) > 1:
        big, small = results[-1], results[0]
        ratio = big["rss_peak_mb"] / small["rss_peak_mb"]
        print(f"rss_ratio_{label(big['tokens'])}_over_{label(small['tokens'])}: {ratio:.2f}")


if __name__ == "__main__":
    main()
