"""Across depth: the galaxy spectrum slope (our rank window and the published one), the clustering
entropy (our negentropy and the published protocol) and the lobes AMI against layer, beside
Geometry of Concepts' published slope-by-layer curve.

Why a study-level section and not one more per-layer number: GoC's galaxy finding is a shape (the
slope and the entropy rise to a middle layer and fall again), which no single layer shows. It is
built from the per-layer metrics the galaxy and lobes stages already write, at one dictionary
size (the largest of ``sae.sizes``) and one lobes k, so it costs nothing to compute. Depth is
compared as relative depth ((layer + 1) / number of blocks), because Gemma-2-2B has 26 blocks and
SmolLM2-135M 30. The verdict on a middle-layer peak is read from the numbers with their
intervals (``peak_verdict``): a peak counts only when the best interior layer's interval lies
above both ends' intervals.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Sequence

from saeatlas.analysis.common.published import load
from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric
from saeatlas.artifacts import write_csv_atomic
from saeatlas.report.core_sections import ARCHITECTURE_NAMES, read_json

Paths = Callable[..., Path]  # (stage, output, **wildcards) -> path
COLUMNS = ("layer", "relative_depth", "slope", "slope_ci_low", "slope_ci_high", "slope_gaussian",
           "slope_goc", "slope_goc_ci_low", "slope_goc_ci_high", "slope_goc_gaussian",
           "negentropy", "negentropy_ci_low", "negentropy_ci_high", "negentropy_gaussian",
           "clustering_goc", "clustering_goc_sd", "clustering_goc_gaussian",
           "ami", "ami_null_mean", "ami_null_sd", "ami_goc")
GALAXY_KEYS = {"slope": "slope", "slope_ci_low": "slope_ci_low", "slope_ci_high": "slope_ci_high",
               "slope_gaussian": "slope_gaussian", "slope_goc": "slope_goc", "slope_goc_ci_low": "slope_goc_ci_low",
               "slope_goc_ci_high": "slope_goc_ci_high", "slope_goc_gaussian": "slope_goc_gaussian",
               "negentropy": "negentropy", "negentropy_ci_low": "negentropy_ci_low",
               "negentropy_ci_high": "negentropy_ci_high", "negentropy_gaussian": "negentropy_gaussian",
               "clustering_goc": "clustering_goc", "clustering_goc_sd": "clustering_goc_sd",
               "clustering_goc_gaussian": "clustering_goc_gaussian"}
PUBLISHED_LAYERS = 26  # Gemma-2-2B's blocks, for GoC's relative depth


def depth_rows(layers: Sequence[int], n_layers: int, size: int, lobes_k: int, where: Paths) -> list[dict[str, Any]]:
    """One row per layer: the galaxy metrics of dictionary ``size`` and the lobes AMI at ``lobes_k``."""
    from saeatlas.errors import StoreError

    rows = []
    for layer in sorted(layers):
        for file in (where("galaxy", "metrics", layer=layer), where("lobes", "metrics", layer=layer, size=size)):
            if not Path(file).is_file():
                raise StoreError(f"{file}: missing; build the galaxy and lobes stages of every layer first "
                                 "(make depth, or snakemake with `python -m saeatlas depth --targets`)")
        galaxy = read_json(where("galaxy", "metrics", layer=layer))
        lobes = read_json(where("lobes", "metrics", layer=layer, size=size))
        row: dict[str, Any] = {"layer": layer, "relative_depth": (layer + 1) / n_layers}
        row.update({column: metric(galaxy, f"n{size}.{key}") for column, key in GALAXY_KEYS.items()})
        row.update({"ami": metric(lobes, f"k{lobes_k}.ami"), "ami_null_mean": metric(lobes, f"k{lobes_k}.ami_null_mean"),
                    "ami_null_sd": metric(lobes, f"k{lobes_k}.ami_null_sd"), "ami_goc": metric(lobes, f"goc.k{lobes_k}.ami")})
        rows.append(row)
    return rows


def published_slopes() -> list[tuple[int, float]]:
    """GoC's slope by layer (Gemma-2-2B), from ``analysis/published.yaml`` (entries ``li2024_slope_layer<L>``)."""
    entries = load().get("galaxy", {})
    points = [(p.layer, p.value) for name, p in entries.items()
              if name.startswith("li2024_slope_layer") and p.layer is not None]
    return sorted(points)


