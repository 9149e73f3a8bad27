"""The probing analysis on planted truth: a concept one latent carries is found at k = 1 (and that
latent is the one chosen) while k random latents stay at chance; a concept spread over several
latents needs k > 1; labels from token strings are right on handmade tokens; the first-letter
gate reads a linearly planted letter and not shuffled labels; a task without enough examples is
skipped with its reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from saeatlas.analysis.probing.compute import (ProbingInputs, build_tasks, context_rows, run, run_gate,
                                               run_probes)
from saeatlas.analysis.probing.config import ProbingConfig
from saeatlas.analysis.probing.gate import first_letter_gate, letter_split
from saeatlas.analysis.common.first_letter import first_letter
from saeatlas.analysis.probing.tasks import (Skipped, TaskSplit, balanced_split, context_domains, id_labels,
                                             is_capitalised, is_digit, starts_with_space, token_task_labels)

N_LATENTS, WIDTH, D, POSITIONS = 64, 4, 16, 16
DIGIT_IDS = range(0, 50)  # token ids whose strings hold digits
CONCEPT_LATENT = 7


@dataclass
class Codes:
    indices: np.ndarray
    values: np.ndarray
    n_latents: int = N_LATENTS


def vocabulary() -> dict[int, str]:
    """50 digit tokens, then 200 word pieces with and without a leading space, some capitalised."""
    strings = {i: (f" {i}" if i % 2 else f"{i}") for i in DIGIT_IDS}
    for i in range(50, 250):
        word = "abcdefghij"[i % 10] + "ox" * (1 + i % 3)
        strings[i] = (" " if (i // 10) % 2 else "") + (word.capitalize() if (i // 20) % 2 else word)
    return strings


def planted_inputs(spread: int, n_rows: int = 8000, seed: int = 0) -> ProbingInputs:
    """Rows of random tokens; every row has WIDTH - 1 noise latents (ids >= 10, random values). The
    is_digit concept is carried by one latent (``spread`` = 1: CONCEPT_LATENT on every digit token)
    or by ``spread`` latents 0..spread-1, each on its own share of the digit token ids."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 250, n_rows)
    noise = np.argsort(rng.random((n_rows, N_LATENTS - 10)), axis=1)[:, :WIDTH - 1] + 10
    values = np.zeros((n_rows, WIDTH), dtype=np.float32)
    indices = np.zeros((n_rows, WIDTH), dtype=np.int32)
    indices[:, :WIDTH - 1] = noise
    values[:, :WIDTH - 1] = rng.uniform(0.1, 1.0, (n_rows, WIDTH - 1))
    digit = tokens < 50
    indices[digit, -1] = CONCEPT_LATENT if spread == 1 else tokens[digit] % spread
    values[digit, -1] = 2.0 + rng.random(int(digit.sum()))
    n_ctx = n_rows // POSITIONS
    domains = np.repeat(np.arange(n_ctx) % 2, POSITIONS)  # alternating contexts: code, wiki
    residual = rng.standard_normal((n_rows, D)).astype(np.float32)
    return ProbingInputs(layer=3, sizes=(N_LATENTS,), tokens=tokens, domains=domains, domain_names=("code", "wiki"),
                         ordinary=np.ones(n_rows, dtype=bool), positions_per_context=POSITIONS,
                         strings=vocabulary(), take=lambda rows: residual[np.asarray(rows)],
                         codes={N_LATENTS: Codes(indices, values)})


CONFIG = dict(k_values=(1, 2, 5), tokens_per_class=800, random_draws=4, max_iter=300, first_letter_per_class=60,
              min_examples_per_class=10)


def task(result, name):
    return next(t for t in result.tasks if t.split.name == name)


