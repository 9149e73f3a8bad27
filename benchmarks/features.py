#!/usr/bin/env python
"""Throughput of the features stage's streaming pass against the encoder FLOP roofline, and its
peak RSS at two token counts.

The features stage makes one encode pass over the evaluation activations (read the store, encoder
matmul, top-k, append to the memmapped code store), then passes over the compact code store:
per-feature statistics, the bounded top-N and interval sample of examples, and the token
windows' activations. The encoder matmul (2·d·n FLOPs per token) is the one cost no
implementation can avoid, so the roofline fraction is ``2·N·d·n / seconds`` over this run's fp32
matmul GFLOP/s, printed for the encode pass alone and for the whole streaming pass.

Memory must not grow with the token count: each token count runs in a fresh subprocess, so its
``ru_maxrss`` is its own; a peak-RSS ratio near 1 between the larger and the smaller count means
memory is flat (the example buffers are bounded by n × (top_n + bins × per_bin)). The code store is
a memmap of 8·k bytes per token: its pages are counted in RSS once read, but they are file-backed
page cache the kernel can drop, so the part of the RSS growth up to the printed code-store size is
that cache, not heap.

Activations: synthetic Gaussian rows (d = 576) written to a temporary activation store through the
library's writer (as ``activation_store.py`` does), or a real store's evaluation split with
``--store`` (then the whole split is passed once and the RSS comparison is skipped). The SAE is a freshly initialised TopK SAE (k = 32): the
pass's cost does not depend on what the SAE learned. The example settings come from ``params.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from activation_store import D_MODEL, RESULT, child_result, label, peak_rss_mb, write_store  # noqa: E402
from roofline import load_line, measure_roofline  # noqa: E402

K = 32
REPO = Path(__file__).resolve().parents[1]


def streaming_pass(store_dir: Path, codes_dir: Path, n_latents: int, batch: int) -> dict[str, Any]:
    """Run the stage's passes (as ``stages/features.py`` does) and time each one."""
    from saeatlas import config
    from saeatlas.activations import ActivationStore
    from saeatlas.features import activation_at, encode_store, feature_stats, select_examples, windows
    from saeatlas.sae.model import build

    torch.manual_seed(0)
    fp = config.load(REPO / "params.yaml").features
    store = ActivationStore.open(store_dir)
    sae = build("topk", store.d_model, n_latents, k=K)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    codes = encode_store(sae, store, codes_dir, batch, fp.max_active, torch.device("cpu"), progress=False)
    times["encode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = feature_stats(codes)
    times["stats"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    examples = select_examples(codes, stats.max, fp, progress=False)
    times["examples"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = windows(examples["row"], int(store.manifest["positions_per_context"]), fp.window_before,
                   fp.window_after, codes.n_tokens)
    activation_at(codes, examples["feature"], rows)
    times["windows"] = time.perf_counter() - t0
    assert int(stats.count.sum()) == int((codes.values > 0).sum())  # the passes saw every token
    code_mb = sum(f.stat().st_size for f in codes_dir.iterdir()) / 1e6
    return {"tokens": store.n_tokens, "seconds": times, "examples": int(examples["row"].size),
            "alive": int((stats.count > 0).sum()), "code_store_mb": code_mb}


def child(n_tokens: int, n_latents: int, batch: int, tmp_root: str, store: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"rss_base_mb": peak_rss_mb()}
    with tempfile.TemporaryDirectory(prefix="saeatlas-features-bench-", dir=tmp_root) as tmp:
        store_dir = Path(store) if store else Path(tmp) / "store"
        if not store:
            write_store(store_dir, n_tokens, 16_384)
        out["rss_after_store_mb"] = peak_rss_mb()
        out.update(streaming_pass(store_dir, Path(tmp) / "codes", n_latents, batch))
    out["rss_peak_mb"] = peak_rss_mb()
    return out


def run_child(n_tokens: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(n_tokens), "--size", str(args.size), "--batch", str(args.batch),
           "--tmp-dir", args.tmp_dir] + (["--store", str(args.store)] if args.store else [])
    return child_result(cmd, f"{n_tokens} tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[50_000, 400_000],
                        help="synthetic store sizes, each in a fresh subprocess (default 50000 400000)")
    parser.add_argument("--size", type=int, default=18_432, help="dictionary size n (default 18432)")
    parser.add_argument("--batch", type=int, default=4096, help="encode batch (default 4096, as params.yaml)")
    parser.add_argument("--store", type=Path, default=None,
                        help="a real activation store split (e.g. results/activations/<model>/layer15/eval)")
    parser.add_argument("--tmp-dir", default=tempfile.gettempdir())
    parser.add_argument("--roofline-seconds", type=float, default=3.0)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(RESULT + json.dumps(child(args.child, args.size, args.batch, args.tmp_dir,
                                        str(args.store) if args.store else None)))
        return

    print(load_line())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; d={D_MODEL}, n={args.size}, k={K}, "
          f"encode batch {args.batch}; activations: {args.store or 'synthetic Gaussian'}")
    counts = [0] if args.store else args.tokens
    results = []
    for n_tokens in counts:
        r = run_child(n_tokens, args)
        results.append(r)
        s = r["seconds"]
        total = sum(s.values())
        print(f"{r['tokens']:>9} tokens: encode {s['encode']:.2f} s, stats {s['stats']:.2f} s, "
              f"examples {s['examples']:.2f} s, windows {s['windows']:.2f} s; {r['examples']} examples, "
              f"{r['alive']} alive; code store {r['code_store_mb']:.0f} MB; peak RSS {r['rss_peak_mb']:.0f} MB "
              f"(after store {r['rss_after_store_mb']:.0f})",
              flush=True)
    roofline = measure_roofline(args.roofline_seconds)
    print(f"roofline_gflops: {roofline:.1f}")
    big = results[-1]
    flops = 2.0 * big["tokens"] * D_MODEL * args.size
    encode, total = big["seconds"]["encode"], sum(big["seconds"].values())
    tag = label(big["tokens"])
    print(f"encode_tokens_per_s_{tag}: {big['tokens'] / encode:.0f}")
    print(f"encode_fraction_of_roofline_{tag}: {flops / encode / 1e9 / roofline:.3f}")
    print(f"streaming_pass_tokens_per_s_{tag}: {big['tokens'] / total:.0f}")
    print(f"streaming_pass_fraction_of_roofline_{tag}: {flops / total / 1e9 / roofline:.3f}")
    if len(results) > 1:
        small = results[0]
        print(f"rss_ratio_{tag}_over_{label(small['tokens'])}: {big['rss_peak_mb'] / small['rss_peak_mb']:.2f}")


if __name__ == "__main__":
    main()
