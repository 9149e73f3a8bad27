"""Feature statistics against brute force on data small enough to hold densely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from saeatlas.activations import ActivationStore
from saeatlas.codes import CodeWriter, SparseCodes
from saeatlas.config import FeaturesParams
from saeatlas.features import (activation_at, contexts_table, encode_store, feature_stats, logit_lens,
                               select_examples, windows)
from saeatlas.sae.model import build

from test_activations import D, synthetic_store

CFG = FeaturesParams(batch_size=64, max_active=8, top_n=3, quantile_bins=4, per_bin=2, window_before=3,
                     window_after=1, logit_lens_k=4, seed=0)


def random_codes(path: Path, n_tokens: int = 600, n_latents: int = 40, width: int = 5, seed: int = 0) -> np.ndarray:
    """Codes with distinct random values (so the top-N is unique); returns them dense [N, n]."""
    rng = np.random.default_rng(seed)
    writer = CodeWriter(path, n_tokens, width, n_latents)
    dense = np.zeros((n_tokens, n_latents), dtype=np.float32)
    for start in range(0, n_tokens, 128):
        rows = min(128, n_tokens - start)
        idx = np.stack([rng.choice(n_latents, width, replace=False) for _ in range(rows)]).astype(np.int32)
        val = rng.random((rows, width)).astype(np.float32) * (idx % 7 + 1)
        val[rng.random((rows, width)) < 0.2] = 0.0  # unused slots
        writer.append(idx, val)
        np.put_along_axis(dense[start:start + rows], idx, val, axis=1)
    writer.finish({"ordinary_tokens": n_tokens})
    return dense


def test_stats_and_top_examples_equal_brute_force(tmp_path: Path) -> None:
    dense = random_codes(tmp_path)
    codes = SparseCodes.open(tmp_path)
    assert np.array_equal(codes.csr().toarray(), dense)
    stats = feature_stats(codes, block=100)
    assert np.array_equal(stats.count, (dense > 0).sum(0))
    assert np.allclose(stats.mean_active, dense.sum(0) / np.maximum((dense > 0).sum(0), 1))
    assert np.array_equal(stats.max, dense.max(0))

    ex = select_examples(codes, stats.max, CFG, block=97, progress=False)  # blocks not aligned to anything
    for f in range(dense.shape[1]):
        top = (ex["feature"] == f) & (ex["kind"] == 0)
        expected = np.argsort(-dense[:, f], kind="stable")[:CFG.top_n]
        expected = expected[dense[expected, f] > 0]
        assert list(ex["row"][top][np.argsort(ex["rank"][top])]) == list(expected)
        assert np.allclose(ex["activation"][top], dense[ex["row"][top], f])


def test_interval_sample_is_uniform_within_each_interval_and_repeatable(tmp_path: Path) -> None:
    dense = random_codes(tmp_path, n_tokens=3000, n_latents=8, width=3)
    codes = SparseCodes.open(tmp_path)
    stats = feature_stats(codes)
    ex = select_examples(codes, stats.max, CFG, progress=False)
    q = ex["kind"] == 1
    for f in range(dense.shape[1]):
        for b in range(CFG.quantile_bins):
            lo, hi = b / CFG.quantile_bins * stats.max[f], (b + 1) / CFG.quantile_bins * stats.max[f]
            pop = np.flatnonzero((dense[:, f] > lo) & (dense[:, f] <= hi))
            got = ex["row"][q & (ex["feature"] == f) & (ex["bin"] == b)]
            assert len(got) == min(CFG.per_bin, len(pop)) and set(got) <= set(pop)
    again = select_examples(codes, stats.max, CFG, progress=False)
    assert np.array_equal(again["row"], ex["row"])
    other = select_examples(codes, stats.max, FeaturesParams(**{**CFG.__dict__, "seed": 1}), progress=False)
    assert not np.array_equal(other["row"][other["kind"] == 1], ex["row"][q])
    # the sample is uniform because the keys are: a chi-square check of the key function
    from saeatlas.features import _uniform_keys

    keys = _uniform_keys(np.arange(20000), np.zeros(20000, dtype=np.int64), 8, seed=3)
    hist, _ = np.histogram(keys, bins=10, range=(0, 1))
    assert ((hist - 2000) ** 2 / 2000).sum() < 30  # chi-square, 9 dof: p < 1e-3 would need > 27.9


def test_windows_stay_in_their_context_and_carry_the_feature_activation(tmp_path: Path) -> None:
    dense = random_codes(tmp_path, n_tokens=60)
    codes = SparseCodes.open(tmp_path)
    positions = 10  # 6 contexts of 10 rows
    rows = np.array([0, 9, 10, 33, 59])
    w = windows(rows, positions, before=3, after=1, n_rows=60)
    assert list(w[0]) == [-1, -1, -1, 0, 1] and list(w[1]) == [6, 7, 8, 9, -1]
    assert list(w[2]) == [-1, -1, -1, 10, 11] and list(w[4]) == [56, 57, 58, 59, -1]
    # a short last context: rows past the end are outside, like rows of another context
    assert list(windows(np.array([57]), positions, before=1, after=2, n_rows=59)[0]) == [56, 57, 58, -1]
    feats = np.array([1, 2, 3, 4, 5])
    acts = activation_at(codes, feats, w, chunk=2)
    for e in range(len(rows)):
        for j, r in enumerate(w[e]):
            assert acts[e, j] == (dense[r, feats[e]] if r >= 0 else 0.0)

    ex = {"feature": feats, "kind": np.zeros(5, dtype=int), "rank": np.zeros(5, dtype=int),
          "bin": -np.ones(5, dtype=int), "activation": acts[:, 3], "row": rows}
    tokens = np.arange(60) + 1000
    table = contexts_table(ex, w, acts, tokens, np.arange(60) // 5, positions).to_pylist()
    assert table[1]["token_ids"] == [1006, 1007, 1008, 1009] and table[1]["centre"] == 3
    assert table[2]["token_ids"] == [1010, 1011] and table[2]["centre"] == 0
    assert table[3]["context"] == 3 and table[3]["position"] == 4  # row 33: context 3, position 3 + BOS
    assert table[3]["token_activations"][table[3]["centre"]] == pytest.approx(float(acts[3, 3]))


def test_encode_pass_matches_the_sae_and_zeroes_massive_rows(tmp_path: Path) -> None:
    synthetic_store(tmp_path / "store", [50, 70, 30], outlier_factor=10.0, massive=(5, 120))
    store = ActivationStore.open(tmp_path / "store")
    torch.manual_seed(0)
    sae = build("topk", D, 24, k=3)
    codes = encode_store(sae, store, tmp_path / "codes", batch_size=32, max_active=8, device=torch.device("cpu"),
                         progress=False)
    x = torch.from_numpy(np.concatenate([store.shard(i) for i in range(store.n_shards)]).astype(np.float32))
    expected = sae.encode(x).dense(24).detach().numpy()
    ordinary = store.ordinary_mask()
    assert not ordinary[5] and not ordinary[120] and ordinary.sum() == 148
    got = codes.csr().toarray()
    assert np.allclose(got[ordinary], expected[ordinary], atol=1e-6)
    assert not got[~ordinary].any()
    assert codes.manifest["ordinary_tokens"] == 148


def test_relu_codes_wider_than_the_store_keep_the_strongest(tmp_path: Path) -> None:
    writer = CodeWriter(tmp_path, 2, width=2, n_latents=10)
    writer.append(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32), np.array([[0.1, 0.9, 0.5], [0.0, 0.2, 0.0]]))
    writer.finish()
    codes = SparseCodes.open(tmp_path)
    assert codes.manifest["truncated_activations"] == 1
    dense = codes.csr().toarray()
    assert dense[0, 2] == pytest.approx(0.9) and dense[0, 3] == pytest.approx(0.5) and dense[0, 1] == 0
    assert dense[1, 5] == pytest.approx(0.2)


def test_logit_lens_equals_dense_ranking() -> None:
    g = torch.Generator().manual_seed(0)
    dec, unembed, gain = torch.randn(30, 8, generator=g), torch.randn(50, 8, generator=g), torch.rand(8, generator=g)
    lens = logit_lens(dec, unembed, gain, k=4, chunk=7)
    effect = (dec * gain) @ unembed.t()
    assert np.array_equal(lens["top_ids"], effect.topk(4, dim=1).indices.numpy())
    assert np.array_equal(lens["bottom_ids"], (-effect).topk(4, dim=1).indices.numpy())
    assert np.allclose(lens["bottom_values"], -(-effect).topk(4, dim=1).values.numpy(), atol=1e-5)