def test_a_concept_one_latent_carries_is_found_at_k1_and_random_latents_stay_at_chance() -> None:
    result = run_probes(ProbingConfig(**CONFIG), planted_inputs(spread=1))
    t = task(result, "is_digit")
    assert t.latents[N_LATENTS][0] == CONCEPT_LATENT
    assert t.top[N_LATENTS][1].accuracy > 0.97
    assert t.top[N_LATENTS][1].ci_low > 0.9
    random_k1 = np.mean([s.accuracy for s in t.random[N_LATENTS][1]])
    assert abs(random_k1 - 0.5) < 0.1
    # the residual here is pure noise: its probe sits at chance too
    assert abs(t.residual.accuracy - 0.5) < 0.1
    # train and test never share a token id (split by token id)
    assert not set(planted_inputs(1).tokens[t.split.train]) & set(planted_inputs(1).tokens[t.split.test])


def test_a_concept_spread_over_several_latents_needs_a_larger_k() -> None:
    result = run_probes(ProbingConfig(**CONFIG), planted_inputs(spread=5))
    t = task(result, "is_digit")
    k1, k5 = t.top[N_LATENTS][1].accuracy, t.top[N_LATENTS][5].accuracy
    assert set(t.latents[N_LATENTS][:5]) == set(range(5))
    assert k5 > 0.97
    assert k1 < 0.75 and k1 + 0.2 < k5
    assert t.top[N_LATENTS][1].ci_high < t.top[N_LATENTS][5].ci_low


def test_labels_from_token_strings_on_handmade_tokens() -> None:
    assert [is_digit(s) for s in ("2024", " 7", "x9", "abc", " the", "")] == [1, 1, 1, 0, 0, 0]
    assert [is_capitalised(s) for s in (" Paris", "The", " the", "apple", " 42", ".", "", "  Über")] == \
        [1, 1, 0, 0, None, None, None, 1]
    assert [starts_with_space(s) for s in (" the", "the", "  x", "\nx", "")] == [1, 0, 1, 0, None]
    assert [first_letter(s) for s in (" Apple", " zoo", "apple", " 9", " é", " ", "  a")] == \
        ["a", "z", None, None, None, None, None]
    strings = {5: " Cat", 6: "42", 7: "dog"}
    labels = id_labels(np.array([7, 5, 6, 5]), strings, is_capitalised)
    assert labels.tolist() == [0, 1, -1, 1]
    with pytest.raises(ValueError, match=r"no string for token id\(s\) \[9\]"):
        id_labels(np.array([5, 9]), strings, is_digit)
    per_task = token_task_labels(np.array([5, 6, 7]), strings, np.array([1, 0, 1]), ("code", "wiki"))
    assert per_task["is_code_token"].tolist() == [0, 1, 0]
    assert per_task["starts_with_space"].tolist() == [1, 0, 0]
    assert "is_code_token" not in token_task_labels(np.array([5]), strings, np.array([0]), ("wiki",))


def test_contexts_take_their_majority_domain_only_when_it_is_pure_enough() -> None:
    # four contexts of 4 rows: pure 0; 3 of 4 from 1; half and half; pure 1 with one outlier row
    domains = np.array([0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0])
    ordinary = np.ones(16, dtype=bool)
    ordinary[15] = False  # the outlier row of the last context does not count
    assert context_domains(domains, ordinary, 4, 2, 0.75).tolist() == [0, 1, -1, 1]
    assert context_domains(domains, ordinary, 4, 2, 1.0).tolist() == [0, -1, -1, 1]


def test_context_features_are_means_over_ordinary_rows() -> None:
    inputs = planted_inputs(spread=1, n_rows=64)
    ordinary = np.ones(64, dtype=bool)
    ordinary[[1, 17]] = False
    rows, pool = context_rows(np.array([0, 1]), POSITIONS, ordinary)
    assert rows.tolist() == [r for r in range(32) if r not in (1, 17)]
    resid = inputs.take(np.arange(64))
    pooled = pool @ inputs.take(rows)
    np.testing.assert_allclose(pooled[0], resid[[r for r in range(16) if r != 1]].mean(0), rtol=1e-5)
    np.testing.assert_allclose(pooled[1], resid[[r for r in range(16, 32) if r != 17]].mean(0), rtol=1e-5)


