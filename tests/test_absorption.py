"""The absorption analysis on planted truth: a letter latent silent on some of its tokens while a
token-specific latent carrying the letter direction fires instead is found at the planted rate
(and well above the random-direction null); without absorption the rate is 0; a split feature
(a second letter latent the k-sparse probe needs) counts as a main latent, not absorption, and
counts as absorption once the splitting threshold is set out of reach; below the first-letter
gate nothing is measured and the section says why with the number; bad settings are refused by
name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from saeatlas.analysis.absorption.absorb import absorption, main_fires
from saeatlas.analysis.absorption.compute import AbsorptionInputs, run, run_absorption
from saeatlas.analysis.absorption.config import AbsorptionConfig
from saeatlas.analysis.common.output import write_output

LETTERS = "abcdefgh"
IDS_PER_LETTER, REPEATS, D = 100, 2, 64
N_LATENTS, WIDTH = 1024, 4
ABSORBER0 = 100  # absorber latent of token id t: ABSORBER0 + t
SPLIT_LATENT = 60  # the second latent of letter b in the split-feature case
NOISE = (900, 1024)  # noise latents' ids
CFG = dict(tokens_per_letter=200, min_tokens_per_letter=10, max_iter=300, n_bootstrap=200, min_true_positives=5)


@dataclass
class Codes:
    indices: np.ndarray
    values: np.ndarray
    n_latents: int = N_LATENTS


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def planted(absorbed_share: float = 0.3, aligned: bool = True, split_b: bool = False, signal: float = 4.0,
            seed: int = 0) -> tuple[AbsorptionInputs, np.ndarray]:
    """Word-initial tokens of 8 letters, 100 ids each, every id twice. Residual: 4 x the letter's
    unit direction e_L plus unit noise. Codes: slot 0 is the letter's latent (id = letter index,
    decoder e_L), except on the absorbed token ids (the first ``absorbed_share`` of each letter's
    ids by a fixed draw), where latent ABSORBER0 + t fires instead, its decoder e_L + a
    token-specific direction (``aligned``) or that direction alone (no letter in it). Slots 1-3:
    small noise latents with random decoders. ``split_b``: letter b's latent fires only on its even
    ids and SPLIT_LATENT (decoder e_b + its own direction) on the odd ones. Returns the inputs and
    per token id whether it was planted as absorbed."""
    rng = np.random.default_rng(seed)
    n_ids = len(LETTERS) * IDS_PER_LETTER
    strings = {t: f" {LETTERS[t // IDS_PER_LETTER]}{t % IDS_PER_LETTER:02d}" for t in range(n_ids)}
    strings[n_ids] = "ing"  # a mid-word piece: in no letter
    tokens = rng.permutation(np.r_[np.repeat(np.arange(n_ids), REPEATS), np.full(50, n_ids)])
    letter = np.where(tokens < n_ids, tokens // IDS_PER_LETTER, 0)
    e = unit(rng.standard_normal((len(LETTERS), D)))
    residual = (signal * e[letter] + rng.standard_normal((len(tokens), D))).astype(np.float32)

    decoder = unit(rng.standard_normal((N_LATENTS, D)))
    decoder[:len(LETTERS)] = e
    token_dir = unit(rng.standard_normal((n_ids, D)))
    t_all = np.arange(n_ids)
    absorbed_id = rng.random(n_ids) < absorbed_share
    decoder[ABSORBER0 + t_all] = unit(e[t_all // IDS_PER_LETTER] + token_dir) if aligned else token_dir
    decoder[SPLIT_LATENT] = unit(e[1] + unit(rng.standard_normal(D)))

    indices = np.zeros((len(tokens), WIDTH), dtype=np.int32)
    values = np.zeros((len(tokens), WIDTH), dtype=np.float32)
    word = tokens < n_ids
    indices[:, 0] = letter
    values[:, 0] = np.where(word, 2.0 + 0.2 * rng.random(len(tokens)), 0.0)
    hit = word & absorbed_id[np.minimum(tokens, n_ids - 1)]
    indices[hit, 0] = ABSORBER0 + tokens[hit]
    if split_b:
        odd_b = word & (letter == 1) & (tokens % 2 == 1) & ~hit
        indices[odd_b, 0] = SPLIT_LATENT
    indices[:, 1:] = rng.integers(*NOISE, (len(tokens), WIDTH - 1))
    values[:, 1:] = rng.uniform(0.05, 0.3, (len(tokens), WIDTH - 1))
    inputs = AbsorptionInputs(layer=3, sizes=(N_LATENTS,), tokens=tokens, ordinary=np.ones(len(tokens), dtype=bool),
                              strings=strings, take=lambda rows: residual[np.asarray(rows)],
                              codes={N_LATENTS: Codes(indices, values)}, decoders={N_LATENTS: decoder})
    return inputs, absorbed_id


def planted_rate(result, absorbed_id: np.ndarray, inputs: AbsorptionInputs) -> float:
    """The planted absorption rate: per measured letter, the share of its probe true positives on
    planted token ids, averaged over letters."""
    test_tokens = inputs.tokens[result.split.rows_test]
    return float(np.mean([absorbed_id[test_tokens[p.true_positives]].mean() for p in result.probes]))


def test_the_rule_on_handmade_tokens() -> None:
    # direction p = e0; latent 0: cos 1, latent 1: cos 0.6 (proj 0.6), latent 2: cos 0.01, latent 3: cos -1
    projection = np.array([1.0, 0.6, 0.01, -1.0])
    cosine = np.array([1.0, 0.6, 0.01, -1.0])
    indices = np.array([[1, 2, 3], [1, 2, 3], [2, 3, 3], [1, 2, 3]])
    values = np.array([[1.0, 50.0, 1.0],  # 0.6 of 0.6 + 0.5 = 0.545 -> absorbed
                       [1.0, 80.0, 1.0],  # 0.6 of 1.4 = 0.43 -> absorbed at 0.4, not at 0.5
                       [1.0, 1.0, 1.0],   # no latent with cos >= 0.025
                       [0.0, 1.0, 1.0]])  # latent 1 silent (value 0)
    out = absorption(indices, values, projection, cosine, probe_cos=0.025, share=0.4)
    assert out.absorbed.tolist() == [True, True, False, False]
    assert out.absorber.tolist() == [1, 1, -1, -1]
    assert out.share[0] == pytest.approx(0.6 / 1.1)
    assert absorption(indices, values, projection, cosine, probe_cos=0.025, share=0.5).absorbed.tolist() == \
        [True, False, False, False]
    assert main_fires(indices, values, np.array([1])).tolist() == [True, True, False, False]


def test_planted_absorption_is_found_at_the_planted_rate_and_above_the_null() -> None:
    inputs, absorbed_id = planted(absorbed_share=0.3)
    cfg = AbsorptionConfig(**CFG)
    result = run_absorption(cfg, inputs)
    assert result.passes and len(result.probes) == len(LETTERS)
    # train and test never share a token id
    assert not set(inputs.tokens[result.split.rows_train]) & set(inputs.tokens[result.split.rows_test])
    letters = result.per_size[N_LATENTS]
    assert [s.main.latents.tolist() for s in letters] == [[i] for i in range(len(LETTERS))]
    truth = planted_rate(result, absorbed_id, inputs)
    assert 0.15 < truth < 0.45
    measured = float(np.mean([s.rate for s in letters]))
    assert measured == pytest.approx(truth, abs=0.03)
    assert float(np.mean([s.fn_rate for s in letters])) == pytest.approx(truth, abs=0.03)
    # every absorbed token's absorber is its own token's latent
    assert all(s.top_absorber >= ABSORBER0 for s in letters if s.absorbed)

    m = run(cfg, inputs).metrics
    assert m["n1024.absorption_rate"] == pytest.approx(measured)
    assert m["n1024.absorption_rate_ci_low"] <= measured <= m["n1024.absorption_rate_ci_high"]
    assert m["n1024.absorption_rate_null"] < measured - 0.1
    assert m["n1024.absorption_minus_null_ci_low"] > 0
    assert m["largest.absorption_rate"] == m["n1024.absorption_rate"] and m["letters"] == len(LETTERS)
    assert m["n1024.main_latent_f1"] < 0.95  # the letter latent misses the absorbed tokens
    assert m["gate.passes"] == 1 and m["gate.accuracy"] > 0.9


def test_without_absorption_the_rate_is_zero() -> None:
    inputs, _ = planted(absorbed_share=0.0)
    m = run(AbsorptionConfig(**CFG), inputs).metrics
    assert m["n1024.absorption_rate"] == 0 and m["n1024.false_negative_rate"] < 0.02
    assert m["n1024.main_latent_f1"] > 0.97


def test_a_silent_letter_latent_replaced_by_a_latent_without_the_letter_is_not_absorption() -> None:
    # false negatives, but the latent firing instead carries no letter direction: the rule finds
    # (almost) nothing there, and what it finds it finds along a random direction too
    inputs, absorbed_id = planted(absorbed_share=0.3, aligned=False)
    m = run(AbsorptionConfig(**CFG), inputs).metrics
    assert m["n1024.false_negative_rate"] > 0.15
    assert m["n1024.absorption_rate"] < 0.05
    assert abs(m["n1024.absorption_rate"] - m["n1024.absorption_rate_null"]) < 0.05
    assert m["n1024.absorption_minus_null_ci_low"] <= 0


def test_a_split_feature_is_a_main_latent_not_absorption() -> None:
    inputs, _ = planted(absorbed_share=0.0, split_b=True)
    result = run_absorption(AbsorptionConfig(**CFG), inputs)
    b = next(s for s in result.per_size[N_LATENTS] if s.letter == "b")
    assert sorted(b.main.latents.tolist()) == [1, SPLIT_LATENT]
    assert b.main.f1_train[1] - b.main.f1_train[0] > 0.03
    assert b.rate == 0 and b.fn_rate < 0.05
    # with the splitting threshold out of reach the second latent is not main: its tokens count as absorbed
    strict = run_absorption(AbsorptionConfig(**{**CFG, "split_threshold": 1.0}), inputs)
    b = next(s for s in strict.per_size[N_LATENTS] if s.letter == "b")
    assert len(b.main.latents) == 1 and 0.3 < b.rate < 0.7 and b.top_absorber in (1, SPLIT_LATENT)


def test_below_the_gate_the_section_says_absorption_cannot_be_measured(tmp_path: Path) -> None:
    inputs, _ = planted(absorbed_share=0.3, signal=0.0)  # the residual holds no letter
    out = run(AbsorptionConfig(**CFG), inputs)
    m = out.metrics
    assert m["gate.passes"] == 0 and "gate.accuracy" in m and "gate.majority" in m
    assert not any(("absorption" in k or "false_negative" in k) and not k.startswith("config.") for k in m)
    assert out.tables["summary"] == [] and out.tables["letters"] == []

    from saeatlas.analysis.absorption.section import section

    write_output(out, tmp_path / "out", tmp_path / "metrics.json", "hash")
    sec = section(m, tmp_path / "out")
    assert sec.missing_files(tmp_path / "out") == []
    assert "cannot be measured" in sec.summary and f"{m['gate.accuracy']:.3f}" in sec.summary


def test_the_section_of_a_measured_run_names_its_files_and_the_verdict(tmp_path: Path) -> None:
    from saeatlas.analysis.absorption.section import section

    inputs, _ = planted(absorbed_share=0.3)
    out = run(AbsorptionConfig(**CFG), inputs)
    write_output(out, tmp_path / "out", tmp_path / "metrics.json", "hash")
    sec = section(out.metrics, tmp_path / "out")
    assert sec.missing_files(tmp_path / "out") == []
    assert "lies above the random-direction null (0.2" in sec.summary and "no trend" in sec.summary
    assert len(out.tables["letters"]) == len(LETTERS)


def test_absorption_that_grows_with_size_is_read_as_rising() -> None:
    from saeatlas.analysis.absorption.section import verdict

    # the same tokens and residual; the larger dictionary absorbs a superset of the smaller's token ids
    small, _ = planted(absorbed_share=0.1)
    large, _ = planted(absorbed_share=0.5)
    extra = unit(np.random.default_rng(9).standard_normal((N_LATENTS, D)))
    small.sizes = (N_LATENTS, 2 * N_LATENTS)
    small.codes[2 * N_LATENTS] = Codes(large.codes[N_LATENTS].indices, large.codes[N_LATENTS].values, 2 * N_LATENTS)
    small.decoders[2 * N_LATENTS] = np.vstack([large.decoders[N_LATENTS], extra])
    m = run(AbsorptionConfig(**CFG), small).metrics
    assert m["n2048.absorption_rate"] > m["n1024.absorption_rate"] + 0.2
    assert m["absorption_rate_change_ci_low"] > 0.1
    text = verdict(m)
    assert "above the random-direction null at 2 of 2 sizes and rises with size" in text


@pytest.mark.parametrize("values, message", [
    ({"absorption_share": 0.0}, r"absorption\.absorption_share: must be > 0"),
    ({"probe_cos": 1.5}, r"absorption\.probe_cos: must be <= 1"),
    ({"split_threshold": -0.1}, r"absorption\.split_threshold: must be >= 0"),
    ({"train_fraction": 1.0}, r"absorption\.train_fraction"),
    ({"max_main_latents": 0}, r"absorption\.max_main_latents"),
])
def test_bad_settings_are_refused_by_name(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AbsorptionConfig(**values)
    with pytest.raises(ValueError, match=message):
        AbsorptionConfig.from_params(values)


def test_bad_inputs_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"absorption: unknown key\(s\) \['share'\]"):
        AbsorptionConfig.from_params({"share": 0.4})
    inputs, _ = planted()
    inputs.decoders = {N_LATENTS: inputs.decoders[N_LATENTS][:10]}
    with pytest.raises(ValueError, match="decoder has 10 rows, codes 1024 latents"):
        run(AbsorptionConfig(**CFG), inputs)
