"""The "Across depth" report section: rows from per-layer metrics, and a peak verdict that
follows the numbers (a planted middle-layer peak is found; a flat or monotone curve is not)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saeatlas.report.depth import depth_rows, depth_section, peak_verdict, published_slopes


def _write(path: Path, metrics: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))


def planted(tmp_path: Path, slopes: list[float], size: int = 64, k: int = 8) -> tuple[list[int], object]:
    layers = [0, 3, 6, 9, 12]
    for layer, slope in zip(layers, slopes):
        _write(tmp_path / f"galaxy{layer}.json", {
            f"n{size}.slope": slope, f"n{size}.slope_ci_low": slope - 0.02, f"n{size}.slope_ci_high": slope + 0.02,
            f"n{size}.slope_gaussian": 0.05, f"n{size}.slope_goc": slope + 0.1,
            f"n{size}.slope_goc_ci_low": slope + 0.08, f"n{size}.slope_goc_ci_high": slope + 0.12,
            f"n{size}.slope_goc_gaussian": 0.1, f"n{size}.negentropy": 1.0, f"n{size}.negentropy_ci_low": 0.9,
            f"n{size}.negentropy_ci_high": 1.1, f"n{size}.negentropy_gaussian": 0.0,
            f"n{size}.clustering_goc": 5.0, f"n{size}.clustering_goc_sd": 0.3, f"n{size}.clustering_goc_gaussian": 0.2})
        _write(tmp_path / f"lobes{layer}-{size}.json", {f"k{k}.ami": 0.05, f"k{k}.ami_null_mean": 0.0,
                                                        f"k{k}.ami_null_sd": 0.01, f"goc.k{k}.ami": 0.04})

    def where(stage: str, output: str, layer: int, size: int | None = None) -> Path:
        return tmp_path / (f"{stage}{layer}.json" if size is None else f"{stage}{layer}-{size}.json")

    return layers, where


def test_a_planted_middle_peak_is_found_and_the_section_is_written(tmp_path: Path) -> None:
    layers, where = planted(tmp_path, [0.2, 0.3, 0.45, 0.3, 0.25])
    rows = depth_rows(layers, 30, 64, 8, where)
    assert [r["layer"] for r in rows] == layers and rows[0]["relative_depth"] == pytest.approx(1 / 30)
    verdict, peak = peak_verdict(rows, "slope", "slope_ci_low", "slope_ci_high")
    assert peak == 6 and "peaks in the middle" in verdict
    (tmp_path / "out").mkdir()
    section = depth_section(rows, tmp_path / "out", 64, 8)
    assert not section.missing_files(tmp_path / "out")
    assert "slope peaks in the middle" in section.summary
    assert (tmp_path / "out" / "depth.csv").read_text().count("\n") == len(layers) + 1


@pytest.mark.parametrize("slopes", [[0.3, 0.3, 0.31, 0.3, 0.3], [0.1, 0.2, 0.3, 0.4, 0.5]])
def test_flat_or_monotone_curves_are_not_called_a_peak(tmp_path: Path, slopes: list[float]) -> None:
    layers, where = planted(tmp_path, slopes)
    verdict, peak = peak_verdict(depth_rows(layers, 30, 64, 8, where), "slope", "slope_ci_low", "slope_ci_high")
    assert peak is None and verdict.startswith("no middle-layer peak")


def test_too_few_layers_say_so(tmp_path: Path) -> None:
    layers, where = planted(tmp_path, [0.2, 0.3, 0.45, 0.3, 0.25])
    rows = depth_rows(layers[:2], 30, 64, 8, where)
    assert peak_verdict(rows, "slope", "slope_ci_low", "slope_ci_high") == (
        "2 layers with a slope: too few to speak of a peak", None)


def test_the_published_curve_is_goc_slope_by_layer() -> None:
    curve = dict(published_slopes())
    assert curve[0] == 0.238 and curve[12] == 0.468 and curve[24] == 0.255 and len(curve) >= 7


def test_the_report_places_the_depth_section_for_a_study_of_several_layers(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The report stage's study-level block: built from the per-layer metrics where the stage
    table puts them, its figure and table copied into the site, for every layer listed."""
    import yaml

    from saeatlas import config
    from saeatlas.stages.report import _depth_block

    repo = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((repo / "params/smoke.yaml").read_text())
    raw["model"]["layers"] = [3, 9, 15]
    params = config.from_mapping(raw)
    monkeypatch.chdir(tmp_path)
    model = Path("results/models") / params.model.name
    model.mkdir(parents=True)
    (model / "saeatlas_model.json").write_text(json.dumps({"n_layers": 30}))
    size, k = max(params.sae.sizes), min(params.section("lobes.k_values"), key=lambda v: (abs(v - 8), v))
    for layer, slope in ((3, 0.2), (9, 0.5), (15, 0.3)):
        _write(Path(f"results/analysis/galaxy/{params.model.name}/layer{layer}/topk.metrics.json"),
               {f"n{size}.slope": slope, f"n{size}.slope_ci_low": slope - 0.01, f"n{size}.slope_ci_high": slope + 0.01})
        _write(Path(f"results/analysis/lobes/{params.model.name}/layer{layer}/topk/n{size}.metrics.json"),
               {f"k{k}.ami": 0.1})
    block = _depth_block(params, tmp_path / "scratch", tmp_path / "site")
    (item,) = block["sections"]
    assert block["layer"] == "all" and item["slug"] == "depth"
    assert "slope peaks in the middle: 0.5 at layer 9" in item["section"].summary
    assert (tmp_path / "site" / item["files"]["figures"][0]["image"]).stat().st_size > 10_000
    assert (tmp_path / "site" / "figures" / "depth" / "depth.csv").read_text().count("\n") == 4


def test_the_cli_hands_a_tool_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m saeatlas depth --targets` reaches the tool with its options untouched: one entry
    point for stages and read-only tools alike."""
    from saeatlas.cli import main

    repo = Path(__file__).resolve().parents[1]
    assert main(["depth", "--params", str(repo / "params/depth.yaml"), "--targets"]) == 0
    targets = capsys.readouterr().out.split()
    assert len(targets) == 20 and targets[0].endswith("galaxy/smollm2-135m-instruct/layer0/topk")
    assert main(["compare", "--params", str(repo / "no-such.yaml")]) == 2