def letter_inputs(d: int = 32, per_letter_ids: int = 8, seed: int = 0) -> tuple[ProbingInputs, np.ndarray]:
    """Word-initial tokens of 26 letters with unequal frequencies (a is the commonest); the
    residual is the letter's embedding plus noise: the letter is linearly readable."""
    rng = np.random.default_rng(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    strings = {i: f" {letters[i // per_letter_ids]}{'q' * (i % per_letter_ids + 1)}"
               for i in range(26 * per_letter_ids)}
    strings[999] = "ing"  # a mid-word piece: not in the gate
    weights = np.repeat(np.linspace(3.0, 1.0, 26), per_letter_ids)
    tokens = rng.choice(26 * per_letter_ids, size=6000, p=weights / weights.sum())
    tokens[::50] = 999
    embed = rng.standard_normal((26, d)) * 1.5
    letter = np.array([letters.index(strings[t][1]) if t != 999 else 0 for t in tokens])
    residual = (embed[letter] + rng.standard_normal((len(tokens), d))).astype(np.float32)
    inputs = ProbingInputs(layer=0, sizes=(N_LATENTS,), tokens=tokens, domains=np.zeros(len(tokens), dtype=np.int64),
                           domain_names=("wiki",), ordinary=np.ones(len(tokens), dtype=bool),
                           positions_per_context=POSITIONS, strings=strings, take=lambda rows: residual[rows],
                           codes={})
    return inputs, residual


def test_the_first_letter_gate_reads_a_planted_letter_and_not_shuffled_labels() -> None:
    cfg = ProbingConfig(**{**CONFIG, "first_letter_per_class": 200})
    inputs, residual = letter_inputs()
    gate = run_gate(cfg, inputs)
    assert gate.estimated and len(gate.letters) == 26
    assert gate.score.accuracy > 0.9 and gate.passes(cfg.gate_factor)
    assert gate.chance == pytest.approx(1 / 26)
    assert gate.majority < 0.1
    assert gate.shuffled.accuracy < gate.majority + 0.05
    # the same probe on shuffled labels: near (not above) the majority baseline, and the gate fails
    split = letter_split(inputs.tokens, inputs.strings, inputs.ordinary, cfg, np.random.default_rng(1))
    assert not set(inputs.tokens[split.rows_train]) & set(inputs.tokens[split.rows_test])
    assert all(inputs.strings[int(t)].startswith(" ") for t in inputs.tokens[split.rows_train])
    shuffled = np.random.default_rng(2).permutation(split.y_train)
    null = first_letter_gate(residual[split.rows_train], shuffled, residual[split.rows_test], split.y_test, cfg,
                             np.random.default_rng(3))
    assert null.score.accuracy < null.majority + 0.05
    assert not null.passes(cfg.gate_factor)


def test_a_task_with_too_few_examples_is_skipped_with_its_reason(tmp_path: Path) -> None:
    inputs = planted_inputs(spread=1)
    # only 3 contexts of the "docs" domain: its domain task cannot be balanced
    domains = np.asarray(inputs.domains).copy()
    domains[:3 * POSITIONS] = 2
    inputs.domains, inputs.domain_names = domains, ("code", "wiki", "docs")
    cfg = ProbingConfig(**CONFIG)
    built = {t.name: t for t in build_tasks(cfg, inputs)}
    assert isinstance(built["domain_docs"], Skipped)
    assert "3 positive examples, fewer than min_examples_per_class = 10" in built["domain_docs"].reason
    assert isinstance(built["domain_code"], TaskSplit) and isinstance(built["is_digit"], TaskSplit)

    out = run(cfg, inputs)
    assert out.metrics["task.domain_docs.estimated"] == 0 and out.metrics["task.is_digit.estimated"] == 1
    assert out.metrics["tasks_skipped"] == 1
    assert "n64.domain_docs.k1.accuracy" not in out.metrics
    assert any(r["task"] == "domain_docs" and "fewer than" in r["reason"] for r in out.tables["tasks"])
    notes = out.documents["probing_summary"]["notes"]
    assert any(n.startswith("task domain_docs (context) skipped: 3 positive examples") for n in notes)

    # and the report section says so, from the written files
    from saeatlas.analysis.common.output import write_output
    from saeatlas.analysis.probing.section import section

    write_output(out, tmp_path / "out", tmp_path / "metrics.json", "hash")
    sec = section(out.metrics, tmp_path / "out")
    assert sec.missing_files(tmp_path / "out") == []
    assert any("domain_docs" in n for n in sec.notes)
    assert "absorption" in sec.summary


def test_a_split_that_leaves_a_side_empty_is_skipped() -> None:
    # one positive token id only: the split by token id cannot put it on both sides
    y = np.r_[np.ones(30, dtype=np.int8), np.zeros(30, dtype=np.int8)]
    groups = np.r_[np.full(30, 7), np.arange(100, 130)]
    out = balanced_split("t", "token", np.arange(60), y, groups, 100, 0.8, 10, np.random.default_rng(0))
    assert isinstance(out, Skipped) and "left no" in out.reason


def test_the_whole_run_writes_metrics_and_balanced_splits() -> None:
    cfg = ProbingConfig(**CONFIG)
    out = run(cfg, planted_inputs(spread=1))
    m = out.metrics
    assert m["n64.is_digit.top_latent"] == CONCEPT_LATENT
    assert m["n64.is_digit.k1.accuracy"] > 0.97 and abs(m["n64.is_digit.k1.random"] - 0.5) < 0.1
    for k in cfg.k_values:
        assert m[f"largest.k{k}.mean_accuracy_ci_low"] <= m[f"largest.k{k}.mean_accuracy"] <= \
            m[f"largest.k{k}.mean_accuracy_ci_high"]
    assert m["first_letter.estimated"] == 1 and "first_letter.majority" in m
    for t in run_probes(cfg, planted_inputs(spread=1)).tasks:
        assert (t.split.y_train == 1).sum() == (t.split.y_train == 0).sum()
        assert (t.split.y_test == 1).sum() == (t.split.y_test == 0).sum()
        assert not set(t.split.train) & set(t.split.test)


def test_bad_settings_and_inputs_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="probing.k_values must be strictly ascending"):
        ProbingConfig(k_values=(5, 1))
    with pytest.raises(ValueError, match=r"probing\.train_fraction"):
        ProbingConfig(train_fraction=1.0)
    inputs = planted_inputs(spread=1, n_rows=64)
    inputs.ordinary = inputs.ordinary[:10]
    with pytest.raises(ValueError, match="ordinary has 10 rows, tokens 64"):
        run(ProbingConfig(**CONFIG), inputs)


