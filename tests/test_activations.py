"""Activation store: checksummed shards, exact normalisation, bounded shuffles, crash-safe resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from saeatlas.activations import ActivationStore, StoreWriter, FORMAT, shard_name
from saeatlas.errors import StoreError

from conftest import copy_tree, run_cli

D = 8


def synthetic_store(path: Path, shard_rows: list[int], seed: int = 0, fingerprint: str = "f",
                    outlier_factor: float = 1e9, massive: tuple[int, ...] = ()) -> np.ndarray:
    """Rows of Gaussian noise whose first coordinate is the row id; rows in ``massive`` x 1000."""
    rng = np.random.default_rng(seed)
    header = {"format": FORMAT, "fingerprint": fingerprint, "d_model": D, "dtype": "float32"}
    writer = StoreWriter(path, header)
    rows = []
    for i, n in enumerate(shard_rows):
        block = (rng.standard_normal((n, D)) * 3 + np.arange(sum(shard_rows[:i]), sum(shard_rows[:i + 1]))[:, None]).astype(np.float32)
        block[:, 0] = np.arange(sum(shard_rows[:i]), sum(shard_rows[:i + 1]))  # row id, to track rows
        for r in massive:
            if sum(shard_rows[:i]) <= r < sum(shard_rows[:i + 1]):
                block[r - sum(shard_rows[:i]), 1:] *= 1000
        writer.write_shard(i, block)
        rows.append(block)
    n = sum(shard_rows)
    ids = np.arange(n, dtype=np.int32)
    files = {"tokens.npy": writer.write_column("tokens.npy", np.int32, n, iter([ids[:7], ids[7:]])),
             "doc_ids.npy": writer.write_column("doc_ids.npy", np.int32, n, iter([ids // 3]))}
    writer.finish(D, outlier_factor, files)
    return np.concatenate(rows)


def test_manifest_lists_checksummed_shards_and_exact_scale(tmp_path: Path) -> None:
    data = synthetic_store(tmp_path / "s", [50, 50, 23])
    store = ActivationStore.open(tmp_path / "s", verify=True)
    assert store.n_tokens == 123 and store.n_shards == 3 and store.d_model == D
    assert [s["rows"] for s in store.manifest["shards"]] == [50, 50, 23]
    mean_sq = float(np.mean(np.sum(data.astype(np.float64) ** 2, axis=1)))
    assert store.manifest["normalisation"]["mean_sq_norm"] == pytest.approx(mean_sq, rel=1e-6)  # from float32 norms
    normed = np.concatenate([b.numpy() for b in store.iter_sequential(40)])
    np.testing.assert_allclose(normed[:, 0] / store.scale, data[:, 0], rtol=1e-6)  # stored order kept
    assert np.mean(np.sum(normed.astype(np.float64) ** 2, axis=1)) == pytest.approx(D, rel=1e-5)
    np.testing.assert_array_equal(store.tokens(), np.arange(123))


def test_massive_activations_are_flagged_and_do_not_set_the_scale(tmp_path: Path) -> None:
    massive = (3, 50, 99)
    data = synthetic_store(tmp_path / "s", [40, 40, 40], outlier_factor=10, massive=massive)
    store = ActivationStore.open(tmp_path / "s", verify=True)
    norm = store.manifest["normalisation"]
    mask = store.ordinary_mask()
    assert norm["outlier_rows"] == 3 and set(np.flatnonzero(~mask)) == set(massive)
    assert norm["outlier_share_of_sum_sq_norm"] > 0.99
    np.testing.assert_allclose(store.norms(), np.linalg.norm(data, axis=1), rtol=1e-6)
    ordinary = data[mask].astype(np.float64) * store.scale
    assert np.mean(np.sum(ordinary ** 2, axis=1)) == pytest.approx(D, rel=1e-6)
    # Without the guard the outliers would set the scale and shrink ordinary rows ~1000-fold.
    assert norm["mean_sq_norm_all_rows"] > 1000 * norm["mean_sq_norm"]
    kept = np.concatenate([b[:, 0].numpy() / store.scale for b in
                           store.minibatches(1, seed=0, exclude_outliers=True)]).round().astype(int)
    assert sorted(kept) == sorted(set(range(120)) - set(massive))


def test_minibatches_shuffle_every_row_once_per_epoch_and_repeat_by_seed(tmp_path: Path) -> None:
    synthetic_store(tmp_path / "s", [30] * 7)
    store = ActivationStore.open(tmp_path / "s")

    def row_ids(seed, epoch):
        return np.concatenate([b[:, 0].numpy() / store.scale for b in
                               store.minibatches(16, seed=seed, epoch=epoch, buffer_shards=2)]).round().astype(int)

    first = row_ids(0, 0)
    assert len(first) == (210 // 16) * 16 and len(set(first)) == len(first)  # no repeats, < batch dropped
    assert not np.array_equal(first, np.sort(first))  # shuffled
    np.testing.assert_array_equal(first, row_ids(0, 0))  # deterministic
    assert not np.array_equal(first, row_ids(0, 1)) and not np.array_equal(first, row_ids(1, 0))


def test_take_reads_any_rows_across_shards(tmp_path: Path) -> None:
    synthetic_store(tmp_path / "s", [30] * 7)
    store = ActivationStore.open(tmp_path / "s")
    rows = np.array([209, 0, 31, 29, 30, 30, 150])
    raw = store.take(rows, normalise=False)
    np.testing.assert_array_equal(raw[:, 0].round().astype(int), rows)
    np.testing.assert_allclose(store.take(rows), raw * store.scale)
    assert store.take(np.array([], dtype=int)).shape == (0, store.d_model)
    with pytest.raises(IndexError, match="rows must be in"):
        store.take(np.array([210]))


def test_corruption_and_incompleteness_are_detected(tmp_path: Path) -> None:
    synthetic_store(tmp_path / "s", [20, 20])
    shard = tmp_path / "s" / shard_name(1)
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="shard-00001.npy: checksum does not match"):
        ActivationStore.open(tmp_path / "s", verify=True)
    shard.write_bytes(bytes(raw[:-7]))  # truncated: named with its sizes, whether or not checksums run
    with pytest.raises(StoreError, match=r"shard-00001.npy: \d+ bytes, .* needs \d+ \(truncated\)"):
        ActivationStore.open(tmp_path / "s", verify=False)
    shard.write_bytes(bytes(raw) + b"\0")
    with pytest.raises(StoreError, match=r"shard-00001.npy: .*\(trailing data\)"):
        ActivationStore.open(tmp_path / "s", verify=False)
    shard.unlink()
    with pytest.raises(StoreError, match="listed in the manifest but missing"):
        ActivationStore.open(tmp_path / "s")


def test_checksums_run_by_default_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain open (what every stage does) verifies the checksums; a second open of the same,
    unchanged store in the same process does not hash it again."""
    import saeatlas.artifacts as artifacts

    synthetic_store(tmp_path / "s", [20, 20])
    shard = tmp_path / "s" / shard_name(0)
    raw = bytearray(shard.read_bytes())
    raw[-3] ^= 0x10
    shard.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="shard-00000.npy: checksum does not match"):
        ActivationStore.open(tmp_path / "s")
    raw[-3] ^= 0x10
    shard.write_bytes(bytes(raw))
    hashed: list[str] = []
    real = artifacts.sha256_file
    monkeypatch.setattr(artifacts, "sha256_file", lambda p, *a: hashed.append(Path(p).name) or real(p, *a))
    ActivationStore.open(tmp_path / "s")
    first = len(hashed)
    ActivationStore.open(tmp_path / "s")
    assert first > 5 and len(hashed) == first + 1  # the second open hashes only the manifest
    writer = StoreWriter(tmp_path / "p", {"format": FORMAT, "fingerprint": "x"})  # never finished
    writer.write_shard(0, np.ones((3, D), np.float32))
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore.open(tmp_path / "p")
    with pytest.raises(StoreError, match="not an activation store"):
        ActivationStore.open(tmp_path / "nothing")


