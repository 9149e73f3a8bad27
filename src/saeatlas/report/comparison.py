"""Ours beside the published numbers, in one table: for each published figure that names the
metrics it is read against (``compare`` in ``analysis/published.yaml``), our estimator, the
published protocol run on our data, and the published value with its source.

Why one generic table and not a line per analysis: the gaps are read across analyses (is it the
model, the data budget or the protocol?), and a reader wants them side by side. The table is
built from the written metrics only, so it needs no edit when an analysis adds a comparison: a
``compare`` entry in the data file is enough. A per-size analysis is read at the largest size.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Sequence

from saeatlas.analysis.common.published import load
from saeatlas.analysis.common.section import Number, Section, Table, metric
from saeatlas.artifacts import write_csv_atomic
from saeatlas.report.core_sections import read_json

COLUMNS = ("analysis", "figure", "size", "ours", "ours_key", "published_protocol", "published_protocol_key",
           "published", "source", "hand", "protocol")

Paths = Callable[..., Path]  # (stage, output, **wildcards) -> path


def comparison_rows(layer: int, sizes: Sequence[int], analyses: Sequence[Any], where: Paths) -> list[dict[str, Any]]:
    """One row per published figure with a ``compare`` entry, for the analyses of the stage table."""
    entries = load()
    rows = []
    for stage in analyses:
        wanted = [p for p in entries.get(stage.name, {}).values() if p.ours or p.protocol_key]
        if not wanted:
            continue
        size = max(sizes) if "size" in stage.wildcards else None
        wildcards = {"layer": layer} if size is None else {"layer": layer, "size": size}
        metrics = read_json(where(stage.name, "metrics", **wildcards))
        for p in wanted:
            rows.append({"analysis": stage.name, "figure": p.name, "size": size,
                         "ours": metric(metrics, p.ours) if p.ours else None, "ours_key": p.ours,
                         "published_protocol": metric(metrics, p.protocol_key) if p.protocol_key else None,
                         "published_protocol_key": p.protocol_key, "published": p.value,
                         "source": f"{p.paper}; {p.where}; {p.model}" + ("" if p.layer is None else f", layer {p.layer}"),
                         "hand": p.hand, "protocol": p.protocol, "label": p.label()})
    return rows


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def comparison_section(rows: list[dict[str, Any]], out_dir: Path, layer: int) -> Section:
    """The table as a report section: per published figure, our estimator and the published
    protocol on our data as two numbers beside the published value (``comparison.csv`` beside it)."""
    write_csv_atomic(out_dir / "comparison.csv", rows, COLUMNS)
    numbers = []
    for r in rows:
        where = f"{r['analysis']}" + ("" if r["size"] is None else f" n = {r['size']}")
        if r["ours_key"]:
            numbers.append(Number(f"{where}: {r['ours_key']} (ours)", r["ours"], published=r["label"]))
        if r["published_protocol_key"]:
            numbers.append(Number(f"{where}: {r['published_protocol_key']} (published protocol, our data)",
                                  r["published_protocol"], published=r["label"]))
    missing = [f"{r['analysis']}.{r['figure']}" for r in rows if r["ours"] is None and r["published_protocol"] is None]
    summary = (f"{len(rows)} published figures beside ours on layer {layer} (a per-size analysis at its largest "
               "size): our estimator, the published protocol run on our data, and the published value with its "
               "source (analysis/published.yaml; second-hand figures are marked). Each analysis's own section "
               "gives the nulls and intervals.")
    notes = tuple(f"not estimated on this study: {m}" for m in missing)
    return Section(title="Ours beside the published numbers", summary=summary, numbers=tuple(numbers), order=12,
                   notes=notes,
                   tables=(Table("comparison.csv", "Each published figure (analysis/published.yaml: paper, "
                                 "table or figure, model, layer, first- or second-hand) beside our estimator and "
                                 "the published protocol run on our data, with the metric keys they come from."),))


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README's table: metric | ours | published protocol on our data | published value."""
    out = ["| metric | ours | published protocol on our data | published value |", "|---|---|---|---|"]
    for r in rows:
        hand = "" if r["hand"] == "first" else " (second-hand)"
        size = "" if r["size"] is None else f" (n = {r['size']})"
        out.append(f"| {r['analysis']}: {r['figure']}{size} | {_fmt(r['ours'])} | {_fmt(r['published_protocol'])} "
                   f"| {r['published']:g}{hand} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table of a built study as Markdown: ``python -m saeatlas compare``."""
    from saeatlas.adapters import path, sizes
    from saeatlas.config import load as load_params
    from saeatlas.pipeline import ANALYSES

    parser = argparse.ArgumentParser(prog="python -m saeatlas compare", description=main.__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(Path(args.params))
    for arch in params.sae.architectures:
        job = params.for_architecture(arch)
        where = lambda stage, output, **w: path(stage, output, job, **w)  # noqa: E731
        for layer in params.model.layers:
            print(f"Layer {layer}, {arch}\n\n" + markdown(comparison_rows(layer, sizes(params, "report"), ANALYSES,
                                                                          where)))


if __name__ == "__main__":
    main()
