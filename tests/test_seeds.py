"""The seed-spread analysis: the spread it reports is the spread of the numbers it was given
(planted), a seed that did not estimate a number is left out rather than imputed, and bad
settings are refused naming the key."""

from __future__ import annotations

import math

import pytest

from saeatlas.analysis.seeds.compute import SeedsInputs, run
from saeatlas.analysis.seeds.config import SeedsConfig


def test_spread_is_the_planted_one_with_the_within_seed_interval_beside_it() -> None:
    per_seed = {0: {"a": 0.30, "a_ci_low": 0.29, "a_ci_high": 0.31, "b": 2.0},
                1: {"a": 0.36, "b": float("nan")},
                2: {"a": 0.33}}
    out = run(SeedsInputs(0, per_seed, ("a", "b")))
    m = out.metrics
    assert m["n_seeds"] == 3 and m["a.n_seeds"] == 3
    assert m["a.mean"] == pytest.approx(0.33)
    assert m["a.sd"] == pytest.approx(0.03)  # sample sd of 0.30, 0.36, 0.33
    assert (m["a.min"], m["a.max"]) == (pytest.approx(0.30), pytest.approx(0.36))
    assert (m["a.within_ci_low"], m["a.within_ci_high"]) == (0.29, 0.31)
    assert m["a.seed1"] == pytest.approx(0.36)
    # b: estimated by one seed only: no sd, no imputed values for the others
    assert m["b.n_seeds"] == 1 and "b.sd" not in m and "b.seed1" not in m
    rows = {(r["seed"], r["headline"]): r["value"] for r in out.tables["per_seed"]}
    assert rows[(1, "b")] is None and rows[(2, "b")] is None and rows[(0, "b")] == 2.0
    assert all(math.isfinite(v) for v in m.values())
    assert "seed_spread" in out.figures


def test_the_study_seed_must_be_there() -> None:
    with pytest.raises(ValueError, match="the study's seed 5 has no metrics"):
        run(SeedsInputs(5, {0: {"a": 1.0}}, ("a",)))


@pytest.mark.parametrize("section, message", [
    ({"extra": [1, 1]}, "seeds.extra"),
    ({"extra": [-1]}, "seeds.extra"),
    ({"max_size": 0}, "seeds.max_size"),
    ({"lobes_k": 1.5}, "seeds.lobes_k"),
    ({"extras": [1]}, "unknown key"),
])
def test_bad_settings_name_the_key(section: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SeedsConfig.from_params(section)