def test_writer_resumes_only_with_the_same_fingerprint(tmp_path: Path) -> None:
    header = {"format": FORMAT, "fingerprint": "a"}
    w = StoreWriter(tmp_path / "s", header)
    w.write_shard(0, np.ones((3, D), np.float32))
    (tmp_path / "s" / "shard-00001.npy.tmp").write_bytes(b"half a shard")  # a killed write
    w2 = StoreWriter(tmp_path / "s", header)
    assert w2.complete_shards == 1
    assert not (tmp_path / "s" / "shard-00001.npy.tmp").exists()
    w3 = StoreWriter(tmp_path / "s", {**header, "fingerprint": "b"})
    assert w3.complete_shards == 0 and not (tmp_path / "s" / shard_name(0)).exists()


def test_float16_overflow_is_refused(tmp_path: Path) -> None:
    w = StoreWriter(tmp_path / "s", {"format": FORMAT, "fingerprint": "a"})
    with pytest.raises(StoreError, match="not finite"):
        w.write_shard(0, np.full((2, D), np.inf, np.float16))


class _FakeLM:
    """Stands in for the LM in ``write_stores``: each read-out a fixed function of the token ids,
    so the bytes any capture should hold are known; counts the forwards."""

    d_model, neurons = 4, 6

    def __init__(self) -> None:
        self.forwards = 0

    def n_neurons(self, layer: int) -> int:
        return self.neurons

    def capture(self, ids, layers, neuron_layers=()):
        import torch

        self.forwards += 1
        x = ids.to(torch.float32)[..., None]
        out = {("resid", L): x * (L + 1) + torch.arange(self.d_model) for L in layers}
        out.update({("neurons", L): -x * (L + 1) + torch.arange(self.neurons) for L in neuron_layers})
        return out


def _fake_split(n_ctx: int = 10, ctx_len: int = 5):
    from saeatlas.corpus import CorpusSplit

    contexts = (np.arange(n_ctx * ctx_len, dtype=np.int32).reshape(n_ctx, ctx_len) % 97) + 1
    return CorpusSplit(contexts=contexts, doc_ids=np.repeat(np.arange(n_ctx, dtype=np.int32), ctx_len).reshape(n_ctx, ctx_len),
                       manifest={"bos_token_id": None})


