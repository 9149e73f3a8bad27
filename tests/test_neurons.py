"""Neurons analysis on planted truth: features planted on one neuron are found with r near 1 and
the right neuron, independent features read r near the noise floor; the chunked estimator equals
a dense np.corrcoef for any chunking, and its state does not grow with tokens; the rotation null
on isotropic neurons reads the rotation's own entries (few high correlations); the stage reads
its stores row for row (massive rows out) and fails naming ``activations.neurons`` without the
neuron store; the output goes through the shared writer into a section."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from saeatlas.analysis.common.output import write_output
from saeatlas.analysis.common.stats import wilson_interval
from saeatlas.analysis.neurons.compute import NeuronsInputs, null_directions, run
from saeatlas.analysis.neurons.config import NeuronsConfig
from saeatlas.analysis.neurons.moments import CrossMoments, best_neurons
from saeatlas.analysis.neurons.section import section

from conftest import REPO


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


@dataclass
class Codes:
    """Fixed-width sparse codes, as ``SparseCodes`` holds them."""

    indices: np.ndarray
    values: np.ndarray
    n_latents: int

    @property
    def n_tokens(self) -> int:
        return self.indices.shape[0]


def sparse_codes(acts: np.ndarray, k: int) -> Codes:
    """The k largest non-negative activations of each row (zero-padded slots where fewer fire)."""
    order = np.argsort(-acts, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(acts, order, axis=1)
    values = np.where(values > 0, values, 0).astype(np.float32)
    return Codes(order.astype(np.int32), values, acts.shape[1])


def moments_of(codes: Codes, neurons: np.ndarray, chunk: int) -> CrossMoments:
    acc = CrossMoments(codes.n_latents, neurons.shape[1])
    for s in range(0, len(neurons), chunk):
        acc.add_sparse(codes.indices[s:s + chunk], codes.values[s:s + chunk], neurons[s:s + chunk])
    return acc


def dense_cross_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.corrcoef(a.T, b.T)[:a.shape[1], a.shape[1]:]


# ------------------------------------------------------------------------------------------
# The estimator
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset, expected", [(0.0, 0.5 / math.sqrt(0.5 - 1 / (2 * math.pi))), (4.0, 1.0)])
def test_planted_neuron_features_find_their_neuron(offset: float, expected: float) -> None:
    """f_j = relu(n_p(j)) + noise: argmax is p(j) and max |r| is corr(relu(n), n) (0.856 for a
    centred Gaussian neuron; ≈ 1 for one far above 0, where relu is the identity)."""
    rng = np.random.default_rng(0)
    t, m, f = 6000, 40, 12
    neurons = (rng.standard_normal((t, m)) + offset).astype(np.float32)
    planted = rng.permutation(m)[:f]
    acts = np.maximum(neurons[:, planted], 0) + 0.01 * np.abs(rng.standard_normal((t, f)))
    best = best_neurons(moments_of(sparse_codes(acts, f), neurons, 1000), 3)
    np.testing.assert_array_equal(best.top_index[:, 0], planted)
    np.testing.assert_allclose(best.max_abs, expected, atol=0.02)
    assert (best.top_corr[:, 1:] ** 2 < 0.01).all()  # the other neurons are independent


def test_independent_features_read_the_noise_floor() -> None:
    rng = np.random.default_rng(1)
    t, m, f = 6000, 40, 30
    neurons = rng.standard_normal((t, m)).astype(np.float32)
    acts = np.maximum(rng.standard_normal((t, f)) - 1.0, 0)  # sparse, independent of the neurons
    acts[:, -2:] = 0  # two dead features
    best = best_neurons(moments_of(sparse_codes(acts, 8), neurons, 777), 2)
    assert best.defined.sum() == f - 2 and np.isnan(best.max_abs[-2:]).all() and (best.top_index[-2:] == -1).all()
    floor = math.sqrt(2 * math.log(2 * m) / t)  # max of 2m |N(0, 1/t)|
    assert np.nanmax(best.max_abs) < 2 * floor < 0.3


@pytest.mark.parametrize("chunk", [1, 7, 64, 500, 10_000])
def test_chunked_estimator_equals_dense_corrcoef(chunk: int) -> None:
    rng = np.random.default_rng(2)
    t, m, f = 500, 7, 10
    mix = rng.standard_normal((m, f))
    neurons = (rng.standard_normal((t, m)) * rng.uniform(0.5, 3, m) + rng.uniform(-5, 5, m)).astype(np.float32)
    acts = np.maximum(neurons @ mix + rng.standard_normal((t, f)) - 1, 0)
    codes = sparse_codes(acts, 3)
    dense = np.zeros_like(acts)
    np.put_along_axis(dense, codes.indices.astype(np.int64), codes.values, axis=1)
    dense[:, np.all(dense == 0, axis=0)] = np.nan  # a feature the top-3 never kept has no r
    want = dense_cross_corr(dense.astype(np.float64), neurons.astype(np.float64))
    acc = moments_of(codes, neurons, chunk)
    got = acc.correlations(0, f)
    ok = acc.signal_defined()
    np.testing.assert_array_equal(ok, ~np.isnan(want).all(axis=1))
    np.testing.assert_allclose(got[ok], want[ok], atol=2e-5)
    # the dense path (the nulls') agrees too, on signals with large means
    signals = neurons @ mix.astype(np.float32) + 100.0
    dense_acc = CrossMoments(f, m)
    for s in range(0, t, chunk):
        dense_acc.add_dense(signals[s:s + chunk], neurons[s:s + chunk])
    np.testing.assert_allclose(dense_acc.correlations(0, f), dense_cross_corr(signals.astype(np.float64),
                                                                              neurons.astype(np.float64)), atol=2e-5)


def test_state_size_does_not_depend_on_the_number_of_tokens() -> None:
    """O(features x neurons) memory: the state after 1 chunk and after 50 is the same size."""
    rng = np.random.default_rng(3)
    f, m, k, rows = 300, 20, 4, 256
    acc = CrossMoments(f, m)
    sizes = []
    for _ in range(50):
        acc.add_sparse(rng.integers(0, f, (rows, k)), rng.random((rows, k), dtype=np.float32),
                       rng.standard_normal((rows, m)))
        sizes.append(acc.nbytes)
    assert len(set(sizes)) == 1 and sizes[0] == 8 * (f * m + 4 * f + 3 * m)
    assert acc.rows == 50 * rows


def test_rotation_null_on_isotropic_neurons_reads_the_rotation() -> None:
    """With i.i.d. neurons, r(n·q, n_j) = q_j: the null's max |r| is max_j |q_ij|, about
    sqrt(2 ln(2m) / m) (0.22 at m = 256), so few rotated directions pass 0.3."""
    rng = np.random.default_rng(4)
    t, m, d = 8000, 256, 16
    neurons = rng.standard_normal((t, m)).astype(np.float32)
    residual = rng.standard_normal((t, d)).astype(np.float32)
    config = NeuronsConfig(random_directions=64, chunk_rows=3000)
    codes = sparse_codes(np.maximum(neurons[:, :4], 0), 4)  # four features = four neurons
    out = run(config, NeuronsInputs(15, (4,), {4: codes}, neurons, residual, np.ones(t, dtype=bool)))
    met = out.metrics
    assert met["rotation.frac_le_threshold"] >= 0.95 and met["rotation.alive"] == 64
    _, q = null_directions(config, d, m)
    assert met["rotation.median_max_corr"] == pytest.approx(np.median(np.abs(q).max(axis=0)), abs=0.03)
    assert met["random.frac_le_threshold"] == 1.0 and met["random.median_max_corr"] < 0.1  # residual ⟂ neurons
    assert met["n4.frac_le_threshold"] == 0.0 and met["n4.median_max_corr"] > 0.8  # features are neurons here
    assert met["largest.frac_le_threshold"] == met["n4.frac_le_threshold"]


def test_wilson_interval_on_hand_numbers() -> None:
    low, high = wilson_interval(82, 100, 0.95)  # statsmodels' proportion_confint(82, 100, method="wilson")
    assert (round(low, 4), round(high, 4)) == (0.7333, 0.883)
    assert wilson_interval(0, 10, 0.95)[0] == pytest.approx(0.0, abs=1e-12)
    assert all(math.isnan(v) for v in wilson_interval(0, 0, 0.95))


# ------------------------------------------------------------------------------------------
# Output, section, stage
# ------------------------------------------------------------------------------------------


def small_inputs(t: int = 3000, seed: int = 5) -> NeuronsInputs:
    rng = np.random.default_rng(seed)
    m, d = 48, 12
    residual = rng.standard_normal((t, d)).astype(np.float32)
    neurons = (np.maximum(residual @ rng.standard_normal((d, m)), 0) + 0.1 * rng.standard_normal((t, m)))
    acts8 = np.maximum(rng.standard_normal((t, 8)) - 1, 0)
    acts8[:, 0] = np.maximum(neurons[:, 5], 0)  # one neuron-aligned feature
    acts16 = np.maximum(rng.standard_normal((t, 16)) - 1, 0)
    acts16[:, 3] = 0  # dead
    ordinary = np.ones(t, dtype=bool)
    ordinary[::50] = False
    return NeuronsInputs(15, (8, 16), {8: sparse_codes(acts8, 4), 16: sparse_codes(acts16, 4)},
                         neurons.astype(np.float32), residual, ordinary)


def test_output_goes_through_the_shared_writer_into_the_section(tmp_path: Path) -> None:
    inputs = small_inputs()
    out = run(NeuronsConfig(random_directions=32, chunk_rows=700, top_neurons=2), inputs)
    met = out.metrics
    assert met["tokens"] == inputs.ordinary.sum() and met["neurons"] == 48
    assert met["n16.dead"] == 1 and met["n16.alive"] == 15 and met["n8.dead"] == 0
    assert met["reference.templeton2024_frac_max_neuron_corr_le_0_3"] == 0.82
    assert met["n8.frac_le_threshold_ci_low"] <= met["n8.frac_le_threshold"] <= met["n8.frac_le_threshold_ci_high"]
    top8 = out.tables["top_neurons_n8"]
    assert top8[0]["neuron_1"] == 5 and top8[0]["corr_1"] > 0.9 and set(top8[0]) == {
        "feature", "max_abs_corr", "neuron_1", "corr_1", "neuron_2", "corr_2"}
    assert out.tables["top_neurons_n16"][3]["neuron_1"] is None  # dead: blank
    write_output(out, tmp_path / "out", tmp_path / "metrics.json", "hash")
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["n8.alive"] == 8
    sec = section(written, tmp_path / "out")
    assert sec.missing_files(tmp_path / "out") == []
    assert "≈ 0.82 (Templeton et al. 2024" in sec.summary and "less neuron-aligned than random" in sec.summary
    assert f"{written['n16.frac_le_threshold']:.1%}" in sec.summary and "random" in sec.summary
    assert len(sec.numbers) == 2 and sec.numbers[0].published and sec.numbers[0].null is not None


def test_bad_inputs_are_refused() -> None:
    inputs = small_inputs(t=200)
    with pytest.raises(ValueError, match="same tokens"):
        run(NeuronsConfig(), replace(inputs, ordinary=inputs.ordinary[:-1]))
    with pytest.raises(ValueError, match="size 16: no codes"):
        run(NeuronsConfig(), replace(inputs, codes={8: inputs.codes[8]}))
    with pytest.raises(ValueError, match="neurons.threshold"):
        NeuronsConfig(threshold=1.5)


def write_store(directory: Path, rows: np.ndarray, outlier_factor: float = 10.0) -> None:
    import shutil

    from saeatlas.activations import FORMAT, StoreWriter

    shutil.rmtree(directory, ignore_errors=True)
    writer = StoreWriter(directory, {"format": FORMAT, "fingerprint": "t", "d_model": rows.shape[1],
                                     "dtype": "float32"})
    half = len(rows) // 2
    writer.write_shard(0, rows[:half])
    writer.write_shard(1, rows[half:])
    writer.finish(rows.shape[1], outlier_factor, {})


def smoke_params(**activations: object):
    from saeatlas.config import load

    params = load(REPO / "params/smoke.yaml")
    return replace(params, activations=replace(params.activations, **activations)) if activations else params


def test_stage_reads_the_stores_row_for_row_without_massive_rows(tmp_path: Path, monkeypatch) -> None:
    from saeatlas.adapters import store_dir
    from saeatlas.analysis.neurons.stage import inputs as stage_inputs

    monkeypatch.chdir(tmp_path)
    params = smoke_params()
    rng = np.random.default_rng(6)
    t = 400
    residual = rng.standard_normal((t, 6)).astype(np.float32)
    residual[17] *= 1000  # a massive activation
    neurons = rng.standard_normal((t, 9)).astype(np.float32) * 7
    write_store(store_dir(params, 15, "eval"), residual)
    write_store(store_dir(params, 15, "eval_neurons"), neurons)
    codes = {n: sparse_codes(np.maximum(rng.standard_normal((t, n)), 0), 2) for n in (256, 512)}
    got = stage_inputs(params, 15, codes)
    assert not got.ordinary[17] and got.ordinary.sum() == t - 1
    np.testing.assert_array_equal(got.neurons[100:300], neurons[100:300])  # raw: no scale
    scale = math.sqrt(6 / np.mean(np.sum(np.delete(residual, 17, 0).astype(np.float64) ** 2, axis=1)))
    np.testing.assert_allclose(got.residual[190:210], residual[190:210] * scale, rtol=1e-5)
    assert got.neurons.shape == (t, 9) and got.sizes == (256, 512)
    write_store(store_dir(params, 15, "eval_neurons"), neurons[:-1])
    from saeatlas.errors import StoreError

    with pytest.raises(StoreError, match="same tokens"):
        stage_inputs(params, 15, codes)


def test_stage_fails_naming_the_parameter_without_the_neuron_store(tmp_path: Path, monkeypatch) -> None:
    from saeatlas.analysis.neurons.stage import inputs as stage_inputs
    from saeatlas.errors import ParamsError, SaeAtlasError, StoreError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match=r"eval_neurons: no MLP neuron store.*activations\.neurons: true") as err:
        stage_inputs(smoke_params(), 15, {})
    assert isinstance(err.value, SaeAtlasError)  # the CLI prints one line and exits 2
    with pytest.raises(ParamsError, match=r"activations\.neurons is false"):
        stage_inputs(smoke_params(neurons=False), 15, {})


def test_the_feature_browser_reads_the_top_neuron_table(tmp_path: Path) -> None:
    """The written table becomes each feature's ``neurons`` record: ids and signed r in order,
    empty for a dead feature, None without the table."""
    from saeatlas.report.browser_data import neurons_for
    from saeatlas.report.browser_records import neuron_list

    out = run(NeuronsConfig(random_directions=16, chunk_rows=1000), small_inputs())
    write_output(out, tmp_path / "out", tmp_path / "metrics.json", "hash")
    table = neurons_for(tmp_path / "out" / "tables" / "top_neurons_n16.csv", 16)
    assert table is not None and table[0].shape == (16, 3)
    row = out.tables["top_neurons_n16"][0]
    assert neuron_list(table, 0) == [[row[f"neuron_{j}"], pytest.approx(row[f"corr_{j}"], abs=1e-3)] for j in (1, 2, 3)]
    assert neuron_list(table, 3) == [] and neuron_list(None, 0) is None
