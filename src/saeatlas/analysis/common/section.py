"""The report-section interface: what an analysis shows a reader.

Each analysis folder has ``section.py`` with ``section(metrics, out_dir) -> Section``: built from
the analysis's own written outputs (its flat metrics and the files under its output directory),
so a report iterates over the stage table's analyses and never names one (the integration
test does exactly that on the smoke study). A section says
what it found *with its null*; where an analysis finds nothing above its null, its summary says
so with the number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class Number:
    """One headline number beside its null, its interval and, where one exists, the published value."""

    label: str
    value: float | None
    null: float | None = None
    ci: tuple[float, float] | None = None
    published: str | None = None  # e.g. "≈ 0.65 (Leask et al. 2025)"

    def text(self, digits: int = 3) -> str:
        def fmt(v: float | None) -> str:
            return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"

        out = f"{self.label}: {fmt(self.value)}"
        if self.ci is not None:
            out += f" [{fmt(self.ci[0])}, {fmt(self.ci[1])}]"
        if self.null is not None:
            out += f" (null {fmt(self.null)})"
        if self.published:
            out += f"; published {self.published}"
        return out


@dataclass(frozen=True)
class Figure:
    """A file under the analysis's output directory (PNG, or ``.plotly.json`` for an interactive view)."""

    path: str
    caption: str  # what it shows, the null it is compared with, and the number


@dataclass(frozen=True)
class Table:
    path: str  # a CSV under the output directory
    caption: str


@dataclass(frozen=True)
class Section:
    title: str
    summary: str
    numbers: tuple[Number, ...] = ()
    figures: tuple[Figure, ...] = ()
    tables: tuple[Table, ...] = ()
    order: int = 100  # position in the report (the study's order: training, splitting, scaling, geometry)
    notes: tuple[str, ...] = field(default_factory=tuple)  # e.g. "not estimable: ..." lines

    def missing_files(self, out_dir: Path) -> list[str]:
        """Figures and tables the section names that are not on disk (a test checks none are)."""
        return [item.path for item in (*self.figures, *self.tables) if not (out_dir / item.path).is_file()]


def metric(metrics: Mapping[str, float], key: str) -> float | None:
    """A metric or None when the analysis did not estimate it (absent or NaN)."""
    value = metrics.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)