def test_domain_tasks_keep_each_document_on_one_side_of_the_split() -> None:
    """Contexts cut from one long document would let a probe recognise the document rather
    than the domain: with document ids, the split groups contexts by their majority document."""
    from dataclasses import replace

    inputs = planted_inputs(spread=1)
    n_ctx = len(inputs.tokens) // POSITIONS
    docs = np.repeat(np.arange(n_ctx) // 4, POSITIONS)  # 4 consecutive contexts per document
    domains = np.repeat((np.arange(n_ctx) // 4) % 2, POSITIONS)  # one domain per document
    inputs = replace(inputs, doc_ids=docs, domains=domains)
    config = ProbingConfig(**CONFIG)
    tasks = [t for t in build_tasks(config, inputs) if isinstance(t, TaskSplit) and t.level == "context"]
    assert tasks
    for task in tasks:
        train_docs, test_docs = set(task.train // 4), set(task.test // 4)
        assert train_docs and test_docs and not train_docs & test_docs, task.name
    # without document ids each context is its own group, and documents straddle the split
    leaky = [t for t in build_tasks(config, replace(inputs, doc_ids=None)) if isinstance(t, TaskSplit)
             and t.level == "context"]
    assert any(set(t.train // 4) & set(t.test // 4) for t in leaky)
