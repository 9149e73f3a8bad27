"""The feature browser's data layer, checked against brute force on small random codes: histograms,
co-firing partners, ragged columns, the records a page reads, and the escaping of what it embeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from saeatlas.codes import CodeWriter, SparseCodes
from saeatlas.errors import StoreError
from saeatlas.report.browser_data import (Groups, Ragged, activation_histograms, children_for, cofiring,
                                          parents_for, top_k_rows)
from saeatlas.report.browser_records import rounded, search_entry
from saeatlas.report.escape import js_literal
from saeatlas.tokenise import token_bytes


def random_codes(tmp_path: Path, n_tokens: int = 300, width: int = 4, n: int = 12, seed: int = 0) -> SparseCodes:
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(n, size=width, replace=False) for _ in range(n_tokens)]).astype(np.int32)
    val = rng.exponential(1.0, size=(n_tokens, width)).astype(np.float32)
    val[rng.random((n_tokens, width)) < 0.3] = 0.0  # unused slots
    writer = CodeWriter(tmp_path / "codes", n_tokens, width, n)
    for start in range(0, n_tokens, 64):
        writer.append(idx[start:start + 64], val[start:start + 64])
    writer.finish()
    return SparseCodes.open(tmp_path / "codes")


def dense(codes: SparseCodes) -> np.ndarray:
    out = np.zeros((codes.n_tokens, codes.n_latents), np.float32)
    rows = np.repeat(np.arange(codes.n_tokens), codes.indices.shape[1])
    np.add.at(out, (rows, np.asarray(codes.indices).ravel()), np.asarray(codes.values).ravel())
    return out


def test_histograms_count_every_firing_once_in_its_linear_bin(tmp_path: Path) -> None:
    codes = random_codes(tmp_path)
    counts, peak = activation_histograms(codes, bins=5)
    d = dense(codes)
    for f in range(codes.n_latents):
        fired = d[:, f][d[:, f] > 0]
        assert peak[f] == pytest.approx(fired.max())
        expected = np.histogram(fired, bins=5, range=(0, fired.max()))[0]
        assert counts[f].tolist() == expected.tolist()


def test_cofiring_partners_are_the_top_jaccard_features_by_brute_force(tmp_path: Path) -> None:
    codes = random_codes(tmp_path, n_tokens=400, n=15, seed=3)
    b = (dense(codes) > 0).astype(np.int64)
    shared = b.T @ b
    fire = b.sum(axis=0)
    jac = shared / np.maximum(fire[:, None] + fire[None, :] - shared, 1)
    np.fill_diagonal(jac, -1)
    for block in (10_000, 30):  # one block, and several blocks of two rows
        got = cofiring(codes, k=3, block_elements=block)
        for f in range(codes.n_latents):
            best = sorted(range(codes.n_latents), key=lambda g: (-jac[f, g], g))[:3]
            assert got.partner[f].tolist() == best
            assert got.shared[f].tolist() == [shared[f, g] for g in best]
            assert got.jaccard[f] == pytest.approx([jac[f, g] for g in best], rel=1e-5)
        assert got.firings.tolist() == fire.tolist()


def test_top_k_rows_breaks_ties_by_lower_index() -> None:
    score = np.array([[0.5, 0.9, 0.5, 0.1], [0.0, 0.0, 0.0, 0.0]])
    assert top_k_rows(score, 3).tolist() == [[1, 0, 2], [0, 1, 2]]
    # Ties across the cut: the lowest indices win, whatever the row's length.
    rng = np.random.default_rng(0)
    ties = rng.choice([0.0, 0.5, 1.0], size=(200, 40))
    brute = [sorted(range(40), key=lambda j: (-row[j], j))[:5] for row in ties]
    assert top_k_rows(ties, 5).tolist() == brute


def test_ragged_take_gathers_lists_in_any_row_order() -> None:
    r = Ragged(np.array([1, 2, 3, 4, 5, 6]), np.array([0, 2, 2, 5, 6]))
    assert r.take(np.array([3, 0, 1, 2]), lambda v: v.tolist()) == [[6], [1, 2], [], [3, 4, 5]]


def test_a_feature_id_outside_the_dictionary_names_the_file_and_field() -> None:
    with pytest.raises(StoreError, match=r"matches.csv: field 'feature' holds 0..9, outside 0..4"):
        Groups.by(np.array([0, 9, 2]), (), 5, Path("matches.csv"), "feature")


def test_parents_and_children_come_from_the_adjacent_size_only() -> None:
    matches = {"small_size": np.array([4, 4, 4, 2]), "large_size": np.array([8, 8, 8, 4]),
               "feature": np.array([0, 1, 2, 3]), "dec_parent": np.array([3, 3, 1, 0]),
               "dec_cos": np.array([0.7, 0.9, 0.8, 0.6]), "class": np.array(["split", "split", "identical", "novel"],
                                                                            dtype=object)}
    kids = children_for(matches, 4, 4, Path("m.csv"))
    assert kids.size == 8
    assert kids.table["feature"][kids.groups.of(3)].tolist() == [1, 0]  # by cosine, best first
    parents = parents_for(matches, 8, 3, Path("m.csv"))
    assert parents.size == 4 and parents.table["dec_parent"][parents.groups.of(2)].tolist() == [1]


def test_rounding_keeps_a_firing_token_nonzero_and_zeros_as_int() -> None:
    assert rounded(np.array([0.0, 0.00004, 1.23456]), 3) == [0, 0.001, 1.235]
    assert isinstance(rounded(np.array([0.0]), 3)[0], int)


def test_search_entry_lists_the_logit_and_firing_tokens_once() -> None:
    record = {"id": 7, "count": 3, "logit_top": [[1, 2.0], [2, 1.0]],
              "top": [[1.0, 0, 0, 1, [0, 1, 2], [0, 0.5, 0.2]]]}
    assert search_entry(record, ["a", " b", "<c>"], [b"a", b" b", b"<c>"]) == [7, 3, [" b", "<c>"], "a b<c>"]
    # One character over two tokens: each alone is U+FFFD, the window's text is whole.
    split = {"id": 1, "count": 1, "logit_top": [], "top": [[1.0, 0, 0, 0, [0, 1], [1.0, 0]]]}
    assert search_entry(split, ["\ufffd", "\ufffd"], [b"\xe2\x80", b"\xae"])[3] == "\u202e"


def test_js_literal_cannot_close_a_script_and_round_trips() -> None:
    payload = ["</script><script>alert(1)</script>", "a&b", "\u2028\u2029", "\x00\x07", "{{ 7*7 }}", "\u202eevil"]
    text = js_literal(payload)
    for bad in ("<", ">", "&", "\u2028", "\u2029", "\x00"):
        assert bad not in text
    assert json.loads(text) == payload


def test_token_bytes_rebuild_the_text_a_tokenizer_encoded(tokenizer) -> None:
    """Joined per-token bytes decode to the original text, even where one character spans tokens
    (a bidi override, an emoji, CJK): what the browser's TextDecoder relies on."""
    vocab = token_bytes(tokenizer)
    assert len(vocab) == len(tokenizer)
    text = "It said \u202eevil\u202c, a NUL \x00 here, caf\u00e9 \U0001F600 \u6f22\u5b57 </script>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert any(vocab[i].decode("utf-8", errors="replace") != vocab[i].decode("utf-8", errors="ignore")
               for i in ids)  # some token holds only part of a character
    assert b"".join(vocab[i] for i in ids).decode("utf-8") == text


