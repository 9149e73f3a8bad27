"""The probing analysis in the report: mean sparse-probing accuracy of the largest dictionary at
the smallest and largest k beside k random latents, the full-residual probe beside chance, and the
first-letter gate beside its majority baseline, with what the gate means for absorption."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _ci(metrics: Mapping[str, float], key: str) -> tuple[float, float] | None:
    low, high = metric(metrics, f"{key}_ci_low"), metric(metrics, f"{key}_ci_high")
    return None if low is None or high is None else (low, high)


def gate_text(metrics: Mapping[str, float]) -> str:
    """What the first-letter gate says about absorption, with the numbers."""
    acc, majority = metric(metrics, "first_letter.accuracy"), metric(metrics, "first_letter.majority")
    factor = metric(metrics, "config.gate_factor") or 2.0
    if acc is None or majority is None:
        return ("The first-letter gate was not run (see the notes): absorption cannot be assessed at this layer.")
    ratio = acc / majority if majority else float("inf")
    numbers = (f"a linear probe on the residual reads the first letter of word-initial tokens with accuracy "
               f"{acc:.3f} on words it never saw, against {majority:.3f} for always guessing the commonest "
               f"letter ({ratio:.1f}x), {_fmt(metric(metrics, 'first_letter.shuffled'))} for the same probe on "
               f"shuffled labels and {_fmt(metric(metrics, 'first_letter.chance'))} for chance")
    if metric(metrics, "first_letter.passes"):
        return (f"First-letter gate: {numbers}. The letter is clearly readable here (above {factor:g}x the "
                "majority baseline), so absorption (Chanin et al. 2024) is measurable at this layer (the "
                "absorption section measures it).")
    return (f"First-letter gate: {numbers}. That is not clearly above the majority baseline (the gate asks for "
            f"{factor:g}x and an interval above the shuffled-label probe), so absorption cannot be measured at "
            "this layer.")


def _skipped(out_dir: Path) -> tuple[str, ...]:
    """The summary document's notes (skipped tasks and letters, with their reasons)."""
    path = out_dir / "probing_summary.json"
    if not path.is_file():
        return ()
    return tuple(json.loads(path.read_text(encoding="utf-8")).get("notes", []))


def section(metrics: Mapping[str, float], out_dir: Path) -> Section:
    layer, size = metric(metrics, "layer"), metric(metrics, "largest.size")
    k_keys = sorted({int(k.split(".")[1][1:]) for k in metrics if k.startswith("largest.k")})
    tasks = int(metric(metrics, "tasks") or 0)
    n = "n/a" if size is None else f"{size:.0f}"
    numbers = []
    for k in (k_keys[:1] + k_keys[-1:] if len(k_keys) > 1 else k_keys):
        numbers.append(Number(f"mean sparse-probing accuracy, k = {k}, n = {n} (null: k random active latents)",
                              metric(metrics, f"largest.k{k}.mean_accuracy"),
                              metric(metrics, f"largest.k{k}.mean_random"),
                              _ci(metrics, f"largest.k{k}.mean_accuracy")))
    residual = Number("mean accuracy of the full-residual probe (null: chance)",
                      metric(metrics, "residual.mean_accuracy"), 0.5 if tasks else None,
                      _ci(metrics, "residual.mean_accuracy"))
    letter = Number("first-letter probe accuracy (null: majority class)", metric(metrics, "first_letter.accuracy"),
                    metric(metrics, "first_letter.majority"), _ci(metrics, "first_letter.accuracy"))
    skipped = int(metric(metrics, "tasks_skipped") or 0)
    if tasks:
        shown = "; ".join(x.text() for x in numbers)
        probing = (f"{tasks} binary tasks probed ({skipped} skipped, see the notes). Largest dictionary (n = {n}): "
                   f"{shown}. {residual.text()}. A probe on k latents chosen by class-mean difference that beats k "
                   "random latents and approaches the residual says the dictionary holds the task's concept in few "
                   "latents.")
    else:
        probing = f"No task had enough examples to probe ({skipped} skipped, see the notes)."
    figures = (Figure("figures/probing.png",
                      "Left: mean test accuracy over tasks vs k per dictionary size (interval shaded), k random "
                      "active latents dashed, the full-residual probe black, chance dotted. Middle: each task at "
                      "the largest size, its residual probe as a square. Right: the first-letter gate (probe, "
                      f"shuffled labels, majority class, chance); accuracy {_fmt(letter.value)} vs majority "
                      f"{_fmt(letter.null)}."),)
    tables = (Table("tables/summary.csv", "Mean accuracy over tasks per size and k, with its interval, beside k "
                                          "random latents and the full residual."),
              Table("tables/accuracy.csv", "Every task, size and k: test accuracy with its Wilson interval, the "
                                           "random-k mean and sd over draws, the chosen latents; and each task's "
                                           "residual probe."),
              Table("tables/tasks.csv", "Every task, its train/test counts, or why it was skipped."))
    title = "Sparse probing and the first-letter gate" + ("" if layer is None else f" (layer {layer:.0f})")
    return Section(title=title, summary=" ".join([probing, gate_text(metrics)]), numbers=(*numbers, residual, letter),
                   figures=figures, tables=tables, order=80, notes=_skipped(out_dir))
