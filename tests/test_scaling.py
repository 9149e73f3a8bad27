"""Scaling analyses on planted truth: power laws, feature completeness, collapse, and the matcher.

The synthetic cases are built end to end through ``scaling.compute.run``: a token stream in which
concept tokens occur with known frequencies, and sparse codes in which a latent that fires
exactly on a concept's tokens exists with a known logistic probability in
log10(frequency x alive). The analysis must find that logistic's 50% point within its CI,
find the known power-law exponent within its CI, and say "not estimable" when nothing is planted.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import fields, replace

import numpy as np
import pytest
from scipy import sparse, special

from saeatlas.analysis.common.output import AnalysisOutput, write_output
from saeatlas.analysis.common.stats import fit_power_law
from saeatlas.analysis.scaling.completeness import fit_logistic, judge_concepts
from saeatlas.analysis.scaling.compute import ScalingInputs, run
from saeatlas.analysis.scaling.concepts import (CATEGORIES, CONCEPT_DIR, Concept, TokenizedConcept, WordSampling,
                                                corpus_words, load_concepts, tokenize_concepts, word_boundaries)
from saeatlas.analysis.scaling.config import ScalingConfig
from saeatlas.analysis.scaling.matching import Occurrences, count_occurrences, find_occurrences
from saeatlas.analysis.scaling.section import section as report_section


# --------------------------------------------------------------------------------------
# Synthetic cases
# --------------------------------------------------------------------------------------

BOS = 1
BACKGROUND = (10_000, 11_000)  # token ids of the filler text (concept ids are < 10_000)


def fake_encoder() -> tuple[dict[str, int], callable]:
    """One new token id per distinct string: " concept7" and "Concept7" are different tokens,
    as in a BPE vocabulary."""
    vocab: dict[str, int] = {}

    def encode(text: str) -> list[int]:
        return [vocab.setdefault(text, 100 + len(vocab))]

    return vocab, encode


def random_codes(rng: np.random.Generator, N: int, n: int, live: np.ndarray, k: int,
                 extra_rows: list[np.ndarray] = (), extra_cols: list[np.ndarray] = ()) -> sparse.csr_matrix:
    """Codes [N, n]: every row has k latents drawn from ``live`` (each of them firing at least
    once), plus the planted (row, latent) entries."""
    cover_rows = rng.choice(N, size=len(live), replace=len(live) > N)
    rows = [np.repeat(np.arange(N), k), cover_rows, *extra_rows]
    cols = [live[rng.integers(0, len(live), N * k)], live, *extra_cols]
    r, c = np.concatenate(rows), np.concatenate(cols)
    m = sparse.csr_matrix((rng.uniform(0.1, 2.0, len(r)).astype(np.float32), (r, c)), shape=(N, n))
    m.sum_duplicates()
    return m


def completeness_case(planted: str | None, seed: int = 0, n_concepts: int = 150, n_few: int = 3,
                      sizes: tuple[int, ...] = (1000, 4000, 16000, 64000),
                      alive: tuple[int, ...] = (900, 2800, 8000, 20000),
                      x50: float = -0.3, u50: float = -4.0, slope: float = 2.5,
                      eval_occurrences: int = 6, k: int = 8) -> tuple[ScalingInputs, dict]:
    """A stream and codes with planted concept latents.

    planted = "rescaled": P(latent for c exists at size n) = sigmoid(slope (log10(f_c A_n) - x50));
    planted = "unrescaled": = sigmoid(slope (log10 f_c - u50)) (no dependence on A_n);
    planted = "threshold": the latent exists iff f_c A_n > 10**x50 (a step at a planted c);
    planted = None: no concept latents at all.
    ``n_few`` extra concepts occur only twice in the evaluation rows (must be excluded).
    """
    rng = np.random.default_rng(seed)
    vocab, encode = fake_encoder()
    C = n_concepts + n_few
    concepts = tokenize_concepts([Concept(f"concept{i}", "synthetic") for i in range(C)], encode)
    ids = np.array([vocab[f" concept{i}"] for i in range(C)])

    # training split: 16000 contexts of BOS + 64 tokens; concept c occurs exactly counts[c] times
    n_ctx, T = 16_000, 64
    n_text = n_ctx * T
    target_f = 10 ** rng.uniform(-5.5, -2.5, C)
    counts = np.maximum(np.round(target_f * n_text).astype(int), 1)
    text = rng.integers(*BACKGROUND, n_text)
    where = rng.choice(n_text, counts.sum(), replace=False)
    text[where] = np.repeat(ids, counts)
    train = np.column_stack([np.full(n_ctx, BOS), text.reshape(n_ctx, T)])

    # evaluation rows: 400 contexts x 63 positions; each concept at known rows
    P, n_eval_ctx = 63, 400
    N = P * n_eval_ctx
    eval_tokens = rng.integers(*BACKGROUND, N)
    n_rows = np.r_[np.full(n_concepts, eval_occurrences), np.full(n_few, 2)]
    all_rows = rng.choice(N, n_rows.sum(), replace=False)
    concept_rows = np.split(all_rows, np.cumsum(n_rows)[:-1])
    for c, rows in enumerate(concept_rows):
        eval_tokens[rows] = ids[c]
    freq = (counts + n_rows) / (n_text + N)  # counted on all the study's tokens (train + evaluation)

    codes, exists = {}, {}
    for n, a in zip(sizes, alive):
        x = np.log10(freq * a)
        if planted == "rescaled":
            p = special.expit(slope * (x - x50))
        elif planted == "threshold":
            p = (x > x50).astype(float)
        elif planted == "unrescaled":
            p = special.expit(slope * (np.log10(freq) - u50))
        else:
            p = np.zeros(C)
        has = rng.random(C) < p
        has[n_concepts:] = False
        planted_ids = np.flatnonzero(has)
        extra_rows = [concept_rows[c] for c in planted_ids]
        extra_cols = [np.full(len(concept_rows[c]), j) for j, c in enumerate(planted_ids)]
        live = np.arange(len(planted_ids), a)  # latents >= a never fire: dead
        codes[n] = random_codes(rng, N, n, live, k, extra_rows, extra_cols)
        exists[n] = has
    inputs = ScalingInputs(sizes=sizes, codes=codes, positions_per_context=P, eval_tokens=eval_tokens,
                           train_contexts=train, concepts=concepts, train_has_bos=True)
    return inputs, {"freq": freq, "exists": exists, "alive": dict(zip(sizes, alive)), "n_judged": n_concepts,
                    "n_few": n_few}


def power_law_case(alpha: float = 0.8, prefactor: float = 2.0, sizes: tuple[int, ...] = (512, 1024, 2048, 4096, 8192),
                   singleton_fraction: float = 0.2, seed: int = 1) -> tuple[ScalingInputs, dict[int, int]]:
    """Codes whose alive counts are round(prefactor * n^alpha); a fixed fraction of the alive
    latents fire on a single token (they make the count depend on the evaluation set)."""
    rng = np.random.default_rng(seed)
    P, n_ctx, k = 50, 400, 8
    N = P * n_ctx
    codes, expected = {}, {}
    for n in sizes:
        a = int(round(prefactor * n ** alpha))
        n_single = int(round(singleton_fraction * a))
        live = np.arange(n_single, a)
        singles = np.arange(n_single)
        codes[n] = random_codes(rng, N, n, live, k, [rng.choice(N, n_single, replace=False)], [singles])
        expected[n] = a
    inputs = ScalingInputs(sizes=tuple(sizes), codes=codes, positions_per_context=P,
                           eval_tokens=rng.integers(*BACKGROUND, N),
                           train_contexts=rng.integers(*BACKGROUND, (10, 65)), concepts=[])
    return inputs, expected


# --------------------------------------------------------------------------------------
# Acceptance: completeness
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_run() -> tuple[AnalysisOutput, dict, ScalingInputs]:
    inputs, truth = completeness_case("rescaled")
    out = run(ScalingConfig(n_bootstrap=200), inputs)
    return out, truth, inputs


def test_completeness_recovers_planted_50_percent_point(planted_run):
    out, truth, _ = planted_run
    m = out.metrics
    # the stream and codes are what the analysis sees: alive counts and exclusions
    for n, a in truth["alive"].items():
        assert m[f"n{n}.alive"] == a
    assert m["completeness.concepts_judged"] == truth["n_judged"]
    assert m["completeness.concepts_excluded"] == truth["n_few"] == m["completeness.concepts_excluded_few_eval"]
    # every planted latent is found, and nothing else
    rows = out.tables["concept_judgements"]
    found = {(r["concept"], r["size"]): r["exists"] for r in rows}
    planted = {(f"concept{c}", n): int(truth["exists"][n][c]) for n in truth["alive"] for c in range(truth["n_judged"])}
    assert found == planted
    # the known 50% point (x50 = -0.3) lies in the reported CI, and the CI is informative
    assert m["completeness.x50_estimated"] == 1 and m["completeness.x50_ci_estimated"] == 1
    lo, hi = m["completeness.x50_ci_low"], m["completeness.x50_ci_high"]
    assert lo <= -0.3 <= hi, (lo, m["completeness.x50"], hi)
    assert hi - lo < 0.6
    assert hi < 0.0  # planted "below 1 / alive" by 0.3 decades: the CI must tell it from 0
    assert m["completeness.freq50_times_alive"] == pytest.approx(10 ** m["completeness.x50"])
    # the frequencies the analysis measured are the planted ones
    freq = {r["concept"]: r["frequency"] for r in out.tables["concepts"]}
    assert freq["concept0"] == pytest.approx(truth["freq"][0])


def test_completeness_recovers_a_planted_threshold_in_frequency_times_alive():
    """A concept has its own latent iff f x A_n > c (c = 10**-0.4 here), f counted on train +
    evaluation tokens, A_n the alive (not the allocated) latents: the fitted 50% point must
    recover c within its CI, and the CI must be narrow (a step is sharp). Using n for A_n
    moves x50 outside the CI (checked); counting f on the training split only is caught by the
    frequency check of the planted-logistic test above."""
    c = -0.4
    inputs, truth = completeness_case("threshold", seed=5, x50=c, alive=(500, 1300, 4000, 9000))
    m = run(ScalingConfig(n_bootstrap=200), inputs).metrics
    pairs = truth["n_judged"] * len(truth["alive"])
    exist = sum(int(truth["exists"][n][: truth["n_judged"]].sum()) for n in truth["alive"])
    assert m["completeness.pairs_judged"] == pairs and m["completeness.pairs_exist"] == exist
    assert m["completeness.pairs_absent"] == pairs - exist and min(exist, pairs - exist) >= 100
    assert m["completeness.x50_ci_estimated"] == 1
    lo, hi = m["completeness.x50_ci_low"], m["completeness.x50_ci_high"]
    assert lo <= c <= hi, (lo, m["completeness.x50"], hi)
    assert hi - lo < 0.15
    assert m["completeness.freq50_times_alive_ci_low"] <= 10 ** c <= m["completeness.freq50_times_alive_ci_high"]
    assert m["reference.templeton2024_completeness_freq50_times_alive"] == 1.0


def test_completeness_curves_collapse_when_planted_on_rescaled_axis(planted_run):
    m = planted_run[0].metrics
    assert m["completeness.collapse.lr_estimated"] == 1
    assert m["completeness.collapse.lr_pvalue"] > 0.01  # one shared curve in x is not rejected ...
    assert m["completeness.collapse.lr_pvalue_unrescaled"] < 1e-3  # ... one in log10 f is
    assert m["completeness.collapse.sizes_with_x50"] == 4
    assert m["completeness.collapse.spread_ratio"] < 0.5


def test_collapse_is_rejected_when_curves_ignore_alive_count():
    inputs, _ = completeness_case("unrescaled", seed=3)
    m = run(ScalingConfig(n_bootstrap=0), inputs).metrics
    assert m["completeness.collapse.lr_pvalue"] < 1e-3
    assert m["completeness.collapse.lr_pvalue_unrescaled"] > 0.01
    assert m["completeness.collapse.spread_ratio"] > 2.0


def test_null_reports_no_50_percent_point():
    inputs, truth = completeness_case(None, seed=2)
    out = run(ScalingConfig(n_bootstrap=50), inputs)
    m = out.metrics
    assert m["completeness.pairs_exist"] == 0
    assert m["completeness.x50_estimated"] == 0
    assert not any(key.startswith(("completeness.x50_ci", "completeness.freq50")) for key in m)
    assert "completeness.x50" not in m and "completeness.slope" not in m
    summary = out.documents["scaling_summary"]["completeness"]
    assert summary["x50"] is None
    pairs = truth["n_judged"] * len(truth["alive"])
    assert f"only 0 of {pairs} (concept, size) pairs" in summary["x50_reason"]
    assert any("not estimated" in note for note in out.documents["scaling_summary"]["notes"])
    assert m["completeness.collapse.lr_estimated"] == 0


def test_output_is_writable_and_finite(planted_run, tmp_path):
    out = planted_run[0]
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in out.metrics.values())
    write_output(out, tmp_path / "scaling", tmp_path / "metrics.json", "hash")
    assert json.loads((tmp_path / "metrics.json").read_text())["n1000.alive"] == 900
    for name in ("alive_power_law", "density_distribution", "completeness_curves"):
        assert (tmp_path / "scaling" / "figures" / f"{name}.png").stat().st_size > 1000
    assert (tmp_path / "scaling" / "figures" / "completeness.plotly.json").is_file()
    for name in ("sizes", "concept_judgements", "concepts", "power_law_fits", "completeness_per_size"):
        assert (tmp_path / "scaling" / "tables" / f"{name}.csv").is_file()


def test_section_reads_the_written_output(planted_run, tmp_path):
    write_output(planted_run[0], tmp_path / "scaling", tmp_path / "metrics.json", "hash")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    sec = report_section(metrics, tmp_path / "scaling")
    assert sec.missing_files(tmp_path / "scaling") == []
    assert "figures/completeness_curves.png" in [f.path for f in sec.figures]
    assert f"{metrics['alive_power_law.exponent']:.3g}" in sec.summary
    assert f"{metrics['completeness.freq50_times_alive']:.3g}" in sec.summary
    assert "Templeton" in sec.summary and sec.order == 30
    assert f"{metrics['completeness.pairs_exist']} of {metrics['completeness.pairs_judged']}" in sec.summary
    assert f"{metrics['completeness.pairs_absent']} do not" in sec.summary
    f50 = next(n for n in sec.numbers if n.label == "frequency x alive")
    assert f50.ci is not None and "about one occurrence per alive feature" in f50.published


def test_section_says_plainly_what_was_not_estimated(tmp_path):
    inputs, truth = completeness_case(None, seed=2)
    write_output(run(ScalingConfig(n_bootstrap=0), inputs), tmp_path / "scaling", tmp_path / "metrics.json", "hash")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    sec = report_section(metrics, tmp_path / "scaling")
    assert sec.missing_files(tmp_path / "scaling") == []
    pairs = truth["n_judged"] * len(truth["alive"])
    assert "50% point was not estimated" in sec.summary and f"only 0 of {pairs}" in sec.summary
    assert "collapse test across sizes was not run" in sec.summary


# --------------------------------------------------------------------------------------
# Acceptance: power laws
# --------------------------------------------------------------------------------------


def test_power_law_recovers_exponent():
    inputs, expected = power_law_case(alpha=0.8)
    out = run(ScalingConfig(n_bootstrap=300), inputs)
    m = out.metrics
    for n, a in expected.items():
        assert m[f"n{n}.alive"] == a
        assert m[f"n{n}.dead_fraction"] == pytest.approx(1 - a / n)
    assert m["alive_power_law.estimated"] == 1
    lo, hi = m["alive_power_law.exponent_ci_low"], m["alive_power_law.exponent_ci_high"]
    assert lo <= 0.8 <= hi, (lo, m["alive_power_law.exponent"], hi)
    assert hi - lo < 0.05  # and the interval is narrow enough to exclude 0.75 and 0.85
    assert m["alive_power_law.exponent"] == pytest.approx(0.8, abs=2e-3)
    assert m["alive_power_law.prefactor"] == pytest.approx(2.0, rel=0.02)
    # singletons are lost in resamples (p = 1/e), the same fraction at every size: the counts
    # shift, the exponent does not
    assert abs(m["alive_power_law.bootstrap_shift"]) < 0.01
    assert m["n512.alive_bootstrap_sd"] > 0
    # no concepts: completeness says so instead of inventing a number
    assert m["completeness.concepts_judged"] == 0 and m["completeness.x50_estimated"] == 0


def test_power_law_not_fitted_when_a_size_has_no_dead_latents():
    inputs, expected = power_law_case(alpha=1.0, prefactor=1.0, sizes=(512, 1024, 2048))
    m = run(ScalingConfig(n_bootstrap=20), inputs).metrics
    assert all(m[f"n{n}.dead"] == 0 for n in expected)
    assert m["dead_power_law.estimated"] == 0 and "dead_power_law.exponent" not in m
    assert m["alive_power_law.exponent"] == pytest.approx(1.0, abs=1e-9)


def test_fit_power_law_exact():
    sizes = [100, 200, 400, 800]
    fit = fit_power_law("alive", sizes, [3 * n ** 0.6 for n in sizes], None, 0.95)
    assert fit.exponent == pytest.approx(0.6) and fit.prefactor == pytest.approx(3.0)
    assert fit.se_fit == pytest.approx(0.0, abs=1e-9) and fit.ci_low is None


# --------------------------------------------------------------------------------------
# The logistic fit
# --------------------------------------------------------------------------------------


def test_firth_logistic_matches_mle_on_large_sample_and_stays_finite_under_separation():
    rng = np.random.default_rng(5)
    x = rng.uniform(-3, 3, 20_000)
    y = (rng.random(x.size) < special.expit(2.0 * (x - 0.5))).astype(float)
    fit = fit_logistic(x, y)
    assert fit.converged and fit.slope == pytest.approx(2.0, rel=0.05) and fit.x50 == pytest.approx(0.5, abs=0.03)
    xs = np.linspace(-1, 1, 20)
    sep = fit_logistic(xs, (xs > 0).astype(float))  # plain MLE would diverge
    assert sep.converged and np.isfinite(sep.slope) and abs(sep.x50) < 0.1


# --------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------

# a toy vocabulary (id -> decoded text) for the word-boundary masks
TEXTS = {1: "<s>", 2: ".", 3: " the", 4: " and", 5: " Niger", 6: "ia", 7: " Papua", 8: " New", 9: " Guinea",
         10: "-", 11: " Sudan", 12: " South", 13: "Niger", 14: " con", 15: "cat", 16: " cat", 17: "'s"}


def toy_concepts() -> list[TokenizedConcept]:
    def concept(name: str, *forms: tuple[int, ...]) -> TokenizedConcept:
        return TokenizedConcept(Concept(name, "toy"), tuple(forms), tuple(name for _ in forms))

    return [concept("Niger", (5,), (13,)), concept("Guinea", (9,)), concept("Papua New Guinea", (7, 8, 9)),
            concept("Sudan", (11,)), concept("South Sudan", (12, 11)), concept("cat", (16,), (15,))]


def test_matcher_boundaries_nesting_and_context_edges():
    boundaries = word_boundaries([TEXTS.get(i, "") for i in range(20)])
    assert boundaries.glued_left[6] and not boundaries.glued_left[5] and boundaries.glued_right[5]
    ctx = np.array([
        [1, 5, 6, 3, 5, 2, 13, 3],    # " Niger"+"ia" is Nigeria (no); " Niger" (yes); "Niger" after "." (yes)
        [1, 7, 8, 9, 3, 9, 10, 3],    # Papua New Guinea (its " Guinea" is not Guinea); " Guinea" + "-" (yes)
        [1, 12, 11, 3, 11, 4, 14, 15],  # South Sudan, Sudan; "cat" inside " con"+"cat" (no)
        [1, 3, 16, 17, 3, 7, 8, 12],  # " cat" + "'s" (yes); " Papua New" cut by the row end (no)
        [1, 9, 16, 2, 2, 3, 3, 7],    # " Guinea" at row start after BOS (yes), " cat" (yes)
    ])
    counts = count_occurrences(toy_concepts(), ctx, boundaries, skip_first_column=True)
    assert counts.n_tokens == 5 * 7
    assert counts.counts.tolist() == [2, 2, 1, 1, 1, 2]
    # without boundary masks, Nigeria's "Niger" and concat's "cat" are (wrongly) counted
    loose = count_occurrences(toy_concepts(), ctx, None, skip_first_column=True)
    assert loose.counts.tolist() == [3, 2, 1, 1, 1, 3]
    # a name split across two contexts is not an occurrence
    split = np.array([[3, 3, 7, 8], [9, 3, 3, 3]])
    assert count_occurrences(toy_concepts(), split, boundaries).counts.tolist() == [0, 1, 0, 0, 0, 0]


def test_find_occurrences_rows_and_spans():
    boundaries = word_boundaries([TEXTS.get(i, "") for i in range(20)])
    P = 6
    flat = np.array([3, 7, 8, 9, 3, 5,   # Papua New Guinea at rows 1..3; " Niger" at 5 (row end)
                     6, 12, 11, 3, 3, 3])  # "ia" starts the next context: " Niger" above still counts
    occ = find_occurrences(toy_concepts(), flat, P, boundaries)
    got = sorted(zip(occ.concept.tolist(), occ.start.tolist(), occ.length.tolist()))
    assert got == [(0, 5, 1), (2, 1, 3), (4, 7, 2)]
    assert occ.counts().tolist() == [1, 0, 1, 0, 1, 0]
    assert sorted(occ.token_rows()[1].tolist()) == [1, 2, 3, 5, 7, 8]
    assert occ.last[occ.concept == 2].tolist() == [3]
    with pytest.raises(ValueError):
        find_occurrences(toy_concepts(), flat[:-1], P)


def test_counting_is_vectorised_on_a_million_tokens():
    """~1M tokens and ~650 concepts with 1..8-token forms: exact counts, in seconds."""
    rng = np.random.default_rng(7)
    n_ctx, T = 8000, 128
    arr = rng.integers(20_000, 40_000, (n_ctx, T))
    concepts, truth = [], []
    next_id = 100
    for i in range(650):
        L = 1 + i % 8
        form = tuple(range(next_id, next_id + L))
        next_id += L
        concepts.append(TokenizedConcept(Concept(f"c{i}", "toy"), (form,), (f"c{i}",)))
        truth.append(int(rng.integers(0, 30)))
    starts = rng.choice(n_ctx * (T // 8), sum(truth), replace=False) * 8  # 8-token slots never overlap
    owner = np.repeat(np.arange(650), truth)
    flat = arr.reshape(-1)
    for s, c in zip(starts, owner):
        form = concepts[c].forms[0]
        flat[s:s + len(form)] = form
    t0 = time.perf_counter()
    counts = count_occurrences(concepts, arr)
    elapsed = time.perf_counter() - t0
    assert counts.counts.tolist() == truth
    assert elapsed < 30, f"counting took {elapsed:.1f} s"


# --------------------------------------------------------------------------------------
# Judgement
# --------------------------------------------------------------------------------------


def test_judge_concepts_precision_recall_and_best_latent():
    N = 40
    # concept 0: a 2-token name at rows (4,5), (14,15), (24,25), (34,35); concept 1: rows 2, 12
    occ = Occurrences(concept=np.array([0, 0, 0, 0, 1, 1]), start=np.array([4, 14, 24, 34, 2, 12]),
                      length=np.array([2, 2, 2, 2, 1, 1]), n_concepts=3)
    entries = {
        0: [5, 15, 25],              # last token of 3 of 4 occurrences: P = 1, R = 0.75
        1: [4, 5, 14, 15, 24, 25, 34, 35],  # every token: P = 1, R = 1 -> best for concept 0
        2: [4, 0, 1, 3, 6, 7, 8, 9],  # P = 1/8 for concept 0
        3: [2, 12, 20, 21, 22],       # concept 1: P = 2/5 < 0.5, R = 1 -> no latent
    }
    r = np.concatenate([np.array(v) for v in entries.values()])
    c = np.concatenate([np.full(len(v), j) for j, v in entries.items()])
    codes = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(N, 6))
    j = judge_concepts(codes, occ, 0.5, 0.5)
    assert j.exists.tolist() == [True, False, False]
    assert j.best_feature[0] == 1 and j.precision[0] == 1.0 and j.recall[0] == 1.0
    assert j.best_feature[1] == 3 and j.precision[1] == pytest.approx(0.4) and j.recall[1] == 1.0
    assert j.best_feature[2] == -1  # no occurrences
    strict = judge_concepts(codes, occ, 0.3, 0.5)  # with a lower precision bar concept 1 qualifies
    assert strict.exists.tolist() == [True, True, False]


# --------------------------------------------------------------------------------------
# Concept lists, tokenisation, configuration
# --------------------------------------------------------------------------------------


def test_shipped_concept_lists():
    counts = {cat: len(load_concepts([cat])) for cat in CATEGORIES}
    assert counts["elements"] == 118 and counts["countries"] == 193 and counts["capitals"] == 193
    assert counts["animals"] >= 100 and counts["foods"] >= 100
    assert counts["months"] == 11 and counts["weekdays"] == 7 and counts["numbers"] == 31 and counts["colours"] >= 20
    for cat in CATEGORIES:
        header = (CONCEPT_DIR / f"{cat}.txt").read_text(encoding="utf-8").splitlines()[0]
        assert header.startswith("#")
    names = [name.lower() for c in load_concepts() for name in c.names]
    # the one name in two lists is documented in both files (country Turkey, animal turkey)
    assert sorted({n for n in names if names.count(n) > 1}) == ["turkey"]
    with pytest.raises(ValueError):
        load_concepts(["planets"])


def word_corpus() -> tuple[np.ndarray, list[str]]:
    """100,000 tokens (rows of 50) with words of planted whole-word counts, each followed by "."
    except " con", which is glued to "cept" in 450 of its 500 occurrences."""
    texts = [".", "cept", " alpha", " Alpha", " Paris", " beta", " con", " iron", " gamma", " ab", " delta", " zeta"]
    tid = {t: i for i, t in enumerate(texts)}
    pairs = {" alpha": 2000, " Alpha": 500, " Paris": 300, " beta": 200, " iron": 100, " gamma": 50, " ab": 300,
             " delta": 5, " zeta": 12, " con": 50}
    stream = [(tid[w], 0) for w, k in pairs.items() for _ in range(k)] + [(tid[" con"], tid["cept"])] * 450
    n_tokens = 100_000
    stream += [(0, 0)] * (n_tokens // 2 - len(stream))
    order = np.random.default_rng(0).permutation(len(stream))
    return np.array(stream)[order].reshape(-1, 50), texts


def test_corpus_words_are_whole_words_drawn_by_frequency_band():
    contexts, texts = word_corpus()
    bands = WordSampling(per_band=5, log10_min=-4.0, log10_max=-1.0, band_width=1.0, min_letters=3,
                         min_whole_share=0.9)
    words = corpus_words(contexts, texts, bands, np.random.default_rng(0), exclude=["Iron"])
    # alpha: 2500 / 1e5 (both casings, named by the commoner); Paris, beta in 1e-3..1e-2; gamma, zeta
    # in 1e-4..1e-3. Not: " con" (a whole word in 10%), " iron" (excluded), " ab" (2 letters),
    # " delta" (5e-5, below the lowest band)
    assert sorted(w.name for w in words) == ["Paris", "alpha", "beta", "gamma", "zeta"]
    assert {w.category for w in words} == {"words"}
    one = replace(bands, per_band=1)
    draws = {tuple(w.name for w in corpus_words(contexts, texts, one, np.random.default_rng(s), exclude=["iron"]))
             for s in range(20)}
    assert all(len(d) == 3 and d[2] == "alpha" for d in draws)  # one per band, rarest band first
    assert {d[1] for d in draws} == {"Paris", "beta"} and {d[0] for d in draws} == {"gamma", "zeta"}
    again = corpus_words(contexts, texts, one, np.random.default_rng(3))
    assert again == corpus_words(contexts, texts, one, np.random.default_rng(3))  # a seed fixes the draw
    assert corpus_words(contexts, texts, replace(bands, per_band=0), np.random.default_rng(0)) == []
    assert "con" in {w.name for w in corpus_words(contexts, texts, replace(bands, min_whole_share=0.05),
                                                  np.random.default_rng(0))}


def test_tokenize_concepts_forms_and_conflicts():
    vocab, encode = fake_encoder()
    concepts = [Concept("Turkey", "countries"), Concept("turkey", "animals", ("turkeys",)),
                Concept("Georgia", "countries"), Concept("Georgia", "states")]
    tc = tokenize_concepts(concepts, encode)
    assert set(tc[0].surfaces) == {" Turkey", "Turkey"}
    assert set(tc[1].surfaces) == {" turkey", "turkey", " turkeys", "turkeys", " Turkeys", "Turkeys"}
    assert set(tc[1].dropped) == {" Turkey", "Turkey"}  # explicit beats derived capitalisation
    assert tc[2].forms == () and tc[3].forms == ()  # claimed explicitly twice: dropped from both
    assert all(len(f) == 1 for t in tc for f in t.forms)


def test_real_lists_tokenise_without_conflicts_beyond_turkey():
    _, encode = fake_encoder()  # string-level identity: conflicts are conflicts of spelling
    tc = tokenize_concepts(load_concepts(), encode)
    assert [t.name for t in tc if t.dropped] == ["turkey"]
    assert all(t.forms for t in tc)


def test_config_from_params():
    default = ScalingConfig()
    section = {f.name: getattr(default, f.name) for f in fields(ScalingConfig)}
    section["categories"] = ["elements", "animals"]
    cfg = ScalingConfig.from_params(section)
    assert cfg.categories == ("elements", "animals") and cfg.n_bootstrap == default.n_bootstrap
    assert ScalingConfig.from_params({}) == default
    with pytest.raises(ValueError, match="unknown key"):
        ScalingConfig.from_params({"n_boot": 5})
    with pytest.raises(ValueError):
        ScalingConfig(categories=("planets",))
    with pytest.raises(ValueError):
        ScalingConfig(precision_threshold=0.0)


def test_run_rejects_misaligned_inputs():
    inputs, _ = power_law_case(sizes=(512, 1024))
    inputs.codes[512] = inputs.codes[512][:-1]
    with pytest.raises(ValueError, match="shape"):
        run(ScalingConfig(n_bootstrap=0), inputs)
