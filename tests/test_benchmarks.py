"""The benchmark scripts run and print their ratios (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def bench(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_roofline_prints_gflops() -> None:
    out = bench("roofline.py", "--seconds", "0.2", "--sizes", "256")
    assert float(out.split("roofline_gflops:")[1].split()[0]) > 0


def test_lm_forward_prints_its_fraction_and_never_runs_layers_above(model_dir: Path) -> None:
    out = bench("lm_forward.py", "--model-dir", str(model_dir), "--batch", "1", "--context", "16",
                "--repeats", "1", "--roofline-seconds", "0.2", "--capture", "0,6,15")
    assert "blocks_above_L_called: 0" in out
    assert "capture_3_layers: layers [0, 6, 15]" in out and "depth ratio 1.00, count ratio 3" in out
    assert float(out.split("lm_forward_fraction_of_roofline:")[1].split()[0]) > 0


def test_activation_store_prints_throughput_and_rss_ratio() -> None:
    out = bench("activation_store.py", "--tokens", "3000", "6000", "--shard-rows", "1024", "--read-repeats", "1")
    ratio = [line for line in out.splitlines() if line.startswith("rss_ratio_")]
    assert len(ratio) == 1 and float(ratio[0].split(":")[1]) > 0
    assert "write_mb_s_" in out and "read_minibatches_mb_s_" in out


def test_sae_train_prints_speedup_against_the_peer(tmp_path: Path) -> None:
    pytest.importorskip("sparsify")
    out = bench("sae_train.py", "--store", str(tmp_path / "none"), "--sizes", "256", "--repeats", "1",
                "--warmup", "1", "--budget-steps", "2", "--roofline-seconds", "0.2")
    assert "synthetic" in out and "held-out FVU after 8192 tokens at n=256" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("speedup vs eai-sparsify: ") and float(last.split(": ")[1]) > 0


def test_features_prints_roofline_fraction_and_rss_ratio() -> None:
    out = bench("features.py", "--tokens", "3000", "6000", "--size", "256", "--roofline-seconds", "0.2")
    for key in ("encode_fraction_of_roofline_6k", "streaming_pass_fraction_of_roofline_6k", "rss_ratio_6k_over_3k"):
        (line,) = [ln for ln in out.splitlines() if ln.startswith(key + ":")]
        assert float(line.split(":")[1]) > 0


def test_cooccurrence_prints_throughput_roofline_fraction_and_rss_ratio() -> None:
    out = bench("cooccurrence.py", "--tokens", "2048", "4096", "--size", "192", "--roofline-seconds", "0.2")
    for key in ("count_tokens_per_s_4096", "pair_increments_per_s_4096", "gemm_equivalent_fraction_of_roofline_4096",
                "counts_nonzero_fraction_4096", "counts_dense_mb", "rss_ratio_4096_over_2048"):
        (line,) = [ln for ln in out.splitlines() if ln.startswith(key + ":")]
        assert float(line.split(":")[1]) > 0


def test_neurons_prints_its_memory_ratio_and_roofline_fraction() -> None:
    out = bench("neurons.py", "--tokens", "2000", "4000", "--size", "256", "--random-directions", "32",
                "--roofline-seconds", "0.2")
    assert float(out.split("anon_ratio_4k_over_2k:")[1].split()[0]) > 0
    assert float(out.split("nulls_fraction_of_roofline_4k:")[1].split()[0]) > 0