def test_the_lobe_shown_is_the_nearest_partition_the_table_has(tmp_path: Path) -> None:
    from saeatlas.report.browser_data import lobes_for

    table = tmp_path / "lobe_assignments.csv"
    table.write_text("feature,lobe_k2,lobe_k4,geom_k8\n0,1,3,0\n2,0,2,1\n")
    k, lobes = lobes_for(table, 4, 8)  # no k=8 partition (too few features for it): the nearest
    assert k == 4 and lobes.tolist() == [3, -1, 2, -1]
    table.write_text("feature,firings\n0,5\n")
    assert lobes_for(table, 4, 8) is None  # no partition at all
    table.write_text("\n")
    assert lobes_for(table, 4, 8) is None  # no feature analysed
    table.write_text("feature,lobe_k8\nx\n")
    with pytest.raises(StoreError, match=r"lobe_assignments.csv: not a readable CSV table \(CSV parse error"):
        lobes_for(table, 4, 8)
    table.write_text("lobe_k8\n1\n")
    with pytest.raises(StoreError, match=r"lobe_assignments.csv: no column 'feature'"):
        lobes_for(table, 4, 8)
    assert lobes_for(None, 4, 8) is None  # the lobes stage did not run: no lobe shown


def test_a_umap_row_for_a_feature_the_size_lacks_is_damaged_data(tmp_path: Path) -> None:
    from saeatlas.report.browser_data import umap_for

    table = {"size": np.array([4, 4]), "feature": np.array([0, 7]), "x": np.array([0.0, 1.0]),
             "y": np.array([0.0, 1.0]), "joint_x": np.array([0.0, np.nan]), "joint_y": np.array([0.0, np.nan])}
    with pytest.raises(StoreError, match=r"umap.csv: field 'feature' holds 0..7, outside 0..3"):
        umap_for(table, 4, 4, Path("umap.csv"))


def test_without_a_joint_map_the_joint_coordinates_are_missing_not_an_error() -> None:
    from saeatlas.report.browser_data import umap_for

    table = {"size": np.array([4]), "feature": np.array([2]), "x": np.array([0.5]), "y": np.array([1.5])}
    out = umap_for(table, 4, 4, Path("umap.csv"))
    assert out[2, :2].tolist() == [0.5, 1.5] and np.isnan(out[2, 2:]).all() and np.isnan(out[0]).all()


def test_a_jobs_wall_clock_runs_to_its_logs_last_write(tmp_path: Path) -> None:
    """A stage whose log ends in a progress bar (no timestamp) still gets its whole duration."""
    import os
    from datetime import datetime

    from saeatlas.report.core_sections import stage_seconds

    log = tmp_path / "train_sae-layer15-size8.log"
    log.write_text("2026-01-02 10:00:00,000 INFO saeatlas: start\ntraining: 100%|####| 5/5\n")
    end = datetime(2026, 1, 2, 10, 20, 30).timestamp()
    os.utime(log, (end, end))
    assert stage_seconds(tmp_path) == [{"job": "train_sae-layer15-size8", "seconds": 1230.0}]