def _captures(root: Path, layers=(3, 9), neurons=(9,)):
    from saeatlas.activations import Capture

    keys = [("resid", L) for L in layers] + [("neurons", L) for L in neurons]
    return [Capture(k, root / f"{k[0]}{k[1]}", {"fingerprint": f"{k[0]}{k[1]}"}) for k in keys]


def test_one_pass_writes_every_layer_and_resumes_stores_at_different_shards(tmp_path: Path) -> None:
    """Several stores from one forward per batch; a run killed when the stores had written
    different numbers of shards resumes from the first missing shard, rewrites nothing a store
    holds, and ends byte-identical to an uninterrupted run."""
    from saeatlas.activations import write_stores
    from saeatlas.config import ActivationParams

    cfg = ActivationParams(batch_contexts=2, shard_contexts=4, dtype="float32", outlier_factor=10.0, neurons=True)
    lm = _FakeLM()
    whole = write_stores(lm, _fake_split(), _captures(tmp_path / "whole"), cfg, desc="whole")
    assert lm.forwards == 5  # 10 contexts in batches of 2: one forward serves all three stores
    resid9 = ActivationStore.open(tmp_path / "whole" / "resid9")
    rows = np.asarray(resid9.take(np.arange(resid9.n_tokens), normalise=False))
    np.testing.assert_array_equal(rows, np.asarray(resid9.tokens())[:, None] * 10.0 + np.arange(4))
    assert ActivationStore.open(tmp_path / "whole" / "neurons9").d_model == 6
    assert {key[0] for key in whole} == {"resid", "neurons"}

    # "killed": resid3 has 2 of its 3 shards, resid9 and neurons9 1 each
    partial = tmp_path / "killed"
    for capture, shards in zip(_captures(partial), (2, 1, 1)):
        writer = StoreWriter(capture.directory, {**capture.header, "format": FORMAT})
        source = ActivationStore.open(tmp_path / "whole" / capture.directory.name)
        for i in range(shards):
            writer.write_shard(i, np.asarray(source.shard(i)))
    ahead = (partial / "resid3" / shard_name(1)).stat().st_ino
    lm = _FakeLM()
    write_stores(lm, _fake_split(), _captures(partial), cfg, desc="resumed")
    assert lm.forwards == 3  # shards 1 and 2 only (2 + 1 batches)
    assert (partial / "resid3" / shard_name(1)).stat().st_ino == ahead  # a shard a store held is not rewritten
    for name in ("resid3", "resid9", "neurons9"):
        for file in (tmp_path / "whole" / name).iterdir():
            assert (partial / name / file.name).read_bytes() == file.read_bytes(), (name, file.name)


# --------------------------------------------------------------------------------------
# The real stage, killed and resumed
# --------------------------------------------------------------------------------------


def small_shards(proj: Path) -> Path:
    text = (proj / "params.yaml").read_text()
    text = text.replace("shard_contexts: 48", "shard_contexts: 8").replace("batch_contexts: 16", "batch_contexts: 8")
    (proj / "params.yaml").write_text(text)
    return proj


def clone(prepared: Path, dest: Path) -> Path:
    return small_shards(copy_tree(prepared, dest))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_killed_activation_stage_resumes_to_identical_bytes(prepared_project: Path, tmp_path: Path) -> None:
    store_rel = Path("results/activations/smollm2-135m-instruct/layer15")
    args = ["activations", "--params", "params.yaml"]

    whole = clone(prepared_project, tmp_path / "whole")
    run_cli(args, whole)

    killed = clone(prepared_project, tmp_path / "killed")
    partial_manifest = killed / "results/activations/smollm2-135m-instruct.partial/layer15/train/manifest.json"
    proc = subprocess.Popen([sys.executable, "-m", "saeatlas", *args], cwd=killed,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if partial_manifest.is_file() and len(json.loads(partial_manifest.read_text())["shards"]) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail("the stage finished before it could be killed; make the shards smaller")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    shards_before = len(json.loads(partial_manifest.read_text())["shards"])
    assert 3 <= shards_before < 24
    assert not (killed / store_rel).exists()  # nothing published from a killed run

    resumed = run_cli(args, killed)
    assert f"resuming after {shards_before} complete shard(s)" in resumed.stderr
    assert tree_bytes(killed / store_rel) == tree_bytes(whole / store_rel)
    assert not (killed / "results/activations/smollm2-135m-instruct.partial").exists()
    store = ActivationStore.open(killed / store_rel / "train", verify=True)
    assert store.n_shards == 24


def test_stores_of_layers_no_longer_listed_are_removed_at_publish(tmp_path: Path) -> None:
    """DVC tracks the whole results/activations/<model> folder: a layer dropped from
    model.layers (or left by another parameter set) must not stay in it as if this run made it."""
    from saeatlas.stages.activations import _drop_unlisted

    for name in ("layer3", "layer15", "layer27"):
        (tmp_path / name / "eval").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("kept")
    _drop_unlisted(tmp_path, [15])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer15", "notes.txt"]
