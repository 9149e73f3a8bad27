"""Neighbourhoods and maps: exact neighbours against brute force (ties and duplicates included),
planted clusters found far above the isotropic null and isotropic data not, and the acceptance
test: a planted "parent with two children" hierarchy across two sizes lands together in the joint
UMAP map, well above the within-size permutation null. UMAP runs once (module fixture): its
numba JIT makes the first call slow."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from saeatlas.analysis.common.linalg import unit_rows
from saeatlas.analysis.common.output import AnalysisOutput, write_output
from saeatlas.analysis.neighbours.compute import (
    NeighboursInputs,
    cosine_summary,
    exact_neighbours,
    isotropic_units,
    map_parent_hits,
    run,
)
from saeatlas.analysis.neighbours.config import NeighboursConfig
from saeatlas.analysis.neighbours.section import section

# ------------------------------------------------------------------------------------------
# Exact neighbours
# ------------------------------------------------------------------------------------------


def brute_force(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full cosine matrix, self set to −∞, each row sorted by (−cos, index)."""
    u = unit_rows(x).astype(np.float64)
    full = u @ u.T
    np.fill_diagonal(full, -np.inf)
    n = len(u)
    order = np.array([np.lexsort((np.arange(n), -row))[:k] for row in full])
    return order, np.take_along_axis(full, order, axis=1)


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_chunked_neighbours_equal_brute_force_on_random_data(chunk: int) -> None:
    x = np.random.default_rng(0).standard_normal((41, 9)) * np.random.default_rng(1).uniform(0.1, 5, (41, 1))
    for k in (1, 4, 40):
        idx, cos = exact_neighbours(unit_rows(x), k, chunk)
        ref_idx, ref_cos = brute_force(x, k)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_allclose(cos, ref_cos, atol=1e-6)
        assert not (idx == np.arange(41)[:, None]).any()  # never itself


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_ties_and_duplicates_resolved_exactly(chunk: int) -> None:
    """Rows with one or four ±1 entries have exactly representable unit rows (entries 1 or ±½),
    so every cosine is exact and ties are genuine; duplicates must still be neighbours of each
    other (self is excluded by index, not by value), and a tie at the k-th place goes to the
    lower index."""
    rng = np.random.default_rng(3)
    rows = []
    for _ in range(30):
        v = np.zeros(8)
        nz = rng.choice(8, size=rng.choice([1, 4]), replace=False)
        v[nz] = rng.choice([-1.0, 1.0], size=len(nz))
        rows.append(v)
    x = np.array(rows + rows[:6])  # six exact duplicates at the end
    x[3] *= 7.0  # norm does not matter
    n = len(x)
    for k in (1, 2, 5, 12):
        idx, cos = exact_neighbours(unit_rows(x), k, chunk)
        ref_idx, ref_cos = brute_force(x, k)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(cos, ref_cos)
    idx, cos = exact_neighbours(unit_rows(x), 1, chunk)
    for i in range(6):  # each duplicate's nearest is its twin (cos 1, lower index wins among equals)
        assert cos[30 + i, 0] == 1.0 and cos[i, 0] == 1.0
        twins = [j for j in range(n) if j != 30 + i and np.array_equal(x[j] / np.linalg.norm(x[j]),
                                                                      x[30 + i] / np.linalg.norm(x[30 + i]))]
        assert idx[30 + i, 0] == min(twins)
    with pytest.raises(ValueError, match="k = 36"):
        exact_neighbours(unit_rows(x), n, chunk)


