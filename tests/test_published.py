"""The published numbers file: every entry is complete and sourced, bad entries are refused with
the entry named, and each analysis writes its published figures beside its own numbers."""

from __future__ import annotations

import pytest

from saeatlas.analysis.common import published
from saeatlas.pipeline import ANALYSES


def test_every_entry_is_sourced_and_keys_are_unique() -> None:
    entries = published.load()
    assert {"galaxy", "lobes", "splitting", "scaling"} <= set(entries)
    keys = [p.key for group in entries.values() for p in group.values()]
    assert len(keys) == len(set(keys))
    for group in entries.values():
        for p in group.values():
            assert p.paper and p.where and p.model and p.protocol and p.hand in ("first", "second")
            assert p.label().startswith(f"≈ {p.value:g} (")
    # The numbers REFERENCES.md states, spot-checked: a typo here would go straight into the report.
    assert published.value("galaxy", "li2024_slope_layer12") == 0.468
    assert published.value("galaxy", "li2024_slope_gaussian") == 0.028
    assert published.value("splitting", "leask2025_similar_fraction") == 0.65
    assert "second-hand" in published.label("splitting", "leask2025_similar_fraction")


def test_every_analysis_name_in_the_file_is_a_stage() -> None:
    assert set(published.load()) <= {s.name for s in ANALYSES} | {"neurons", "probing", "absorption"}


GOOD = {"value": 0.5, "paper": "P", "where": "Fig. 1", "model": "M", "layer": 3, "hand": "first", "protocol": "x"}


@pytest.mark.parametrize("change, message", [
    ({"value": float("nan")}, "a.b.value must be a finite number"),
    ({"value": "0.5"}, "a.b.value must be a finite number"),
    ({"value": True}, "a.b.value must be a finite number"),
    ({"hand": "third"}, "a.b.hand must be one of"),
    ({"layer": 1.5}, "a.b.layer must be an integer or null"),
    ({"extra": 1}, "unknown ['extra']"),
])
def test_a_bad_entry_is_refused_naming_it(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        published.parse({"a": {"b": {**GOOD, **change}}})
    assert message in str(err.value)


def test_a_missing_field_or_a_repeated_name_is_refused() -> None:
    entry = {k: v for k, v in GOOD.items() if k != "where"}
    with pytest.raises(ValueError, match=r"a\.b: missing \['where'\]"):
        published.parse({"a": {"b": entry}})
    with pytest.raises(ValueError, match="b appears under both a and c"):
        published.parse({"a": {"b": GOOD}, "c": {"b": GOOD}})
    assert published.parse({"a": {"b": GOOD}})["a"]["b"].layer == 3
    with pytest.raises(KeyError, match="no published figure galaxy.nope"):
        published.published("galaxy", "nope")


def test_reference_metrics_carry_every_figure_of_the_analysis() -> None:
    metrics = published.reference_metrics("splitting")
    assert metrics == {"reference.leask2025_similar_fraction": 0.65, "reference.leask2025_novel_fraction": 0.35}
    assert published.reference_metrics("no-such-analysis") == {}


def test_the_comparison_table_reads_ours_and_the_protocol_from_the_written_metrics(tmp_path) -> None:
    """Each ``compare`` entry becomes a row: our key and the protocol's key read from the analysis's
    metrics (the largest size's file for a per-size analysis); a key the study did not estimate is
    n/a, never a number."""
    import json

    from saeatlas.report.comparison import comparison_rows, markdown
    from saeatlas.pipeline import STAGE

    metrics = {
        "galaxy": {"largest.slope": 0.2, "largest.slope_goc": 0.34, "largest.slope_gaussian": 0.04},
        "lobes": {"k2.ami": 0.001, "goc.k2.ami": 0.0004},
    }

    def where(stage: str, output: str, **w: int):
        path = tmp_path / f"{stage}-{w.get('size', 'all')}.json"
        if not path.exists():
            path.write_text(json.dumps(metrics.get(stage, {}) if w.get("size", 512) == 512 else {"k2.ami": 9.0}))
        return path

    rows = comparison_rows(15, (256, 512), (STAGE["galaxy"], STAGE["lobes"]), where)
    by = {(r["analysis"], r["figure"]): r for r in rows}
    slope = by[("galaxy", "li2024_slope_layer12")]
    assert (slope["ours"], slope["published_protocol"], slope["published"]) == (0.2, 0.34, 0.468)
    assert by[("galaxy", "li2024_slope_gaussian")]["published_protocol"] is None  # not in the metrics
    ami = by[("lobes", "li2024_ami_k2")]
    assert (ami["size"], ami["ours"], ami["published_protocol"]) == (512, 0.001, 0.0004)  # the largest size
    table = markdown(rows)
    assert "| galaxy: li2024_slope_layer12 | 0.2 | 0.34 | 0.468 |" in table
    assert "| lobes: li2024_ami_k2 (n = 512) | 0.001 | 0.0004 | 0.06 (second-hand) |" in table
