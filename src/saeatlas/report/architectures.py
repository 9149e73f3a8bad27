"""Across architectures: the study's headline numbers side by side for every SAE architecture of
``sae.architectures`` (TopK, BatchTopK, Matryoshka), per layer and dictionary size, each with its
null and interval where the analysis estimates one.

Why a study-level section: whether a finding (splitting fractions, absorption, lobes, the galaxy
slope) belongs to the model or to the training objective shows only when the same tokens train
several objectives and every number is read the same way. Nothing is recomputed here: the rows
are the metrics the evaluate stage and the analyses already wrote for each (layer, architecture).
A verdict says "differs" only where intervals exist and do not overlap; otherwise it prints the
numbers and says there is no interval to decide with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric
from saeatlas.artifacts import write_csv_atomic
from saeatlas.report.core_sections import ARCHITECTURE_NAMES, read_json

Reader = Callable[..., dict[str, Any]]  # (stage, output, arch, **wildcards) -> metrics (empty if missing)
COLUMNS = ("architecture", "size", "fvu", "l0", "dead_fraction", "ce_loss_recovered",
           "split_child_fraction", "split_child_fraction_null", "novel_fraction", "novel_fraction_null",
           "leask_novel_fraction", "leask_novel_fraction_null",
           "absorption_rate", "absorption_rate_ci_low", "absorption_rate_ci_high", "absorption_rate_null",
           "slope_goc", "slope_goc_ci_low", "slope_goc_ci_high", "slope_goc_gaussian",
           "ami", "ami_null_mean", "completeness_freq50_times_alive", "fvu_seed_sd", "slope_goc_seed_sd", "n_seeds")
# (column, metrics key under "pair_<smaller>_<size>.") of the splitting analysis, read for the
# pair that ends at this size
SPLITTING = ("split_child_fraction", "split_child_fraction_null", "novel_fraction", "novel_fraction_null",
             "leask_novel_fraction", "leask_novel_fraction_null")
# the headline comparisons: (column, its interval columns or None, label)
VERDICTS = (("fvu", None, "held-out FVU"), ("absorption_rate", ("absorption_rate_ci_low", "absorption_rate_ci_high"),
                                             "absorption rate"),
            ("slope_goc", ("slope_goc_ci_low", "slope_goc_ci_high"), "galaxy slope (published window)"),
            ("ami", None, "lobes AMI"), ("split_child_fraction", None, "split-child fraction"))


def architecture_rows(architectures: Sequence[str], sizes: Sequence[int], lobes_k: int,
                      read: Reader) -> list[dict[str, Any]]:
    """One row per (architecture, size) from the written metrics; an analysis that did not run
    (or did not estimate a number) leaves its cells empty. The seed spread (sample sd over the
    seeds stage's training seeds) is there for the sizes it retrains: FVU at each, the galaxy
    slope at the largest of them."""
    rows = []
    ordered = sorted(sizes)
    for arch in architectures:
        scaling = read("scaling", "metrics", arch)
        seeds = read("seeds", "metrics", arch)
        # the seeds stage retrains the sizes up to seeds.max_size; its galaxy headline is at the largest of them
        retrained = [n for n in ordered if metric(seeds, f"n{n}.fvu.sd") is not None]
        for i, size in enumerate(ordered):
            evaluated = read("evaluate", "metrics", arch, size=size)
            absorption = read("absorption", "metrics", arch)
            galaxy = read("galaxy", "metrics", arch)
            lobes = read("lobes", "metrics", arch, size=size)
            row: dict[str, Any] = {"architecture": arch, "size": size}
            row.update({k: metric(evaluated, k) for k in ("fvu", "l0", "dead_fraction", "ce_loss_recovered")})
            pair = f"pair_{ordered[i - 1]}_{size}." if i else None
            split = read("splitting", "metrics", arch) if pair else {}
            row.update({k: metric(split, pair + k) if pair else None for k in SPLITTING})
            row.update({k: metric(absorption, f"n{size}.{k}") for k in ("absorption_rate", "absorption_rate_ci_low",
                                                                         "absorption_rate_ci_high", "absorption_rate_null")})
            row.update({k: metric(galaxy, f"n{size}.{k}") for k in
                        ("slope_goc", "slope_goc_ci_low", "slope_goc_ci_high", "slope_goc_gaussian")})
            row.update({"ami": metric(lobes, f"k{lobes_k}.ami"),
                        "ami_null_mean": metric(lobes, f"k{lobes_k}.ami_null_mean"),
                        "completeness_freq50_times_alive": metric(scaling, "completeness.freq50_times_alive")})
            row.update({"fvu_seed_sd": metric(seeds, f"n{size}.fvu.sd"),
                        "slope_goc_seed_sd": metric(seeds, "galaxy.largest.slope_goc.sd")
                        if retrained and size == retrained[-1] else None,
                        "n_seeds": metric(seeds, "n_seeds") if size in retrained else None})
            rows.append(row)
    return rows


def verdict(rows: list[dict[str, Any]], size: int, column: str, interval: tuple[str, str] | None,
            label: str) -> str:
    """One sentence on ``column`` at ``size``: each architecture's value beside the first's, and
    whether they differ (intervals that do not overlap), or that there is no interval to say."""
    at = [r for r in rows if r["size"] == size and r[column] is not None]
    if len(at) < 2:
        return f"{label} at n = {size}: fewer than two architectures have it"
    base = at[0]
    parts = []
    for r in at[1:]:
        text = (f"{ARCHITECTURE_NAMES[r['architecture']]} {r[column]:.3g} vs "
                f"{ARCHITECTURE_NAMES[base['architecture']]} {base[column]:.3g}")
        if interval and all(x[k] is not None for x in (r, base) for k in interval):
            apart = r[interval[0]] > base[interval[1]] or base[interval[0]] > r[interval[1]]
            text += " (intervals do not overlap: differs)" if apart else " (intervals overlap: no difference shown)"
        else:
            text += " (no interval)"
        parts.append(text)
    return f"{label} at n = {size}: " + "; ".join(parts)


def architecture_figure(rows: list[dict[str, Any]], path: Path, lobes_k: int) -> None:
    """Four panels against dictionary size, one line per architecture: held-out FVU, absorption
    rate, galaxy slope, lobes AMI; 95% intervals as error bars where estimated, each null as
    crosses on a dotted line in its architecture's colour."""
    from saeatlas.analysis.common.plotting import new_figure

    fig = new_figure(16, 4)
    panels = fig.subplots(1, 4)
    spec = (("fvu", None, "held-out FVU"), ("absorption_rate", "absorption_rate_null", "absorption rate"),
            ("slope_goc", "slope_goc_gaussian", "spectrum slope (ranks 10-150)"),
            ("ami", "ami_null_mean", f"lobes AMI, k = {lobes_k}"))
    for ax, (column, null, title) in zip(panels, spec):
        for i, arch in enumerate(dict.fromkeys(r["architecture"] for r in rows)):
            mine = [r for r in rows if r["architecture"] == arch and r[column] is not None]
            if not mine:
                continue
            x, y = [r["size"] for r in mine], [r[column] for r in mine]
            low, high = f"{column}_ci_low", f"{column}_ci_high"
            if all(r.get(low) is not None and r.get(high) is not None for r in mine):  # 95% intervals
                ax.errorbar(x, y, yerr=[[r[column] - r[low] for r in mine], [r[high] - r[column] for r in mine]],
                            fmt="o-", color=f"C{i}", capsize=3, label=ARCHITECTURE_NAMES[arch])
            else:
                ax.plot(x, y, "o-", color=f"C{i}", label=ARCHITECTURE_NAMES[arch])
            nulls = [r for r in mine if null and r[null] is not None]
            if nulls:  # x markers: visible with a single size too
                ax.plot([r["size"] for r in nulls], [r[null] for r in nulls], "x:", color=f"C{i}")
        ax.set(xscale="log", xlabel="dictionary size", title=title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:  # an analysis that did not run: say so on the panel instead of an empty frame
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def architecture_section(rows: list[dict[str, Any]], out_dir: Path, layer: int, lobes_k: int) -> Section:
    write_csv_atomic(out_dir / "architectures.csv", rows, COLUMNS)
    architecture_figure(rows, out_dir / "architectures.png", lobes_k)
    sizes = sorted({r["size"] for r in rows})
    largest = sizes[-1]
    verdicts = [verdict(rows, largest, column, interval, label) for column, interval, label in VERDICTS]
    numbers = tuple(Number(f"{ARCHITECTURE_NAMES[r['architecture']]}, n = {r['size']}: absorption rate",
                           r["absorption_rate"], null=r["absorption_rate_null"],
                           ci=None if r["absorption_rate_ci_low"] is None else (r["absorption_rate_ci_low"],
                                                                               r["absorption_rate_ci_high"]))
                    for r in rows if r["size"] == largest)
    names = ", ".join(ARCHITECTURE_NAMES[a] for a in dict.fromkeys(r["architecture"] for r in rows))
    summary = (f"{names} trained on the same layer-{layer} tokens at sizes {', '.join(map(str, sizes))}; "
               f"the same analyses read each. At the largest size: " + "; ".join(verdicts) + ".")
    return Section(title="Across architectures", summary=summary, numbers=numbers, order=6,
                   figures=(Figure("architectures.png", "Against dictionary size, one colour per architecture "
                                   "(95% intervals as error bars where estimated): held-out FVU; absorption rate with "
                                   "its random-direction null (crosses, dotted); the spectrum slope over the published "
                                   "ranks 10-150 with its isotropic null (crosses); the lobes AMI at k = "
                                   f"{lobes_k} with its permutation null (crosses)."),),
                   tables=(Table("architectures.csv", "Per architecture and size: FVU, L0, dead fraction, CE "
                                 "recovered; split-child, novel and Leask-novel fractions of the pair ending at "
                                 "this size, with nulls; absorption rate with interval and null; galaxy slope "
                                 "with interval and null; lobes AMI with null; completeness (frequency x alive "
                                 "at 50%); the seed spread (sd over training seeds) of FVU and of the galaxy "
                                 "slope where the seeds stage retrained that size."),))


def layer_rows(params: Any, layer: int) -> tuple[list[dict[str, Any]], int]:
    """The rows of one layer of a built study, and the lobes k they report (the one the feature
    browser names: nearest 8)."""
    from saeatlas.adapters import path

    lobes_k = min(params.section("lobes.k_values"), key=lambda k: (abs(k - 8), k))

    def read(stage: str, output: str, arch: str, **wildcards: int) -> dict[str, Any]:
        file = path(stage, output, params.for_architecture(arch), layer=layer, **wildcards)
        return read_json(file) if file.is_file() else {}

    return architecture_rows(params.sae.architectures, params.sae.sizes, lobes_k, read), lobes_k


def build(params: Any, layer: int, out_dir: Path) -> Section:
    """The section for one layer of a built study of several architectures."""
    rows, lobes_k = layer_rows(params, layer)
    out_dir.mkdir(parents=True, exist_ok=True)
    return architecture_section(rows, out_dir, layer, lobes_k)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README's comparison table."""
    def cell(value: Any, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}g}"

    def spread(r: dict[str, Any], column: str) -> str:
        """The value, ± its seed sd where the seeds stage measured one."""
        sd = r[f"{column}_seed_sd"]
        return cell(r[column]) + ("" if sd is None else f" ± {sd:.2g}")

    out = ["| architecture | n | FVU (± seed sd) | L0 | dead | CE recovered | split-child (null) | "
           "absorption [CI] (null) | slope GoC window (± seed sd) (null) | lobes AMI (null) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = (f" [{cell(r['absorption_rate_ci_low'])}, {cell(r['absorption_rate_ci_high'])}]"
              if r["absorption_rate_ci_low"] is not None else "")
        out.append(f"| {r['architecture']} | {r['size']} | {spread(r, 'fvu')} | {cell(r['l0'])} | "
                   f"{cell(r['dead_fraction'])} | {cell(r['ce_loss_recovered'])} | "
                   f"{cell(r['split_child_fraction'])} ({cell(r['split_child_fraction_null'])}) | "
                   f"{cell(r['absorption_rate'])}{ci} ({cell(r['absorption_rate_null'])}) | "
                   f"{spread(r, 'slope_goc')} ({cell(r['slope_goc_gaussian'])}) | {cell(r['ami'])} "
                   f"({cell(r['ami_null_mean'])}) |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    """The architecture comparison outside the report: ``python -m saeatlas architectures
    --params FILE`` writes architectures.csv and .png per layer under --out and prints the
    Markdown table and the verdicts."""
    import argparse

    from saeatlas.config import load as load_params

    parser = argparse.ArgumentParser(prog="python -m saeatlas architectures", description=main.__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("results/architectures"))
    args = parser.parse_args(argv)
    params = load_params(Path(args.params))
    for layer in params.model.layers:
        rows, lobes_k = layer_rows(params, layer)
        (args.out / f"layer{layer}").mkdir(parents=True, exist_ok=True)
        section = architecture_section(rows, args.out / f"layer{layer}", layer, lobes_k)
        print(f"Layer {layer}\n\n" + markdown(rows) + "\n\n" + section.summary + "\n")