def planted_clusters(groups: int, members: int, d: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    """``groups`` random centres, ``members`` noisy copies of each (cos ≈ 1/√(1 + spread²))."""
    centres = unit_rows(rng.standard_normal((groups, d)))
    noise = rng.standard_normal((groups, members, d)) / np.sqrt(d)
    return (centres[:, None, :] + spread * noise).reshape(groups * members, d)


def test_planted_clusters_far_above_null_and_isotropic_data_at_null() -> None:
    rng = np.random.default_rng(5)
    groups, members, d, k = 30, 8, 64, 5
    x = planted_clusters(groups, members, d, 0.35, rng)
    idx, cos = exact_neighbours(unit_rows(x), k, 50)
    _, cos_null = exact_neighbours(isotropic_units(len(x), d, np.random.default_rng(6)), k, 50)
    real, null = cosine_summary(cos), cosine_summary(cos_null)
    assert real["nn_cos_mean"] > 0.85 and null["nn_cos_mean"] < 0.45
    assert real["topk_cos_mean"] > real["nn_cos_mean"] - 0.1 > null["topk_cos_mean"] + 0.3
    # every neighbour (k = 5 < members − 1 = 7) lies in the planted group
    np.testing.assert_array_equal(idx // members, np.repeat(np.arange(groups), members)[:, None] * np.ones(k, int))

    # isotropic "dictionary": its statistics match the null's (different draw, same law)
    iso = rng.standard_normal((len(x), d)) * rng.uniform(0.5, 2, (len(x), 1))
    _, cos_iso = exact_neighbours(unit_rows(iso), k, 50)
    iso_s = cosine_summary(cos_iso)
    for name in ("nn_cos_mean", "nn_cos_median", "topk_cos_mean"):
        assert iso_s[name] == pytest.approx(null[name], abs=0.03), name
    # and the top-1 cosine of an isotropic cloud is about √(2 ln n / d)
    assert null["nn_cos_mean"] == pytest.approx(np.sqrt(2 * np.log(len(x)) / d), rel=0.25)


def test_map_parent_hits_planted_and_random_coordinates() -> None:
    rng = np.random.default_rng(7)
    small = rng.uniform(0, 100, (200, 2))
    parents = rng.integers(0, 200, 600)
    near = small[parents] + rng.normal(0, 0.01, (600, 2))  # each larger feature on top of its parent
    assert map_parent_hits(small, near, parents, 1).all()
    far = rng.uniform(0, 100, (600, 2))  # unrelated positions: chance is k / n_small
    for k in (5, 20):
        assert map_parent_hits(small, far, parents, k).mean() == pytest.approx(k / 200, abs=0.03)
    assert map_parent_hits(small, far[:0], parents[:0], 5).shape == (0,)


# ------------------------------------------------------------------------------------------
# Config and inputs
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("section, message", [
    ({"k": 0}, r"neighbours\.k: must be >= 1"),
    ({"chunk": 0}, r"neighbours\.chunk: must be >= 1"),
    ({"n_neighbors": 1}, r"neighbours\.n_neighbors: must be >= 2"),
    ({"min_dist": 1.5}, r"neighbours\.min_dist: must be <= 1"),
    ({"metric": "manhattan"}, r"neighbours\.metric: must be one of"),
    ({"match_cos": 2.0}, r"neighbours\.match_cos: must be <= 1"),
    ({"null_permutations": 0}, r"neighbours\.null_permutations: must be >= 1"),
    ({"trust_sample": 20}, r"neighbours\.trust_sample must be > 2 \* k"),
    ({"trust_sample": 2}, r"neighbours\.trust_sample: must be >= 3"),
    ({"seed": -1}, r"neighbours\.seed: must be >= 0"),
    ({"k": 2.5}, r"neighbours\.k: expected an integer"),
    ({"joint": "yes"}, r"neighbours\.joint: expected true or false"),
    ({"n_neighbours": 15}, r"neighbours: unknown key\(s\) \['n_neighbours'\]"),
])
def test_config_errors_name_the_key(section: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NeighboursConfig.from_params(section)


def test_config_from_params_defaults_and_kinds() -> None:
    assert NeighboursConfig.from_params({}) == NeighboursConfig()
    cfg = NeighboursConfig.from_params({"k": 5.0, "min_dist": 0, "joint": False})
    assert cfg.k == 5 and isinstance(cfg.k, int) and cfg.min_dist == 0.0 and cfg.joint is False


def test_inputs_validate_and_run_guards() -> None:
    rng = np.random.default_rng(0)
    ok = {40: rng.standard_normal((40, 6)), 80: rng.standard_normal((80, 6))}
    NeighboursInputs((40, 80), ok).validate()
    cases = [
        (NeighboursInputs((80, 40), ok), "strictly ascending"),
        (NeighboursInputs((40, 80, 160), ok), "size 160: no decoder"),
        (NeighboursInputs((40, 80), {40: ok[40], 80: ok[80][:70]}), r"size 80: decoder shape \(70, 6\)"),
        (NeighboursInputs((40, 80), {40: ok[40], 80: rng.standard_normal((80, 5))}), "width 5 differs"),
        (NeighboursInputs((40, 80), {40: ok[40], 80: np.full((80, 6), np.nan)}), "non-finite"),
    ]
    for inputs, message in cases:
        with pytest.raises(ValueError, match=message):
            inputs.validate()
    with pytest.raises(ValueError, match=r"neighbours\.k = 25 is too large for the smallest size 40"):
        run(NeighboursConfig(k=25, trust_sample=100), NeighboursInputs((40, 80), ok))
    with pytest.raises(ValueError, match=r"neighbours\.n_neighbors = 40 must be < the smallest size 40"):
        run(NeighboursConfig(n_neighbors=40), NeighboursInputs((40, 80), ok))


# ------------------------------------------------------------------------------------------
# The whole analysis on a planted hierarchy (UMAP once)
# ------------------------------------------------------------------------------------------

N_PARENTS, D, CHILD_COS = 60, 64, 0.85
CFG = NeighboursConfig(k=5, n_neighbors=10, chunk=32, trust_sample=150)


def planted_hierarchy() -> tuple[NeighboursInputs, np.ndarray]:
    """Smaller SAE: 60 isotropic random parents. Larger SAE (120): two children per parent,
    ``c = 0.85·p + √(1 − 0.85²)·u`` with ``u`` random and orthogonal to ``p``, rows shuffled
    and rescaled (returned with each child's parent index); so child–parent cosine 0.85
    (linked: ≥ 0.7), siblings ≈ 0.72, and everything else at chance (≈ 0.3 for the top-1 of
    120 random directions in d = 64)."""
    rng = np.random.default_rng(11)
    parents = unit_rows(rng.standard_normal((N_PARENTS, D))).astype(np.float64)
    u = rng.standard_normal((2 * N_PARENTS, D))
    owner = np.repeat(np.arange(N_PARENTS), 2)
    u -= np.sum(u * parents[owner], axis=1, keepdims=True) * parents[owner]
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    children = CHILD_COS * parents[owner] + np.sqrt(1 - CHILD_COS**2) * u
    perm = rng.permutation(2 * N_PARENTS)
    children = children[perm] * rng.uniform(0.2, 3.0, (2 * N_PARENTS, 1))
    inputs = NeighboursInputs((N_PARENTS, 2 * N_PARENTS), {N_PARENTS: parents * 2.0, 2 * N_PARENTS: children})
    return inputs, owner[perm]


@pytest.fixture(scope="module")
def result() -> AnalysisOutput:
    return run(CFG, planted_hierarchy()[0])


def test_planted_hierarchy_neighbours(result: AnalysisOutput) -> None:
    m = result.metrics
    small, large = f"n{N_PARENTS}", f"n{2 * N_PARENTS}"
    # random parents: at the isotropic null; sibling pairs: far above it
    for name in ("nn_cos_mean", "nn_cos_median", "topk_cos_mean"):
        assert m[f"{small}.{name}"] == pytest.approx(m[f"{small}.{name}_null"], abs=0.04), name
    assert m[f"{large}.nn_cos_mean"] > 0.6 and m[f"{large}.nn_cos_mean_null"] < 0.4
    # each child's nearest neighbour is its sibling
    owner = planted_hierarchy()[1]
    rows = [r for r in result.tables["neighbours"] if r["size"] == 2 * N_PARENTS and r["rank"] == 1]
    assert len(rows) == 2 * N_PARENTS
    assert all(owner[r["neighbour"]] == owner[r["feature"]] for r in rows)
    assert all(r["cos"] == pytest.approx(CHILD_COS**2, abs=0.15) for r in rows)


def test_joint_map_places_children_beside_parents(result: AnalysisOutput) -> None:
    m = result.metrics
    key = f"pair_{N_PARENTS}_{2 * N_PARENTS}"
    assert m[f"{key}.linked"] == 2 * N_PARENTS and m[f"{key}.linked_fraction"] == 1.0
    chance = m[f"{key}.map_parent_in_knn_chance"]
    assert chance == pytest.approx(CFG.k / N_PARENTS)
    assert m[f"{key}.map_parent_in_knn"] > 0.8
    assert m[f"{key}.map_parent_in_knn_null"] == pytest.approx(chance, abs=0.08)
    assert m["mean.map_parent_in_knn"] == m[f"{key}.map_parent_in_knn"]
    # the maps are faithful: trustworthiness well above the permuted map's (≈ 0.5)
    for prefix in (f"n{N_PARENTS}", f"n{2 * N_PARENTS}", "joint"):
        t, t_null = m[f"{prefix}.umap_trustworthiness"], m[f"{prefix}.umap_trustworthiness_null"]
        assert 0.0 <= t_null < 0.65 < t <= 1.0, prefix


def test_tables_figures_and_determinism(result: AnalysisOutput) -> None:
    coords = result.tables["umap_coordinates"]
    assert len(coords) == 3 * N_PARENTS
    assert set(coords[0]) == {"size", "feature", "x", "y", "joint_x", "joint_y"}
    assert len(result.tables["neighbours"]) == 3 * N_PARENTS * CFG.k
    assert set(result.figures) == {"neighbours_maps", "neighbours_cosines"}
    fig = result.interactive["neighbours_map"]
    assert [t["type"] for t in fig["data"]] == ["scattergl", "scattergl"]
    assert len(fig["data"][1]["x"]) == 2 * N_PARENTS and fig["data"][1]["text"][0].startswith(f"{2 * N_PARENTS}:0<br>")
    # same seed, same everything (UMAP with random_state is single-threaded and deterministic)
    again = run(CFG, planted_hierarchy()[0])
    assert again.metrics == result.metrics
    assert again.tables == result.tables


def test_without_joint_map(result: AnalysisOutput) -> None:
    out = run(replace(CFG, joint=False), planted_hierarchy()[0])
    assert not any(k.startswith(("pair_", "joint.", "mean.")) for k in out.metrics)
    assert set(out.tables["umap_coordinates"][0]) == {"size", "feature", "x", "y"}
    assert out.interactive["neighbours_map"]["data"][1]["visible"] == "legendonly"
    # the per-size part does not depend on the joint map
    assert {k: v for k, v in result.metrics.items() if k.startswith("n")} == out.metrics


def test_output_writes_valid_json_without_nan(result: AnalysisOutput, tmp_path: Path) -> None:
    def no_nan(token: str) -> float:
        raise AssertionError(f"non-finite value {token} in JSON")

    write_output(result, tmp_path / "neighbours", tmp_path / "metrics.json", params_hash="test")
    metrics = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=no_nan)
    assert metrics == pytest.approx(result.metrics)
    for name in ("neighbours", "umap_coordinates"):
        assert (tmp_path / "neighbours" / "tables" / f"{name}.csv").stat().st_size > 0
    for name in ("neighbours_maps", "neighbours_cosines"):
        assert (tmp_path / "neighbours" / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    json.loads((tmp_path / "neighbours" / "figures" / "neighbours_map.plotly.json").read_text(), parse_constant=no_nan)


def test_section_reads_the_written_output(result: AnalysisOutput, tmp_path: Path) -> None:
    out_dir = tmp_path / "neighbours"
    write_output(result, out_dir, tmp_path / "metrics.json", params_hash="test")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    sec = section(metrics, out_dir)
    assert sec.missing_files(out_dir) == []
    assert sec.order == 40 and sec.figures and sec.tables
    large = 2 * N_PARENTS
    assert f"{metrics[f'n{large}.nn_cos_mean']:.3g}" in sec.summary
    assert f"{metrics[f'n{large}.nn_cos_mean_null']:.3g}" in sec.summary
    assert f"{metrics['mean.map_parent_in_knn']:.3g}" in sec.summary
    assert "tighter neighbourhoods than chance" in sec.summary
    # without a joint map the cross-size test is said to be not estimated
    no_joint = {k: v for k, v in metrics.items() if not k.startswith(("pair_", "joint.", "mean."))}
    assert "not estimated" in section(no_joint, out_dir).summary
