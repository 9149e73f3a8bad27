"""Word-pair crystals: exact answers for the Gram-matrix shortcuts, planted parallelograms found
far above the shuffled-pair null, random and shuffled pairs within it (with calibrated p-values),
LDA removing a planted word-length direction while the semantic crystal survives, the shipped
TSVs, config errors, and the output contract."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from saeatlas.analysis.common.output import write_output
from saeatlas.analysis.common.stats import holm, permutation_p
from saeatlas.analysis.crystals.compute import CrystalsInputs, run
from saeatlas.analysis.crystals.config import CrystalsConfig
from saeatlas.analysis.crystals.lda import distractor_classes, lda_projector, project_out
from saeatlas.analysis.crystals.quality import (
    leave_one_out_cosines,
    observed_cosines,
    permutations,
    permuted_cosines,
    quality_scores,
    task_geometry,
    task_quality,
)
from saeatlas.analysis.crystals.section import section
from saeatlas.analysis.crystals.tasks import (
    TASKS,
    available_tasks,
    distractor_labels,
    load_tasks,
    parse_pairs,
    vocabulary,
)

FAST = dict(n_permutations=199, n_bootstrap=100, max_word_tokens=0, projection_task="")


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# ------------------------------------------------------------------------------------------
# Shipped data and loader
# ------------------------------------------------------------------------------------------


def test_shipped_tasks_parse_with_enough_distinct_pairs_and_sources() -> None:
    assert available_tasks() == tuple(sorted(TASKS))
    tasks = load_tasks()
    assert list(tasks) == list(TASKS)
    min_pairs = CrystalsConfig().min_pairs
    for name, pairs in tasks.items():
        assert min_pairs <= len(pairs) <= 60, (name, len(pairs))
        a_words, b_words = [a for a, _ in pairs], [b for _, b in pairs]
        assert len(set(a_words)) == len(a_words), f"{name}: repeated a"
        assert len(set(b_words)) == len(b_words), f"{name}: repeated b"
        for a, b in pairs:
            assert a and b and a != b and a.strip() == a and b.strip() == b
        header = (Path(__file__).parents[1] / "src" / "saeatlas" / "data" / "word_pairs" / f"{name}.tsv").read_text()
        assert "source" in header.lower(), f"{name}: the header must name its source"
    # spot checks of facts a reader would catch
    assert ("France", "Paris") in tasks["country_capital"] and ("Australia", "Canberra") in tasks["country_capital"]
    assert ("king", "queen") in tasks["male_female"] and ("mouse", "mice") in tasks["singular_plural"]
    assert ("go", "went") in tasks["present_past"] and ("good", "better") in tasks["adjective_comparative"]
    assert ("dog", "chien") in tasks["english_french"]


def test_load_tasks_selects_and_rejects_unknown_names() -> None:
    assert list(load_tasks(["male_female"])) == ["male_female"]
    with pytest.raises(ValueError, match="unknown word-pair task.*'capitals'.*shipped"):
        load_tasks(["male_female", "capitals"])


@pytest.mark.parametrize("text, message", [
    ("a\tb\tc\n", r"x:1: expected 'a<TAB>b', got 3"),
    ("# c\nab\n", r"x:2: expected 'a<TAB>b', got 1"),
    ("a\t\n", r"x:1: empty field"),
    ("a\t b\n", r"x:1: empty field or surrounding whitespace"),
    ("cat\tcat\n", r"x:1: a and b are the same word"),
    ("a\tb\nc\td\na\tb\n", r"x:3: duplicate pair"),
])
def test_parse_pairs_rejects_malformed_lines(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_pairs(text, "x")


def test_parse_pairs_skips_comments_and_blank_lines() -> None:
    assert parse_pairs("# source: me\n\nman\twoman\n  # indented comment\nNew Delhi\tx y\n") == [
        ("man", "woman"), ("New Delhi", "x y")]


def test_vocabulary_and_distractor_labels() -> None:
    tasks = {"t": [("man", "woman"), ("king", "queen")], "u": [("king", "roi")]}
    words = vocabulary(tasks)
    assert words == ("man", "woman", "king", "queen", "roi")
    labels = distractor_labels(words, [[5], [7, 8], [9], [10, 11, 12], [13]])
    np.testing.assert_array_equal(labels["length"], [3, 5, 4, 5, 3])
    np.testing.assert_array_equal(labels["n_tokens"], [1, 2, 1, 3, 1])
    np.testing.assert_array_equal(labels["first_token"], [5, 7, 9, 10, 13])
    with pytest.raises(ValueError, match="at least one token"):
        distractor_labels(["a"], [[]])


# ------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------


def test_config_from_params_coerces_and_names_bad_keys() -> None:
    cfg = CrystalsConfig.from_params({"tasks": ["male_female"], "lda_distractors": ["length"], "n_permutations": 500})
    assert cfg.tasks == ("male_female",) and cfg.lda_distractors == ("length",) and cfg.n_permutations == 500
    assert CrystalsConfig.from_params({}) == CrystalsConfig()
    with pytest.raises(ValueError, match=r"crystals: unknown key\(s\) \['n_perms'\]"):
        CrystalsConfig.from_params({"n_perms": 10})
    with pytest.raises(ValueError, match=r"crystals\.n_permutations: expected an integer"):
        CrystalsConfig.from_params({"n_permutations": "many"})
    with pytest.raises(ValueError, match=r"crystals\.tasks\[0\]: must be one of .*got 'capitals'"):
        CrystalsConfig.from_params({"tasks": ["capitals"]})
    with pytest.raises(ValueError, match=r"crystals\.template"):
        CrystalsConfig.from_params({"template": "{word} is a word"})
    with pytest.raises(ValueError, match=r"crystals\.min_pairs"):
        CrystalsConfig.from_params({"min_pairs": 2})
    with pytest.raises(ValueError, match=r"crystals\.ci_level"):
        CrystalsConfig.from_params({"ci_level": 1.5})
    with pytest.raises(ValueError, match=r"crystals\.lda_bins"):
        CrystalsConfig.from_params({"lda_bins": 1})


# ------------------------------------------------------------------------------------------
# Exact answers of the pieces
# ------------------------------------------------------------------------------------------


def _geometry_case(seed: int = 0, n: int = 7, m_per: tuple[int, ...] = (5, 4), d: int = 6):
    """Word matrix X with a task (rows ia, ib) and other tasks (oa, ob), and its Gram matrix."""
    rng = np.random.default_rng(seed)
    m = sum(m_per)
    x = rng.standard_normal((2 * n + 2 * m, d))
    ia, ib = np.arange(n), np.arange(n, 2 * n)
    oa, ob = 2 * n + np.arange(m), 2 * n + m + np.arange(m)
    o_task = np.repeat(np.arange(len(m_per)), m_per)
    return x, x @ x.T, ia, ib, oa, ob, o_task


def _cos(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u / np.linalg.norm(u, axis=-1, keepdims=True)) @ (v / np.linalg.norm(v, axis=-1, keepdims=True)).T


def test_permuted_cosines_from_gram_equal_brute_force() -> None:
    x, g, ia, ib, oa, ob, o_task = _geometry_case()
    geo = task_geometry(g, ia, ib, oa, ob, o_task)
    perms = permutations(len(ia), 5, np.random.default_rng(3))
    c, xo = permuted_cosines(geo, perms)
    others = x[ob] - x[oa]
    for p, perm in enumerate(perms):
        delta = x[ib][perm] - x[ia]
        np.testing.assert_allclose(c[p], _cos(delta, delta), atol=1e-10)
        np.testing.assert_allclose(xo[p], _cos(delta, others), atol=1e-10)


def test_quality_scores_equal_direct_definitions_and_sklearn_silhouette() -> None:
    from sklearn.metrics import silhouette_samples

    x, g, ia, ib, oa, ob, o_task = _geometry_case(seed=1)
    geo = task_geometry(g, ia, ib, oa, ob, o_task)
    c, xo = observed_cosines(geo)
    n = len(ia)
    scores = quality_scores(c[None], xo[None], geo.avg, ~np.eye(n, dtype=bool)[None])
    delta = x[ib] - x[ia]
    cos = _cos(delta, delta)
    assert scores["cos_mean"][0] == pytest.approx(cos[~np.eye(n, dtype=bool)].mean(), abs=1e-12)
    # the closed form (‖Σ δ̂‖² - n) / (n (n-1)) of the docstring
    s = (delta / np.linalg.norm(delta, axis=1, keepdims=True)).sum(axis=0)
    assert scores["cos_mean"][0] == pytest.approx((s @ s - n) / (n * (n - 1)), abs=1e-12)
    all_delta = np.vstack([delta, x[ob] - x[oa]])
    labels = np.concatenate([np.full(n, -1), o_task])
    expected = silhouette_samples(all_delta, labels, metric="cosine")[:n].mean()
    assert scores["silhouette"][0] == pytest.approx(expected, abs=1e-10)


def test_bootstrap_compares_only_different_pairs() -> None:
    x, g, ia, ib, oa, ob, o_task = _geometry_case(seed=2)
    geo = task_geometry(g, ia, ib, oa, ob, o_task)
    c, xo = observed_cosines(geo)
    idx = np.array([[0, 0, 1, 3, 3, 3, 6]])
    mask = idx[:, :, None] != idx[:, None, :]
    got = quality_scores(c[idx[:, :, None], idx[:, None, :]], xo[idx], geo.avg, mask)["cos_mean"][0]
    pairs = [(i, j) for i in idx[0] for j in idx[0] if i != j]
    assert got == pytest.approx(np.mean([c[i, j] for i, j in pairs]), abs=1e-12)


def test_leave_one_out_cosines_exact() -> None:
    rng = np.random.default_rng(4)
    delta = rng.standard_normal((6, 5))
    c = _cos(delta, delta)
    hat = delta / np.linalg.norm(delta, axis=1, keepdims=True)
    expected = [_cos(delta[i][None], (hat.sum(0) - hat[i])[None])[0, 0] for i in range(6)]
    np.testing.assert_allclose(leave_one_out_cosines(c), expected, atol=1e-12)


def test_permutation_p_has_the_plus_one_and_counts_ties_against() -> None:
    assert permutation_p(1.0, np.full(99, 0.5)) == pytest.approx(0.01)
    assert permutation_p(0.5, np.full(9, 0.5)) == pytest.approx(1.0)
    assert permutation_p(0.5, np.array([0.1, 0.6, 0.7, 0.2])) == pytest.approx(3 / 5)
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.001]), [0.5, 0.002])


def test_distractor_classes_bin_merge_and_pool() -> None:
    np.testing.assert_array_equal(distractor_classes(np.array([1, 2, 1, 2, 3, 3]), False, 4, 1), [0, 1, 0, 1, 2, 2])
    lengths = np.repeat(np.arange(3, 13), 10)
    lab = distractor_classes(lengths, False, 4, 5)
    assert len(np.unique(lab)) == 4
    assert all(np.all(np.diff(lengths[lab == k]) >= 0) for k in range(4))  # bins are intervals
    assert np.all(np.diff([lengths[lab == k].max() for k in range(4)]) > 0)
    # a rare value is merged into its neighbour, not left as a class of 1
    lab = distractor_classes(np.array([1] * 10 + [2] * 10 + [3]), False, 4, 5)
    np.testing.assert_array_equal(lab, [0] * 10 + [1] * 11)
    # categorical: frequent values are classes, rare ones pooled; a tiny pool joins the largest class
    ids = np.array([7] * 12 + [9] * 10 + list(range(100, 110)))
    lab = distractor_classes(ids, True, 4, 10)
    assert len(np.unique(lab)) == 3 and len(np.unique(lab[22:])) == 1
    lab = distractor_classes(np.array([7] * 12 + [9] * 10 + [100, 101]), True, 4, 10)
    assert len(np.unique(lab)) == 2 and lab[-1] == lab[0]


# ------------------------------------------------------------------------------------------
# Planted truth
# ------------------------------------------------------------------------------------------


def _planted_inputs(seed: int = 0, d: int = 32, n: int = 30, length_coef: float = 0.0,
                    codes: bool = False) -> tuple[CrystalsInputs, dict[str, np.ndarray]]:
    """Tasks on random words (a ~ N(0, I)):

    - ``planted``: b = a + t + small noise (a parallelogram crystal);
    - ``second``: another crystal with its own offset (so silhouettes have an other cluster);
    - ``random``: b drawn independently of a (no crystal);
    - ``shuffled``: the planted construction, then the b's reassigned to the wrong a's;
    - ``longer`` (only with ``length_coef``): b = a + noise, no semantic offset, but every b is
      2-5 characters longer than its a.
    Every word also carries ``length_coef * (L - 7) * u_len`` (u_len = e_0); L is its length.
    """
    rng = np.random.default_rng(seed)
    u_len = np.zeros(d)
    u_len[0] = 1.0
    words, vecs, lens, pairs = [], [], [], {}

    def offset() -> np.ndarray:
        t = rng.standard_normal(d)
        t[0] = 0.0
        return 1.5 * unit(t)

    names = ["planted", "second", "random", "shuffled"] + (["longer"] if length_coef else [])
    for task in names:
        t = offset()
        a = rng.standard_normal((n, d))
        a[:, 0] = 0.0
        la = rng.integers(3, 9, n)
        lb = rng.integers(3, 9, n)
        if task in ("planted", "second", "shuffled"):
            b = a + t + 0.1 * rng.standard_normal((n, d))
        elif task == "random":
            b = rng.standard_normal((n, d))
        else:  # longer
            b = a + 0.7 * rng.standard_normal((n, d))
            lb = la + rng.integers(2, 6, n)
        b[:, 0] = 0.0
        if task == "shuffled":
            b = b[np.roll(np.arange(n), 1)]
        pairs[task] = []
        for i in range(n):
            wa, wb = f"{task}_a{i}", f"{task}_b{i}"
            words += [wa, wb]
            vecs += [a[i] + length_coef * (la[i] - 7) * u_len, b[i] + length_coef * (lb[i] - 7) * u_len]
            lens += [la[i], lb[i]]
            pairs[task].append((wa, wb))
    x = np.array(vecs)
    code_map = {}
    if codes:
        # a linear map into a wider space keeps the crystals; one size is given sparse
        code_map = {64: x @ rng.standard_normal((d, 64)), 128: sparse.csr_matrix(x @ rng.standard_normal((d, 128)))}
    lens_arr = np.array(lens)
    distractors = {"length": lens_arr, "n_tokens": 1 + (lens_arr > 6), "first_token": np.arange(len(words)) % 3}
    return CrystalsInputs(words, pairs, x, code_map, distractors), {"u_len": u_len}


def _row(out, task: str, space: str = "act", variant: str = "raw") -> dict:
    return next(r for r in out.tables["crystals"] if (r["task"], r["space"], r["variant"]) == (task, space, variant))


def test_planted_parallelograms_beat_the_null_random_and_shuffled_pairs_do_not() -> None:
    inputs, _ = _planted_inputs(codes=True)
    cfg = replace(CrystalsConfig(lda_distractors=("length",)), **FAST)
    out = run(cfg, inputs)
    m = out.metrics
    floor = 1 / (cfg.n_permutations + 1)
    for space in ("act", "sae_64", "sae_128"):
        for task in ("planted", "second"):
            assert m[f"{task}.{space}.cos_mean"] > 0.8  # 1.5² / (1.5² + 0.1² · 31) ≈ 0.88
            assert m[f"{task}.{space}.cos_mean_null"] < 0.5
            assert m[f"{task}.{space}.cos_mean_p"] == pytest.approx(floor)
            assert m[f"{task}.{space}.cos_mean_z"] > 10
            assert m[f"{task}.{space}.silhouette"] > 0.5
            assert m[f"{task}.{space}.silhouette_p"] == pytest.approx(floor)
            key = f"{task}.{space}.cos_mean"
            assert m[key + "_ci_lo"] <= m[key] <= m[key + "_ci_hi"]
        for task in ("random", "shuffled"):
            assert m[f"{task}.{space}.cos_mean_p"] > 0.01, (task, space)
            assert abs(m[f"{task}.{space}.cos_mean_z"]) < 3.5, (task, space)
            assert m[f"{task}.{space}.cos_mean"] < 0.5 * m[f"planted.{space}.cos_mean"]
        assert m[f"{space}.cos_mean_significant"] == 2  # planted and second, after Holm
    # the shuffled task is made of planted pairs: its null is the same as the planted task's kind
    assert m["shuffled.act.cos_mean"] == pytest.approx(m["shuffled.act.cos_mean_null"],
                                                       abs=4 * m["shuffled.act.cos_mean_null_sd"])
    # per-pair table: every planted pair follows the others' offset
    loo = [r["loo_cos"] for r in out.tables["crystal_pairs"]
           if (r["task"], r["space"], r["variant"]) == ("planted", "act", "raw")]
    assert len(loo) == 30 and min(loo) > 0.8  # ≈ √0.88 each


def test_null_p_values_are_calibrated() -> None:
    """With b independent of a, p is ~uniform: about 10% of tasks fall below 0.1, the mean is ~1/2."""
    ps = []
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        n, d = 20, 16
        x = rng.standard_normal((4 * n, d))
        g = x @ x.T
        ia, ib = np.arange(n), np.arange(n, 2 * n)
        oa, ob = 2 * n + np.arange(n), 3 * n + np.arange(n)
        geo = task_geometry(g, ia, ib, oa, ob, np.zeros(n, dtype=int))
        stats = task_quality(geo, permutations(n, 199, rng), np.zeros((0, n), dtype=int))
        ps.append([stats["cos_mean"].summary(0.95)["p"], stats["silhouette"].summary(0.95)["p"]])
    ps = np.array(ps)
    for col in range(2):
        assert np.mean(ps[:, col] <= 0.1) <= 0.25
        assert 0.35 <= ps[:, col].mean() <= 0.65


def test_lda_removes_a_planted_length_direction_and_the_semantic_crystal_survives() -> None:
    inputs, truth = _planted_inputs(seed=5, d=24, n=40, length_coef=1.0)
    u_len = truth["u_len"]
    cfg = replace(CrystalsConfig(lda_distractors=("length",)), **FAST)
    classes = {"length": distractor_classes(inputs.distractors["length"], False, cfg.lda_bins, cfg.lda_min_class)}
    before = np.std(inputs.activations @ u_len)
    residual = []
    for passes in (1, 2):
        lda = lda_projector(inputs.activations, classes, replace(cfg, lda_iterations=passes))
        assert lda.basis.shape[1] == 3 * passes and lda.n_classes["length"] == 4
        assert np.allclose(lda.basis.T @ lda.basis, np.eye(3 * passes), atol=1e-10)
        # the length axis lies (almost) in the removed span; the cleaned words have ~no u_len part
        assert np.linalg.norm(lda.basis.T @ u_len) > 0.95
        residual.append(np.std(project_out(inputs.activations, lda.basis) @ u_len))
    assert residual[0] < 0.15 * before and residual[1] < residual[0]
    # the raw offsets of "longer" point along u_len: a spurious crystal of word length
    x = inputs.activations
    rows = {w: i for i, w in enumerate(inputs.words)}
    ia = [rows[a] for a, _ in inputs.pairs["longer"]]
    ib = [rows[b] for _, b in inputs.pairs["longer"]]
    assert np.mean(_cos(x[ib] - x[ia], u_len[None])) > 0.6

    out = run(cfg, inputs)
    m = out.metrics
    floor = 1 / (cfg.n_permutations + 1)
    # raw: word length makes "longer" look like a crystal, far above its null
    assert m["longer.act.cos_mean"] > 0.3 and m["longer.act.cos_mean_p"] == pytest.approx(floor)
    # after LDA the spurious crystal has collapsed
    assert m["longer.act.cos_mean_lda"] < 0.05
    assert m["longer.act.cos_mean_lda_excess"] < 0.1 * m["longer.act.cos_mean_excess"]
    assert m["longer.act.lda_norm_retained"] < 0.7
    # semantic crystals survive (their offsets are orthogonal to u_len), and one whose edges were
    # blurred by random word lengths (b's length independent of a's) becomes sharper
    for task in ("planted", "second"):
        assert m[f"{task}.act.cos_mean_lda"] > 0.8
        assert m[f"{task}.act.cos_mean_lda_p"] == pytest.approx(floor)
        assert m[f"{task}.act.cos_mean_lda"] > m[f"{task}.act.cos_mean"]
    assert m["random.act.cos_mean_lda_p"] > 0.01
    assert m["act.lda_directions"] == 6 and 0 < m["act.lda_variance_removed"] < 0.5  # 2 passes × 3 axes


def test_lda_on_sparse_codes_equals_dense() -> None:
    inputs, _ = _planted_inputs(seed=6, d=16, n=25, length_coef=1.0)
    cfg = replace(CrystalsConfig(lda_distractors=("length", "n_tokens", "first_token")), **FAST)
    codes = np.maximum(inputs.activations @ np.random.default_rng(0).standard_normal((16, 40)), 0.0)
    classes = {k: distractor_classes(inputs.distractors[k], k == "first_token", cfg.lda_bins, 5)
               for k in cfg.lda_distractors}
    dense = lda_projector(codes, classes, cfg)
    sp = lda_projector(sparse.csr_matrix(codes), classes, cfg)
    assert dense.basis.shape == sp.basis.shape and dense.basis.shape[1] >= 3
    np.testing.assert_allclose(dense.basis @ dense.basis.T, sp.basis @ sp.basis.T, atol=1e-8)
    assert np.allclose(dense.basis.T @ dense.basis, np.eye(dense.basis.shape[1]), atol=1e-10)


def test_a_task_null_does_not_depend_on_the_other_tasks() -> None:
    inputs, _ = _planted_inputs(seed=7, n=25)
    cfg = replace(CrystalsConfig(lda_distractors=("length",)), **FAST)
    both = run(cfg, inputs).metrics
    alone_inputs = replace(inputs, pairs={"planted": inputs.pairs["planted"]})
    alone = run(cfg, alone_inputs).metrics
    for key in ("cos_mean", "cos_mean_null", "cos_mean_null_sd", "cos_mean_p", "cos_mean_ci_lo"):
        assert alone[f"planted.act.{key}"] == both[f"planted.act.{key}"]
    # one task: no other cluster, so no silhouette (rather than a made-up number)
    assert "planted.act.silhouette" not in alone and "planted.act.silhouette" in both
    assert run(cfg, inputs).metrics == both  # deterministic


# ------------------------------------------------------------------------------------------
# Inputs, token filter, output contract
# ------------------------------------------------------------------------------------------


def test_token_filter_drops_pairs_and_skips_small_tasks() -> None:
    inputs, _ = _planted_inputs(seed=8, n=25)
    n_tok = np.ones(len(inputs.words), dtype=int)
    rows = {w: i for i, w in enumerate(inputs.words)}
    for a, b in inputs.pairs["random"][:10]:
        n_tok[rows[b]] = 5  # 10 of 25 random pairs have a 5-token b
    inputs = replace(inputs, distractors={**inputs.distractors, "n_tokens": n_tok})
    cfg = replace(CrystalsConfig(lda_distractors=("length",)), **{**FAST, "max_word_tokens": 4})
    m = run(cfg, inputs).metrics
    assert m["random.n_pairs"] == 15 and m["random.n_dropped"] == 10 and m["random.evaluated"] == 0
    assert not any(k.startswith("random.act") for k in m)
    assert m["planted.evaluated"] == 1 and m["planted.n_pairs"] == 25
    assert run(replace(cfg, min_pairs=15), inputs).metrics["random.evaluated"] == 1


def test_inputs_errors_name_the_problem() -> None:
    inputs, _ = _planted_inputs(seed=9, n=25)
    cfg = replace(CrystalsConfig(lda_distractors=("length", "first_token")), **FAST)
    with pytest.raises(ValueError, match="missing 'first_token'"):
        run(cfg, replace(inputs, distractors={"length": inputs.distractors["length"]}))
    with pytest.raises(ValueError, match="words not in inputs.words.*'ghost'"):
        ghost = [*inputs.pairs["planted"], ("ghost", "planted_a0")]
        run(cfg, replace(inputs, pairs={**inputs.pairs, "planted": ghost}))
    with pytest.raises(ValueError, match=r"space sae_8: shape"):
        run(cfg, replace(inputs, codes={8: np.zeros((3, 8))}))
    with pytest.raises(ValueError, match=r"task 'planted': 25 pairs < crystals.min_pairs = 30"):
        run(replace(cfg, min_pairs=30), inputs)
    with pytest.raises(ValueError, match="projection_task 'male_female'"):
        run(replace(cfg, projection_task="male_female"), inputs)
    with pytest.raises(ValueError, match="duplicate words"):
        run(cfg, replace(inputs, words=[*inputs.words[:-1], inputs.words[0]]))


def test_output_follows_the_analysis_contract(tmp_path: Path) -> None:
    inputs, _ = _planted_inputs(seed=10, n=25, length_coef=1.0, codes=True)
    cfg = replace(CrystalsConfig(), **{**FAST, "projection_task": "planted"})
    out = run(cfg, inputs)
    write_output(out, tmp_path / "crystals", tmp_path / "metrics.json", "hash")

    def no_nan(token: str) -> float:
        raise AssertionError(f"non-finite number {token} in JSON")

    metrics = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=no_nan)
    for space in ("act", "sae_64", "sae_128"):
        for suffix in ("", "_null", "_null_sd", "_excess", "_z", "_p", "_ci_lo", "_ci_hi",
                       "_lda", "_lda_null", "_lda_z", "_lda_p"):
            assert f"planted.{space}.cos_mean{suffix}" in metrics
            assert f"planted.{space}.silhouette{suffix}" in metrics
        assert f"mean.{space}.cos_mean_lda_null" in metrics and f"{space}.lda_directions" in metrics
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in metrics.values())
    table = (tmp_path / "crystals" / "tables" / "crystals.csv").read_text().splitlines()
    assert len(table) == 1 + 5 * 3 * 2  # tasks × spaces × variants
    assert table[0].startswith("task,space,variant,n_pairs,norm_retained,cos_mean,cos_mean_null")
    assert (tmp_path / "crystals" / "figures" / "crystals_quality.png").stat().st_size > 0
    fig_path = tmp_path / "crystals" / "figures" / "crystals_pca.plotly.json"
    fig = json.loads(fig_path.read_text(), parse_constant=no_nan)
    assert len(fig["data"]) == 6 and "planted" in fig["layout"]["title"]["text"]
    lda_rows = (tmp_path / "crystals" / "tables" / "lda.csv").read_text().splitlines()
    assert len(lda_rows) == 1 + 3 * 3


def test_section_reports_the_written_numbers_beside_their_nulls(tmp_path: Path) -> None:
    inputs, _ = _planted_inputs(seed=10, n=25, codes=True)
    cfg = replace(CrystalsConfig(lda_distractors=("length",)), **{**FAST, "projection_task": "planted"})
    out = run(cfg, inputs)
    write_output(out, tmp_path / "crystals", tmp_path / "metrics.json", "hash")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    sec = section(metrics, tmp_path / "crystals")
    assert sec.missing_files(tmp_path / "crystals") == []
    assert {f.path for f in sec.figures} == {"figures/crystals_quality.png", "figures/crystals_pca.plotly.json"}
    assert f"{metrics['mean.act.cos_mean']:.3g}" in sec.summary
    assert f"{metrics['mean.act.cos_mean_null']:.3g}" in sec.summary
    assert f"{int(metrics['act.cos_mean_significant'])} of 4 tasks" in sec.summary
    assert sec.order == 50 and not sec.notes
    # a task with too few usable pairs is named in the notes; with none evaluated, the summary says so
    few = section({**metrics, "random.evaluated": 0, "random.n_pairs": 3}, tmp_path / "crystals")
    assert any("random (3 usable pairs" in n for n in few.notes)
    none = {"planted.evaluated": 0, "planted.n_pairs": 3, "act.lda_directions": 0}
    assert "not estimated" in section(none, tmp_path / "crystals").summary