def peak_verdict(rows: list[dict[str, Any]], value: str, low: str | None = None,
                 high: str | None = None) -> tuple[str, int | None]:
    """Whether ``value`` peaks at an interior layer: the best interior layer's interval lies above
    the intervals of both the first and the last layer (without ``low``/``high``, above both ends'
    values, and the sentence says there is no interval). Returns a sentence and the peak layer."""
    usable = [r for r in rows if r[value] is not None]
    if len(usable) < 3:
        return f"{len(usable)} layers with a {value}: too few to speak of a peak", None
    first, last = usable[0], usable[-1]
    interior = max(usable[1:-1], key=lambda r: r[value])
    bound = lambda r, key: r[key] if key and r[key] is not None else r[value]  # noqa: E731
    lo, ends = bound(interior, low), [bound(r, high) for r in (first, last)]
    peaks = lo > max(ends)
    how = (f"interval from {lo:.3g}" if low and interior[low] is not None else "one estimate, no interval")
    if peaks:
        verdict = (f"{value} peaks in the middle: {interior[value]:.3g} at layer {interior['layer']} ({how}) above "
                   f"layer {first['layer']} ({first[value]:.3g}) and layer {last['layer']} ({last[value]:.3g})")
    else:
        verdict = (f"no middle-layer peak of {value}: the best interior layer {interior['layer']} "
                   f"({interior[value]:.3g}, {how}) does not clear both ends (layer {first['layer']}: "
                   f"{first[value]:.3g}, layer {last['layer']}: {last[value]:.3g})")
    return verdict, interior["layer"] if peaks else None


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    kept = [r for r in rows if r[key] is not None]
    return [r["relative_depth"] for r in kept], [r[key] for r in kept]


def depth_figure(rows: list[dict[str, Any]], path: Path, size: int, lobes_k: int) -> None:
    """Three panels against relative depth: slopes (both windows, their Gaussian nulls, GoC's
    curve), entropies (ours and the published protocol, with their Gaussian references) and the
    lobes AMI with its permutation null."""
    from saeatlas.analysis.common.plotting import new_figure

    fig = new_figure(13, 4)
    ax_slope, ax_entropy, ax_ami = fig.subplots(1, 3)
    for key, label, colour in (("slope", "ours (ranks window of galaxy.rank_*)", "C0"),
                               ("slope_goc", "published window (ranks 10-150)", "C1")):
        x, y = _series(rows, key)
        _, lo = _series(rows, f"{key}_ci_low")
        _, hi = _series(rows, f"{key}_ci_high")
        ax_slope.plot(x, y, "o-", color=colour, label=label)
        if len(lo) == len(x) == len(hi):
            ax_slope.fill_between(x, lo, hi, color=colour, alpha=0.2)
        xn, yn = _series(rows, f"{key}_gaussian")
        ax_slope.plot(xn, yn, ":", color=colour, label=f"isotropic null, {label.split(' (')[0]}")
    published = published_slopes()
    if published:
        ax_slope.plot([(layer + 1) / PUBLISHED_LAYERS for layer, _ in published], [v for _, v in published],
                      "s--", color="grey", label="GoC, Gemma-2-2B (published)")
    ax_slope.set(xlabel="relative depth (layer + 1) / blocks", ylabel="power-law slope",
                 title=f"Spectrum slope, n = {size}")
    ax_slope.legend(fontsize=7)
    x, y = _series(rows, "negentropy")
    ax_entropy.plot(x, y, "o-", color="C0", label="negentropy (ours, nats; 0 = Gaussian)")
    _, lo = _series(rows, "negentropy_ci_low")
    _, hi = _series(rows, "negentropy_ci_high")
    if len(lo) == len(x) == len(hi):
        ax_entropy.fill_between(x, lo, hi, color="C0", alpha=0.2)
    twin = ax_entropy.twinx()
    xg, yg = _series(rows, "clustering_goc")
    twin.plot(xg, yg, "o-", color="C1", label="published protocol clustering (nats)")
    xn, yn = _series(rows, "clustering_goc_gaussian")
    twin.plot(xn, yn, ":", color="C1", label="its Gaussian reference")
    ax_entropy.set(xlabel="relative depth", ylabel="negentropy", title="Clustering")
    twin.set_ylabel("published-protocol clustering")
    ax_entropy.legend(fontsize=7, loc="upper left")
    twin.legend(fontsize=7, loc="lower right")
    x, y = _series(rows, "ami")
    ax_ami.plot(x, y, "o-", color="C0", label=f"lobes vs geometry AMI, k = {lobes_k}")
    xn, yn = _series(rows, "ami_null_mean")
    ax_ami.plot(xn, yn, ":", color="grey", label="permutation null (mean)")
    xg, yg = _series(rows, "ami_goc")
    ax_ami.plot(xg, yg, "s--", color="C1", label="published protocol")
    ax_ami.set(xlabel="relative depth", ylabel="AMI", title=f"Lobes, n = {size}")
    ax_ami.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def depth_section(rows: list[dict[str, Any]], out_dir: Path, size: int, lobes_k: int,
                  architecture: str = "TopK") -> Section:
    """The section: the table, the figure and the verdicts on a middle-layer peak."""
    write_csv_atomic(out_dir / "depth.csv", rows, COLUMNS)
    depth_figure(rows, out_dir / "depth.png", size, lobes_k)
    verdicts = [peak_verdict(rows, v, f"{v}_ci_low", f"{v}_ci_high")[0] for v in ("slope", "slope_goc", "negentropy")]
    verdicts.append(peak_verdict(rows, "clustering_goc")[0])
    numbers = tuple(Number(f"slope (published window), layer {r['layer']}", r["slope_goc"], null=r["slope_goc_gaussian"],
                           ci=None if r["slope_goc_ci_low"] is None else (r["slope_goc_ci_low"], r["slope_goc_ci_high"]))
                    for r in rows)
    summary = (f"{len(rows)} layers, one {architecture} dictionary of {size} latents each. GoC (Gemma-2-2B) find the slope and the "
               "clustering entropy rising to a middle layer and falling again; here: " + "; ".join(verdicts) + ".")
    return Section(title="Across depth", summary=summary, numbers=numbers, order=5,
                   figures=(Figure("depth.png", f"Against relative depth: the spectrum slope over our window and the "
                                   "published ranks 10-150 with bootstrap intervals and the same-window isotropic "
                                   "null (dotted), GoC's published Gemma-2-2B curve (grey); the clustering "
                                   "negentropy (ours) and the published-protocol clustering entropy with its Gaussian "
                                   f"reference; the lobes AMI at k = {lobes_k} with its permutation null."),),
                   tables=(Table("depth.csv", "Per layer: slopes with intervals and nulls, entropies, lobes AMI."),))


