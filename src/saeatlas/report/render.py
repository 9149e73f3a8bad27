"""Render the report: sections (the analyses' own and the core ones) into one ``index.html`` that
opens from disk. Jinja2 with autoescape renders the page; figures become files beside it: PNGs
copied, Plotly figures as small ``.js`` files that hand their (escaped) JSON to ``report.js``;
Plotly.js itself is copied once from the installed ``plotly`` package into ``static/`` (no CDN).
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saeatlas.analysis.common.section import Section
from saeatlas.artifacts import write_bytes_atomic
from saeatlas.report.escape import js_literal

ASSETS = Path(__file__).with_name("assets")
TABLE_PREVIEW_ROWS = 12


@dataclass(frozen=True)
class Placed:
    """A section with where its files live: ``source`` (the stage's output folder) and ``slug``
    (its folder under ``results/report/figures/``)."""

    section: Section
    source: Path
    slug: str
    layer: int | str | None  # the block's key (``assemble.block_key``)


def plotly_js() -> Path:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the plotly package ships no plotly.min.js")
    return path


def copy_static(out: Path) -> None:
    static = out / "static"
    static.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plotly_js(), static / "plotly.min.js")
    for asset in ("report.css", "report.js"):
        shutil.copyfile(ASSETS / asset, static / asset)


def _table_preview(path: Path) -> dict[str, Any]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        rows = [row for _, row in zip(range(TABLE_PREVIEW_ROWS), reader)]
        more = sum(1 for _ in reader)
    return {"header": header, "rows": rows, "more": more}


def place_files(placed: Placed, out: Path) -> dict[str, Any]:
    """Copy or convert the section's figures and tables under ``out``; what the template shows."""
    folder = out / "figures" / placed.slug
    folder.mkdir(parents=True, exist_ok=True)
    figures = []
    for i, fig in enumerate(placed.section.figures):
        src = placed.source / fig.path
        name = Path(fig.path).name
        entry = {"caption": fig.caption, "id": f"fig-{placed.slug.replace('/', '-')}-{i}"}
        if name.endswith(".plotly.json"):
            target = folder / (name[: -len(".plotly.json")] + ".js")
            payload = src.read_text(encoding="utf-8")
            write_bytes_atomic(target, f"saeatlasFigure({js_literal(entry['id'])}, {payload_safe(payload)}, "
                               f"{js_literal(placed.layer)});\n"
                               .encode("utf-8"))
            entry["script"] = target.relative_to(out).as_posix()
        else:
            shutil.copyfile(src, folder / name)
            entry["image"] = (folder / name).relative_to(out).as_posix()
        figures.append(entry)
    tables = []
    for table in placed.section.tables:
        src = placed.source / table.path
        shutil.copyfile(src, folder / Path(table.path).name)
        tables.append({"caption": table.caption, "href": (folder / Path(table.path).name).relative_to(out).as_posix(),
                       **_table_preview(src)})
    return {"figures": figures, "tables": tables}


def payload_safe(json_text: str) -> str:
    """A JSON document (a Plotly figure) re-serialised through ``js_literal``: the figure's labels
    may hold corpus text."""
    import json

    return js_literal(json.loads(json_text))


def render(out: Path, context: dict[str, Any]) -> None:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                      autoescape=select_autoescape(["html", "j2"], default=True), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = number_text
    html = env.get_template("index.html.j2").render(**context)
    write_bytes_atomic(out / "index.html", html.encode("utf-8"))


def number_text(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return "n/a"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.{digits}g}"
