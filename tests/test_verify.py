"""Damaged results are caught, named and refused, on the real smoke study: stages verify the
stores they read (sizes always, sha256 once per process), ``saeatlas verify`` checks a whole
results tree, and metrics are strict JSON."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from saeatlas.artifacts import write_json_atomic, write_metrics
from saeatlas.errors import OutputError

from conftest import copy_tree, run_cli

MODEL = "smollm2-135m-instruct"
STORE = Path(f"results/activations/{MODEL}/layer15")


@pytest.fixture
def study(smoke_study: Path, tmp_path: Path) -> Path:
    """The smoke study's params and results (no DVC or git state: only the stages run here)."""
    proj = tmp_path / "study"
    proj.mkdir()
    shutil.copy2(smoke_study / "params.yaml", proj / "params.yaml")
    copy_tree(smoke_study / "results", proj / "results", ignore=shutil.ignore_patterns("mlflow.db"))
    text = (proj / "params.yaml").read_text().replace("enabled: true", "enabled: false")
    (proj / "params.yaml").write_text(text)
    return proj


def flip_byte(path: Path, offset: int = -5) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


def test_verify_passes_a_good_tree_and_names_every_damaged_file(study: Path) -> None:
    good = run_cli(["verify", "results", "--no-progress"], study)
    # 4 SAEs: the study's two and the seed stage's two replicas (results/cache/seeds), checked alike;
    # 3 activation stores: train, eval and the held-out MLP neurons (eval_neurons)
    assert "all good" in good.stderr and "3 activation store" in good.stderr and "4 SAE" in good.stderr

    shard = study / STORE / "train" / "shard-00000.npy"
    flip_byte(shard)
    (study / f"results/saes/{MODEL}/layer15/topk/n512/metrics.json").write_text('{"fvu": NaN}\n')
    codes = study / f"results/codes/{MODEL}/layer15/topk/n256/code_values.npy"
    codes.write_bytes(codes.read_bytes()[:-4])
    bad = run_cli(["verify", "results", "--no-progress"], study, check=False)
    assert bad.returncode == 2, bad.stderr
    assert f"{shard.relative_to(study)}: checksum does not match manifest.json" in bad.stderr
    assert "n512/metrics.json: holds NaN, which is not JSON" in bad.stderr
    assert "code_values.npy" in bad.stderr and "(truncated)" in bad.stderr
    assert "3 problem(s)" in bad.stderr


def test_a_flipped_byte_in_a_train_shard_stops_train_sae_naming_the_shard(study: Path) -> None:
    """It used to train on the damaged rows: loss=nan rows in training_log.csv, exit 0."""
    flip_byte(study / STORE / "train" / "shard-00000.npy")
    before = (study / f"results/saes/{MODEL}/layer15/topk/n256/sae_weights.safetensors").read_bytes()
    proc = run_cli(["train_sae", "--layer", "15", "--arch", "topk", "--size", "256", "--no-progress"], study, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "train/shard-00000.npy: checksum does not match manifest.json" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (study / f"results/saes/{MODEL}/layer15/topk/n256/sae_weights.safetensors").read_bytes() == before


def test_a_damaged_eval_shard_stops_evaluate_naming_the_shard(study: Path) -> None:
    """A flipped byte used to give FVU 0.80 instead of 0.73; a truncated shard failed with
    'mmap length is greater than file size', naming no file."""
    shard = study / STORE / "eval" / "shard-00000.npy"
    raw = shard.read_bytes()
    flip_byte(shard, offset=len(raw) // 2)
    proc = run_cli(["evaluate", "--layer", "15", "--arch", "topk", "--size", "256", "--no-progress"], study, check=False)
    assert proc.returncode == 2 and "eval/shard-00000.npy: checksum does not match" in proc.stderr, proc.stderr
    shard.write_bytes(raw[:-1000])
    proc = run_cli(["evaluate", "--layer", "15", "--arch", "topk", "--size", "256", "--no-progress"], study, check=False)
    assert proc.returncode == 2 and "eval/shard-00000.npy" in proc.stderr and "(truncated)" in proc.stderr, \
        proc.stderr


def test_metrics_are_strict_json_and_a_non_finite_value_names_its_key(tmp_path: Path) -> None:
    """``write_json_atomic`` used to write ``NaN`` (not JSON) into metrics.json and exit 0."""
    with pytest.raises(OutputError, match=r"metrics.json: refusing .*final_fvu: must be a finite number, got nan"):
        write_metrics(tmp_path / "metrics.json", {"final_fvu": math.nan, "l0": 3.0})
    with pytest.raises(OutputError, match=r"a\.b\[1\]: must be a finite number, got inf"):
        write_json_atomic(tmp_path / "x.json", {"a": {"b": [1.0, math.inf]}})
    assert not (tmp_path / "metrics.json").exists() and not list(tmp_path.glob("*.tmp"))
    write_metrics(tmp_path / "metrics.json", {"final_fvu": 0.25})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"final_fvu": 0.25}
