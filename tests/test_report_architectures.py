"""The "Across architectures" section: rows read from each architecture's written metrics (where
the stage table puts them), verdicts that say "differs" only when intervals allow it, and the
report stage placing the section for a study of several architectures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from saeatlas import config
from saeatlas.report.architectures import architecture_rows, markdown, verdict

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


# absorption rate and interval per (architecture, size): TopK's and Matryoshka's intervals apart
# at 512, BatchTopK's overlapping TopK's
ABSORPTION = {("topk", 256): (0.04, 0.03, 0.05), ("topk", 512): (0.06, 0.05, 0.07),
              ("batchtopk", 256): (0.05, 0.04, 0.06), ("batchtopk", 512): (0.065, 0.055, 0.075),
              ("matryoshka", 256): (0.01, 0.005, 0.015), ("matryoshka", 512): (0.012, 0.008, 0.016)}


def plant(root: Path, params: config.Params) -> None:
    """Each architecture's metrics where the stage table puts them (``adapters.path``)."""
    from saeatlas.adapters import path

    k = min(params.section("lobes.k_values"), key=lambda v: (abs(v - 8), v))
    for arch in params.sae.architectures:
        p = params.for_architecture(arch)
        where = lambda stage, output, **w: root / path(stage, output, p, layer=15, **w)  # noqa: E731
        _write(where("absorption", "metrics"), {
            f"n{n}.{key}": ABSORPTION[arch, n][i] for n in (256, 512)
            for i, key in enumerate(("absorption_rate", "absorption_rate_ci_low", "absorption_rate_ci_high"))}
            | {f"n{n}.absorption_rate_null": 0.001 for n in (256, 512)})
        _write(where("splitting", "metrics"), {"pair_256_512.split_child_fraction": 0.2 if arch == "topk" else 0.1,
                                               "pair_256_512.split_child_fraction_null": 0.0})
        _write(where("galaxy", "metrics"), {"n512.slope_goc": 0.3, "n512.slope_goc_gaussian": 0.1})
        if arch == "topk":  # the seeds stage retrained 256 only
            _write(where("seeds", "metrics"), {"n256.fvu.sd": 0.004, "galaxy.largest.slope_goc.sd": 0.02,
                                               "n_seeds": 3})
        for n in (256, 512):
            _write(where("evaluate", "metrics", size=n), {"fvu": 0.2 if n == 256 else 0.15, "l0": 16.0,
                                                           "dead_fraction": 0.0, "ce_loss_recovered": 0.9})
            _write(where("lobes", "metrics", size=n), {f"k{k}.ami": 0.05, f"k{k}.ami_null_mean": 0.0})


@pytest.fixture
def params() -> config.Params:
    raw = yaml.safe_load((REPO / "params/smoke.yaml").read_text())
    raw["sae"]["architectures"] = ["topk", "batchtopk", "matryoshka"]
    return config.from_mapping(raw)


def test_rows_come_from_each_architectures_own_files(tmp_path: Path, params: config.Params,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from saeatlas.report.architectures import layer_rows

    plant(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    rows, _ = layer_rows(params, 15)
    assert [(r["architecture"], r["size"]) for r in rows] == [(a, n) for a in ("topk", "batchtopk", "matryoshka")
                                                                for n in (256, 512)]
    by = {(r["architecture"], r["size"]): r for r in rows}
    assert by["matryoshka", 512]["absorption_rate"] == 0.012 and by["topk", 512]["absorption_rate"] == 0.06
    assert by["topk", 512]["split_child_fraction"] == 0.2 and by["topk", 256]["split_child_fraction"] is None
    assert by["batchtopk", 256]["fvu"] == 0.2 and by["batchtopk", 256]["slope_goc"] is None  # not planted: empty
    assert (by["topk", 256]["fvu_seed_sd"], by["topk", 256]["slope_goc_seed_sd"], by["topk", 256]["n_seeds"]) == \
        (0.004, 0.02, 3)
    assert by["topk", 512]["fvu_seed_sd"] is None and by["topk", 512]["slope_goc_seed_sd"] is None
    assert by["batchtopk", 256]["fvu_seed_sd"] is None  # no seeds stage for it
    table = markdown(rows)
    assert table.count("\n") == 1 + len(rows) and "| matryoshka | 512 | 0.15 |" in table
    assert "| topk | 256 | 0.2 ± 0.004 |" in table


def test_verdict_says_differs_only_when_intervals_allow(tmp_path: Path, params: config.Params,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from saeatlas.report.architectures import layer_rows

    plant(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    rows, _ = layer_rows(params, 15)
    text = verdict(rows, 512, "absorption_rate", ("absorption_rate_ci_low", "absorption_rate_ci_high"), "absorption")
    assert "BatchTopK 0.065 vs TopK 0.06 (intervals overlap: no difference shown)" in text
    assert "Matryoshka (BatchTopK) 0.012 vs TopK 0.06 (intervals do not overlap: differs)" in text
    assert "(no interval)" in verdict(rows, 512, "fvu", None, "FVU")
    one = [r for r in rows if r["architecture"] == "topk"]
    assert "fewer than two architectures" in verdict(one, 512, "fvu", None, "FVU")


def test_the_report_places_one_section_per_layer(tmp_path: Path, params: config.Params,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from saeatlas.stages.report import _architectures_block

    plant(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    block = _architectures_block(params, 15, tmp_path / "scratch", tmp_path / "site")
    (item,) = block["sections"]
    assert item["slug"] == "architectures/layer15" and item["section"].title == "Across architectures"
    assert "absorption rate at n = 512" in item["section"].summary
    assert (tmp_path / "site" / item["files"]["figures"][0]["image"]).stat().st_size > 10_000
    csv_text = (tmp_path / "site" / "figures" / "architectures" / "layer15" / "architectures.csv").read_text()
    assert csv_text.count("\n") == 7 and csv_text.startswith("architecture,size,fvu")


def test_the_cli_tool_prints_the_table(tmp_path: Path, params: config.Params, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    from saeatlas.report.architectures import main

    plant(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(dict(params.raw)))
    main(["--params", "p.yaml", "--out", "cmp"])
    out = capsys.readouterr().out
    assert out.startswith("Layer 15") and "| batchtopk | 256 |" in out and (tmp_path / "cmp/layer15/architectures.png").is_file()
