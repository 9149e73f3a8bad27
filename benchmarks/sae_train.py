"""SAE training step throughput, beside the peer trainer (EleutherAI sparsify) and the roofline.

One step = forward, backward, Adam, decoder renormalisation (with the parallel-gradient removal),
at d=576, k=32, batch 4096, for n = 2304 and 18432, on the same activation batches in the same
process, alternating implementations so that machine noise hits both alike. The roofline ratio is
(encoder forward FLOPs = 2·B·d·n) / step time over this run's fp32 matmul GFLOP/s: the dense
encoder matmul is the one cost neither implementation can avoid.

``--architectures`` (default: topk batchtopk matryoshka) adds our other architectures beside TopK:
BatchTopK's step keeps the top k·B pre-activations of the whole batch (a [B·n] top-k instead of B
row top-ks); Matryoshka's adds the FVU of each nested prefix (1/16 .. 1/2 of n, as the study trains
it), decoding each latent group once. All are timed on the same batches; the peer has neither, so
the speedup line stays TopK's.

Then, at n=2304, all train for the same token budget on the same batches and their FVU on
held-out rows is printed; and a training run's peak RSS at two token counts shows memory is flat.

Activations: the default study's store if it exists (``--store``), else synthetic data.
Needs the bench extra: ``pip install -e '.[bench]'``. Last line: ``speedup vs eai-sparsify: <ratio>``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import load_line, measure_roofline  # noqa: E402

DEFAULT_STORE = Path("results/activations/smollm2-135m-instruct/layer15")
D, K, BATCH = 576, 32, 4096


class Batches:
    """A fixed pool of normalised activation rows, served as batches in a fixed order."""

    def __init__(self, store: Path | None, rows: int, seed: int = 0):
        if store is not None and (store / "train" / "manifest.json").is_file():
            from saeatlas.activations import ActivationStore

            st = ActivationStore.open(store / "train")
            it = st.minibatches(BATCH, seed=seed, exclude_outliers=True)
            self.x = torch.cat([next(it) for _ in range(max(1, rows // BATCH))])
            ev = ActivationStore.open(store / "eval")
            rows_ = next(ev.iter_sequential(8192, normalise=False)) * st.scale
            # the ordinary rows, as the evaluate stage's FVU: a JumpReLU code (BatchTopK, Matryoshka)
            # has no cap per token, so the few massive-activation rows would dominate the error
            self.held_out = rows_[torch.from_numpy(ev.ordinary_mask(0, rows_.shape[0]))]
            self.origin = f"store {store} (normalised by the train scale, outliers excluded)"
        else:
            g = torch.Generator().manual_seed(seed)
            basis = torch.randn(4 * D, D, generator=g) / D ** 0.5
            codes = torch.relu(torch.randn(rows + 8192, 4 * D, generator=g) - 1.5)
            data = codes @ basis
            data *= (D / data.pow(2).sum(1).mean()) ** 0.5
            self.x, self.held_out = data[:rows], data[rows:]
            self.origin = "synthetic (no store found; run the default study for real activations)"

    def batch(self, i: int) -> torch.Tensor:
        n = self.x.shape[0] // BATCH
        j = i % n
        return self.x[j * BATCH:(j + 1) * BATCH]


def ours(n: int, lr: float, architecture: str = "topk", total_steps: int = 10**9
         ) -> tuple[Callable[[torch.Tensor], float], Callable[[torch.Tensor], float]]:
    """``total_steps`` is what ``after_step`` is told (BatchTopK's threshold averages the last
    tenth of the steps, as in ``train_sae``); the timed step includes it."""
    from saeatlas.sae.model import build
    from saeatlas.sae.train import TrainConfig, make_optimizer, training_step

    torch.manual_seed(0)
    # the study's options for this architecture (Matryoshka's prefixes: 1/16 .. 1/2 of n)
    sae = build(architecture, D, n, **TrainConfig(architecture=architecture, n_latents=n, k=K).sae_options())
    opt = make_optimizer(sae, lr)
    done = [0]

    def step(x: torch.Tensor) -> float:
        out = training_step(sae, opt, x)
        done[0] += 1
        sae.after_step(out.code, done[0], total_steps)
        return float(out.fvu)

    def fvu(x: torch.Tensor) -> float:
        with torch.no_grad():
            err = x - sae(x)
            return float(err.pow(2).sum() / (x - x.mean(0)).pow(2).sum())

    return step, fvu


def peer(n: int, lr: float) -> tuple[Callable[[torch.Tensor], float], Callable[[torch.Tensor], float]]:
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    sae = SparseCoder(D, SparseCoderConfig(num_latents=n, k=K))
    opt = torch.optim.Adam(sae.parameters(), lr=lr)

    def step(x: torch.Tensor) -> float:
        out = sae(x)
        opt.zero_grad(set_to_none=True)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()
        return float(out.fvu.detach())

    def fvu(x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(sae(x).fvu)

    return step, fvu


def lr_for(n: int) -> float:
    return 2e-4 * (16384 / n) ** 0.5  # the same width rule for both (see sae/train.py)


def label(architecture: str) -> str:
    return "saeatlas" if architecture == "topk" else f"saeatlas-{architecture}"


def time_steps(data: Batches, n: int, repeats: int, architectures: list[str], warmup: int = 1) -> dict[str, float]:
    """Median step time of each implementation over ``repeats`` steps, after ``warmup`` untimed
    steps: allocations and first touch, and for BatchTopK and Matryoshka the first steps of
    training, when tokens take many latents and the batch top-k repeats its candidate search
    (several times the cost of a later step); most of a run's steps are later."""
    impls = {label(a): ours(n, lr_for(n), a)[0] for a in architectures}
    impls["eai-sparsify"] = peer(n, lr_for(n))[0]
    times: dict[str, list[float]] = {name: [] for name in impls}
    for name, step in impls.items():
        for w in range(max(1, warmup)):
            step(data.batch(w))
    for r in range(repeats):
        for name, step in impls.items():  # alternate, so noise hits both
            t0 = time.perf_counter()
            step(data.batch(max(1, warmup) + r))
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def budget_fvu(data: Batches, n: int, steps: int, architectures: list[str]) -> dict[str, float]:
    makers: dict[str, Callable[[], tuple[Callable[[torch.Tensor], float], Callable[[torch.Tensor], float]]]] = {
        label(a): (lambda a=a: ours(n, lr_for(n), a, steps)) for a in architectures}
    makers["eai-sparsify"] = lambda: peer(n, lr_for(n))
    out = {}
    for name, make in makers.items():
        step, fvu = make()
        for i in range(steps):
            step(data.batch(i))
        out[name] = fvu(data.held_out)
    return out


