#!/usr/bin/env python
"""Measure this machine's fp32 matmul throughput (GFLOP/s) in torch: the practical roofline.

Why: the other benchmarks report their compute throughput as a fraction of what a plain,
large, square fp32 matmul achieves on the same CPU. That speed drifts between runs of a
shared/virtual machine (seen: ~85 to ~115 GFLOP/s on 2 cores), so a ratio is only honest when
the roofline is measured in the same process, right next to the figure it is compared with.
Those scripts therefore import :func:`measure_roofline` instead of quoting a constant.

Method: for each square size n (default 1024, 2048, 3072), one warm-up matmul, then timed
``torch.mm`` repeats (at least 3, more while the time budget for that size allows); each
repeat counts 2*n^3 FLOPs. The reported roofline is the median GFLOP/s of the best size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import psutil
import torch

DEFAULT_SIZES: tuple[int, ...] = (1024, 2048, 3072)
CUDA_SIZES: tuple[int, ...] = (4096, 8192)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(n: int, seconds: float, min_repeats: int = 3, device: str | torch.device = "cpu") -> list[float]:
    """GFLOP/s of each timed repeat of an fp32 [n, n] @ [n, n] matmul (after one warm-up)."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(n)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    out = torch.empty(n, n, device=device)
    torch.mm(a, b, out=out)  # warm-up: page in buffers, pick the BLAS kernel
    _sync(device)
    rates: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(rates) < min_repeats or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        dt = time.perf_counter() - t0
        rates.append(2.0 * n**3 / dt / 1e9)
    return rates


def busy_cores(interval: float = 1.0) -> float:
    """CPU cores kept busy by other processes while this one sleeps for ``interval`` seconds.

    The machine has 2 cores; anything else running (tests, a pipeline) competes with torch's
    threads and can slow a forward by 3x, so the scripts print this before measuring.
    """
    return psutil.cpu_percent(interval=interval) / 100 * (os.cpu_count() or 1)


def load_line() -> str:
    busy = busy_cores()
    warn = "  WARNING: other processes are using the CPU; timings will be low and noisy" if busy > 0.2 else ""
    return f"busy_cores_before_start: {busy:.2f}{warn}"


def measure_roofline(seconds: float = 3.0, sizes: tuple[int, ...] | None = None,
                     verbose: bool = False, device: str | torch.device = "cpu") -> float:
    """Median fp32 matmul GFLOP/s of the fastest size; ``seconds`` is the total time budget."""
    device = torch.device(device)
    sizes = sizes or (CUDA_SIZES if device.type == "cuda" else DEFAULT_SIZES)
    best = 0.0
    for n in sizes:
        rates = matmul_gflops(n, seconds / len(sizes), device=device)
        med = statistics.median(rates)
        if verbose:
            print(f"  n={n:5d}: median {med:7.1f} GFLOP/s  max {max(rates):7.1f}  "
                  f"min {min(rates):7.1f}  ({len(rates)} repeats)")
        best = max(best, med)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="total time budget (default 6)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="square matrix sizes (default 1024 2048 3072 on CPU, 4096 8192 on CUDA)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(load_line())
    print(f"torch {torch.__version__}, threads: {torch.get_num_threads()}")
    value = measure_roofline(args.seconds, tuple(args.sizes) if args.sizes else None, verbose=True,
                             device=args.device)
    print(f"roofline_gflops: {value:.1f}")


if __name__ == "__main__":
    main()
