"""The published numbers the study is read against (``analysis/published.yaml``), as data.

Why a data file and not constants in each analysis: one figure (e.g. Li et al.'s layer-12 slope)
is printed by the analysis's metrics, its figure, its report section and the README table; one
entry with its source (paper, table or figure, model, layer, first- or second-hand) keeps them
in agreement and lets a reader see where each number comes from. Every analysis adds
``reference_metrics(<analysis>)`` to its metrics, so ``dvc metrics show`` prints
``reference.<name>`` beside our estimate and the published-protocol variant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

FIELDS = ("value", "paper", "where", "model", "layer", "hand", "protocol")
OPTIONAL = ("compare",)  # {ours: <metric key>, protocol: <metric key>}: the study's side-by-side table
HANDS = ("first", "second")


@dataclass(frozen=True)
class Published:
    """One published figure and where it comes from."""

    analysis: str
    name: str
    value: float
    paper: str
    where: str
    model: str
    layer: int | None
    hand: str  # "first" (the paper's own text, table or code) or "second" (survey, reviewer, read by eye)
    protocol: str
    # Our metric keys it is read against (in the analysis's metrics; the largest size's file for a
    # per-size analysis): "ours" is our estimator, "protocol" the published protocol on our data.
    ours: str | None = None
    protocol_key: str | None = None

    @property
    def key(self) -> str:
        """The metric key it is written under."""
        return f"reference.{self.name}"

    def label(self) -> str:
        """Short text for a report line: value, who, on what (and '(second-hand)' where it is)."""
        first_author = self.paper.split(",")[0].split(" et al")[0].split(" (")[0]
        year = next((w for w in self.paper.replace("(", " ").split() if w.isdigit() and len(w) == 4), "")
        who = f"{first_author} et al. {year}".strip()
        where = self.model.split(",")[0] + ("" if self.layer is None else f" layer {self.layer}")
        return f"≈ {self.value:g} ({who}, {where}{'; second-hand' if self.hand == 'second' else ''})"


def _check(analysis: str, name: str, entry: object) -> Published:
    where = f"published.yaml: {analysis}.{name}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping with {', '.join(FIELDS)}")
    missing = [f for f in FIELDS if f not in entry]
    extra = sorted(set(entry) - set(FIELDS) - set(OPTIONAL))
    if missing or extra:
        raise ValueError(f"{where}: missing {missing or 'nothing'}, unknown {extra or 'nothing'}")
    value = entry["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}.value must be a finite number, got {value!r}")
    if entry["hand"] not in HANDS:
        raise ValueError(f"{where}.hand must be one of {HANDS}, got {entry['hand']!r}")
    layer = entry["layer"]
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
        raise ValueError(f"{where}.layer must be an integer or null, got {layer!r}")
    compare = entry.get("compare") or {}
    if not isinstance(compare, dict) or set(compare) - {"ours", "protocol"} or \
            not all(isinstance(v, str) and v for v in compare.values()):
        raise ValueError(f"{where}.compare must map ours/protocol to metric keys, got {compare!r}")
    return Published(analysis, name, float(value), *(str(entry[f]) for f in ("paper", "where", "model")),
                     layer, str(entry["hand"]), str(entry["protocol"]), compare.get("ours"), compare.get("protocol"))


def parse(document: object) -> dict[str, dict[str, Published]]:
    """Validate a loaded ``published.yaml``: analysis -> name -> entry (names unique across analyses,
    since they become metric keys a reader greps for)."""
    if not isinstance(document, dict):
        raise ValueError("published.yaml: expected a mapping of analyses")
    out: dict[str, dict[str, Published]] = {}
    seen: dict[str, str] = {}
    for analysis, entries in document.items():
        if not isinstance(entries, dict):
            raise ValueError(f"published.yaml: {analysis} must map names to entries")
        out[analysis] = {}
        for name, entry in entries.items():
            if name in seen:
                raise ValueError(f"published.yaml: {name} appears under both {seen[name]} and {analysis}")
            seen[name] = analysis
            out[analysis][name] = _check(analysis, name, entry)
    return out


@lru_cache(maxsize=1)
def load() -> dict[str, dict[str, Published]]:
    """Every published figure, validated once per process."""
    text = resources.files("saeatlas.analysis").joinpath("published.yaml").read_text(encoding="utf-8")
    return parse(yaml.safe_load(text))


def published(analysis: str, name: str) -> Published:
    """One entry; a KeyError names what is missing (a typo in code, not a user error)."""
    try:
        return load()[analysis][name]
    except KeyError:
        raise KeyError(f"no published figure {analysis}.{name} in analysis/published.yaml") from None


def value(analysis: str, name: str) -> float:
    return published(analysis, name).value


def label(analysis: str, name: str) -> str:
    return published(analysis, name).label()


def reference_metrics(analysis: str) -> dict[str, float]:
    """``reference.<name>: value`` for every published figure of the analysis (none: empty)."""
    return {p.key: p.value for p in load().get(analysis, {}).values()}