def rss_child(store: str, steps: int) -> None:
    """Train n=2304 from the store for ``steps`` batches of 1024; print peak RSS (MB)."""
    from saeatlas.activations import ActivationStore
    from saeatlas.sae.train import TrainConfig, train_sae

    st = ActivationStore.open(Path(store) / "train")

    class Limited:
        d_model = st.d_model

        def batches_per_epoch(self, batch_size: int, exclude_outliers: bool = False) -> int:
            return min(steps, st.batches_per_epoch(batch_size, exclude_outliers))

        def minibatches(self, batch_size: int, seed: int, epoch: int = 0, **kw: Any) -> Iterator[torch.Tensor]:
            for i, x in enumerate(st.minibatches(batch_size, seed, epoch, **kw)):
                if i >= self.batches_per_epoch(batch_size):
                    return
                yield x

    cfg = TrainConfig(n_latents=2304, k=K, batch_size=1024, checkpoint_every=10**9)
    result = train_sae(cfg, Limited(), progress=False)
    print(json.dumps({"tokens": result.summary["tokens"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2304, 18432])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before the timed ones")
    parser.add_argument("--architectures", nargs="+", default=["topk", "batchtopk", "matryoshka"],
                        help="our architectures to time beside the peer (topk is always included)")
    parser.add_argument("--budget-steps", type=int, default=100, help="steps of 4096 tokens for the FVU comparison")
    parser.add_argument("--rss-steps", type=int, nargs=2, default=[50, 400])
    parser.add_argument("--roofline-seconds", type=float, default=3.0)
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child[0], int(args.rss_child[1]))
        return

    print(load_line())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; d={D}, k={K}, batch {BATCH}")
    rows = BATCH * (args.repeats + args.warmup + 1)
    data = Batches(args.store, max(rows, BATCH * min(args.budget_steps, 64)))
    print(f"activations: {data.origin}")
    roofline = measure_roofline(args.roofline_seconds)
    print(f"roofline_gflops: {roofline:.1f}")
    speedup = float("nan")
    architectures = ["topk"] + [a for a in args.architectures if a != "topk"]
    for n in args.sizes:
        t = time_steps(data, n, args.repeats, architectures, args.warmup)
        flops = 2 * BATCH * D * n
        for name, sec in t.items():
            print(f"n={n:>6} {name:>13}: step {sec:.3f} s, {BATCH / sec:>8.0f} tokens/s, "
                  f"encoder-forward roofline fraction {flops / sec / 1e9 / roofline:.3f}")
        speedup = t["eai-sparsify"] / t["saeatlas"]
        print(f"n={n:>6} speedup: {speedup:.2f}x")
        for a in architectures[1:]:
            print(f"n={n:>6} {a} step time / topk step time: {t[label(a)] / t['saeatlas']:.2f}")
    n_fvu = min(args.sizes)
    f = budget_fvu(data, n_fvu, args.budget_steps, architectures)
    print(f"held-out FVU after {args.budget_steps * BATCH} tokens at n={n_fvu}: "
          + ", ".join(f"{name} {value:.4f}" for name, value in f.items())
          + " (batchtopk and matryoshka: encoded with their learned threshold)")
    if (args.store / "train" / "manifest.json").is_file():
        peaks = []
        for steps in args.rss_steps:
            proc = subprocess.run([sys.executable, __file__, "--rss-child", str(args.store), str(steps)],
                                  capture_output=True, text=True, check=True)
            peaks.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"training run of {peaks[-1]['tokens']} tokens: peak RSS {peaks[-1]['peak_rss_mb']:.0f} MB")
        print(f"peak RSS ratio ({peaks[1]['tokens']} / {peaks[0]['tokens']} tokens): "
              f"{peaks[1]['peak_rss_mb'] / peaks[0]['peak_rss_mb']:.2f}")
    else:
        print("peak RSS: skipped (no activation store)")
    print(f"speedup vs eai-sparsify: {speedup:.2f}")


if __name__ == "__main__":
    main()