def build(params: Any, out_dir: Path) -> Section:
    """The section for a built study (``params``): the largest size, the lobes k the feature
    browser names (nearest 8), the model's block count for relative depth."""
    import json

    from saeatlas.adapters import model_dir, path
    from saeatlas.lm import MODEL_INFO

    from saeatlas.errors import StoreError

    size = max(params.sae.sizes)
    lobes_k = min(params.section("lobes.k_values"), key=lambda k: (abs(k - 8), k))
    info = model_dir(params) / MODEL_INFO
    if not info.is_file():
        raise StoreError(f"{info}: missing; run the model stage first")
    n_layers = json.loads(info.read_text())["n_layers"]
    where = lambda stage, output, **w: path(stage, output, params, **w)  # noqa: E731
    out_dir.mkdir(parents=True, exist_ok=True)
    # a study of several architectures: its first one (the section is about depth, not objectives)
    return depth_section(depth_rows(params.model.layers, n_layers, size, lobes_k, where), out_dir, size, lobes_k,
                         ARCHITECTURE_NAMES[params.sae.architecture])


def targets(params: Any) -> list[str]:
    """What the depth sweep needs built (galaxy per layer, lobes per layer at the largest size):
    the Snakemake targets of ``make depth``, so the sweep skips the stages that compare sizes."""
    from saeatlas.adapters import path

    size = max(params.sae.sizes)
    return [str(p) for layer in params.model.layers
            for p in (path("galaxy", "report", params, layer=layer), path("lobes", "report", params, layer=layer, size=size))]


def markdown(csv_path: Path) -> str:
    """The README's depth table from ``depth.csv``."""
    import csv

    def cell(value: str, low: str = "", high: str = "") -> str:
        if not value:
            return "n/a"
        return f"{float(value):.3f}" + (f" [{float(low):.3f}, {float(high):.3f}]" if low and high else "")

    out = ["| layer | slope ours [CI] (null) | slope GoC window [CI] (null) | negentropy [CI] | GoC clustering ± sd "
           "(Gaussian) | AMI (null mean) | AMI GoC protocol |", "|---|---|---|---|---|---|---|"]
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            out.append(f"| {r['layer']} | {cell(r['slope'], r['slope_ci_low'], r['slope_ci_high'])} "
                       f"({cell(r['slope_gaussian'])}) | {cell(r['slope_goc'], r['slope_goc_ci_low'], r['slope_goc_ci_high'])} "
                       f"({cell(r['slope_goc_gaussian'])}) | "
                       f"{cell(r['negentropy'], r['negentropy_ci_low'], r['negentropy_ci_high'])} | "
                       f"{cell(r['clustering_goc'])} ± {cell(r['clustering_goc_sd'])} ({cell(r['clustering_goc_gaussian'])}) "
                       f"| {cell(r['ami'])} "
                       f"({cell(r['ami_null_mean'])}) | {cell(r['ami_goc'])} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    """The depth sweep outside the report: ``python -m saeatlas depth --params FILE``
    writes depth.csv and depth.png under --out and prints the table and the verdicts;
    ``--targets`` prints what to build first (``make depth`` passes them to Snakemake)."""
    from saeatlas.config import load as load_params

    parser = argparse.ArgumentParser(prog="python -m saeatlas depth", description=main.__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("results/depth"))
    parser.add_argument("--targets", action="store_true", help="print the Snakemake targets and exit")
    args = parser.parse_args(argv)
    params = load_params(Path(args.params))
    if args.targets:
        print(" ".join(targets(params)))
        return
    section = build(params, args.out)
    print(markdown(args.out / "depth.csv") + "\n\n" + section.summary)


if __name__ == "__main__":
    main()
