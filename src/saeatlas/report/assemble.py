"""Collect every section of the study, layer by layer, in the study's order: training and quality,
then each analysis of the stage table through its own ``section.py`` (per size for a per-size
analysis), and the joint feature map. The report never names an analysis: a new row in the table
with a ``section.py`` shows up here by itself."""

from __future__ import annotations

import dataclasses
import html
import re
from importlib import import_module
from pathlib import Path
from typing import Any, Callable

from saeatlas.analysis.common.section import Figure, Section
from saeatlas.report.core_sections import read_csv, read_json
from saeatlas.report.render import Placed

Paths = Callable[..., Path]  # (stage, output, **wildcards) -> path


def analysis_sections(layer: int, sizes: tuple[int, ...], analyses: tuple[Any, ...], where: Paths,
                      key: int | str | None = None) -> list[Placed]:
    """Each analysis's section from its written metrics and folder (per size where it runs per size).
    ``key`` names the block in slugs and links (``block_key``: the layer, or layer and architecture)."""
    key = layer if key is None else key
    placed = []
    for stage in analyses:
        section_of = import_module(f"saeatlas.analysis.{stage.name}.section").section
        for size in (sizes if "size" in stage.wildcards else (None,)):
            wildcards = {"layer": layer} if size is None else {"layer": layer, "size": size}
            folder = where(stage.name, "report", **wildcards)
            section: Section = section_of(read_json(where(stage.name, "metrics", **wildcards)), folder)
            slug = f"layer{key}/{stage.name}" + ("" if size is None else f"/n{size}")
            if size is not None:
                section = dataclasses.replace(section, title=f"{section.title} (n = {size})",
                                              order=section.order + sizes.index(size) / 100)
            placed.append(Placed(section, folder, slug, key))
    return placed


def block_key(layer: int, architecture: str, architectures: tuple[str, ...]) -> int | str:
    """How the report and the browser name one (layer, architecture) block: the layer alone in a
    study of one architecture (its links and anchors as they always were), else ``<layer>-<arch>``."""
    return layer if len(architectures) == 1 else f"{layer}-{architecture}"


def top_tokens(contexts: Path, vocabulary: Callable[[int], str], per_feature: int = 3) -> dict[int, str]:
    """Each feature's most activating tokens (the centre tokens of its top contexts), for hovers."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(contexts, columns=["feature", "kind", "rank", "centre", "token_ids"])
    # Filtered in Arrow first: the largest size keeps ~20 windows per feature, a few per hover.
    keep = pc.and_(pc.equal(pc.cast(table["kind"], "string"), "top"), pc.less(table["rank"], per_feature))
    table = table.filter(keep).to_pydict()
    tokens: dict[int, list[str]] = {}
    for feature, kind, rank, centre, ids in zip(table["feature"], table["kind"], table["rank"], table["centre"],
                                                table["token_ids"]):
        if kind == "top" and rank < per_feature and 0 <= centre < len(ids):
            tokens.setdefault(int(feature), []).append(vocabulary(int(ids[centre])))
    return {f: " | ".join(repr(t)[1:-1] for t in words) for f, words in tokens.items()}


def joint_map_figure(umap_csv: Path, layer: int, sizes: tuple[int, ...], tokens: dict[int, dict[int, str]],
                     out: Path) -> bool:
    """The joint UMAP of every size's decoder directions, coloured by size; hovering shows a
    feature's top tokens (HTML-escaped: Plotly reads a few tags in hover text) and clicking opens
    its page (``customdata`` = [size, feature, layer]). False when the neighbours stage made no joint map."""
    import plotly.graph_objects as go

    rows = [r for r in read_csv(umap_csv) if r.get("joint_x") not in (None, "", "nan")]
    if not rows:
        return False
    fig = go.Figure()
    for size in sizes:
        mine = [r for r in rows if int(r["size"]) == size]
        fig.add_trace(go.Scattergl(
            x=[float(r["joint_x"]) for r in mine], y=[float(r["joint_y"]) for r in mine], mode="markers",
            name=f"n={size}", marker={"size": 4, "opacity": 0.7},
            customdata=[[size, int(r["feature"]), layer] for r in mine],
            text=[html.escape(f"{size}:{r['feature']}  {tokens.get(size, {}).get(int(r['feature']), '')}")
                  for r in mine],
            hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(height=560, margin={"t": 20, "l": 30, "r": 10, "b": 30}, legend={"itemsizing": "constant"},
                      xaxis={"showticklabels": False}, yaxis={"showticklabels": False})
    out.mkdir(parents=True, exist_ok=True)
    (out / "joint_map.plotly.json").write_text(fig.to_json(), encoding="utf-8")
    return True


def joint_map_section(placed_dir: Path, n_features: int, layer: int) -> Section:
    return Section(
        title="Joint feature map (all sizes)",
        summary=(f"The {n_features} features of every size on one UMAP of their decoder directions (the neighbours "
                 "stage's joint map), coloured by size. Hover a point for its top-activating tokens; click it to "
                 "open its feature page. The map is a picture, not a test: its faithfulness against permuted "
                 "maps is in the neighbourhoods section."),
        figures=(Figure("joint_map.plotly.json", "Joint UMAP of decoder directions, all sizes (colour = size). "
                        "Nearby points have similar decoder directions; distances between far clusters mean little."),),
        order=55)


def slug_anchor(slug: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", slug.lower()).strip("-")


def quality_table(rows: list[dict[str, Any]], columns: tuple[str, ...], browse: Callable[[int], str]) -> dict[str, Any]:
    """The sizes table: the quality columns and a link into the browser per size."""
    return {"header": list(columns),
            "rows": [{"size": r["size"], "cells": [r.get(c) for c in columns], "href": browse(int(r["size"]))}
                     for r in rows]}


def headline_metrics(blocks: list[dict[str, Any]]) -> dict[str, float]:
    """Every section's headline numbers, flat (``layer<L>.<slug>.<label>``), for DVC and MLflow."""
    out: dict[str, float] = {}
    for block in blocks:
        for item in block["sections"]:
            for number in item["section"].numbers:
                if number.value is None:
                    continue
                label = re.sub(r"[^a-z0-9]+", "_", number.label.lower()).strip("_")
                out[f"{item['slug'].replace('/', '.')}.{label}"] = float(number.value)
    return out
