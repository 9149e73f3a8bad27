"""The absorption analysis in the report: the first-letter gate's number, then (past it) the mean
absorption rate per dictionary size beside its random-direction null and the false-negative rate,
with a verdict on how it moves with size; below the gate, why nothing was measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric


def _ci(metrics: Mapping[str, float], key: str) -> tuple[float, float] | None:
    low, high = metric(metrics, f"{key}_ci_low"), metric(metrics, f"{key}_ci_high")
    return None if low is None or high is None else (low, high)


def _sizes(metrics: Mapping[str, float]) -> list[int]:
    return sorted({int(k.split(".")[0][1:]) for k in metrics
                   if k.startswith("n") and k.endswith(".absorption_rate") and k[1].isdigit()})


def gate_text(metrics: Mapping[str, float]) -> str:
    acc, majority = metric(metrics, "gate.accuracy"), metric(metrics, "gate.majority")
    factor = metric(metrics, "config.gate_factor") or 2.0
    if acc is None or majority is None:
        return "The first-letter gate was not run (see the notes), so absorption cannot be measured at this layer."
    numbers = (f"first-letter probe accuracy {acc:.3f} on unseen words against {majority:.3f} for the majority "
               f"class ({acc / majority if majority else float('inf'):.1f}x; shuffled labels "
               f"{metric(metrics, 'gate.shuffled') or float('nan'):.3f})")
    if metric(metrics, "gate.passes"):
        return f"First-letter gate passed: {numbers}."
    return (f"Absorption cannot be measured at this layer: {numbers}, below the gate of {factor:g}x the majority "
            "baseline with an interval above the shuffled-label probe.")


def verdict(metrics: Mapping[str, float]) -> str:
    """Above the null or not (per size, from the paired interval of rate - null), and the trend
    from the smallest to the largest size (the paired interval of their difference over letters),
    with the numbers."""
    sizes = _sizes(metrics)
    if not sizes:
        return ""
    rate = {s: metric(metrics, f"n{s}.absorption_rate") for s in sizes}
    null = {s: metric(metrics, f"n{s}.absorption_rate_null") for s in sizes}
    diff = {s: _ci(metrics, f"n{s}.absorption_minus_null") for s in sizes}
    above = [s for s in sizes if diff[s] is not None and diff[s][0] > 0]
    first, last = sizes[0], sizes[-1]
    if not above:
        return (f"Absorption does not differ from the null at any size (n = {first}: {rate[first]:.3f} vs null "
                f"{null[first]:.3f}; n = {last}: {rate[last]:.3f} vs null {null[last]:.3f}; the interval of "
                "rate - null includes 0 or no interval was computed).")
    if len(sizes) < 2:
        return (f"Absorption lies above the random-direction null ({rate[first]:.3f} vs {null[first]:.3f} at "
                f"n = {first}; one dictionary size, so no trend with size to read).")
    change, ci = metric(metrics, "absorption_rate_change"), _ci(metrics, "absorption_rate_change")
    span = f"from {rate[first]:.3f} at n = {first} to {rate[last]:.3f} at n = {last}"
    if change is not None and ci is not None and ci[0] > 0:
        trend = f"rises with size, {span} (paired change {change:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}])"
    elif change is not None and ci is not None and ci[1] < 0:
        trend = f"falls with size, {span} (paired change {change:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}])"
    elif change is not None and ci is not None:
        trend = (f"shows no clear trend with size, {span} (paired change {change:+.3f}, interval "
                 f"[{ci[0]:+.3f}, {ci[1]:+.3f}] includes 0)")
    else:
        trend = f"goes {span} (no interval for the change)"
    return (f"Absorption lies above the random-direction null at {len(above)} of {len(sizes)} sizes and {trend}.")


def _notes(out_dir: Path) -> tuple[str, ...]:
    path = out_dir / "absorption_summary.json"
    if not path.is_file():
        return ()
    return tuple(json.loads(path.read_text(encoding="utf-8")).get("notes", []))


def section(metrics: Mapping[str, float], out_dir: Path) -> Section:
    layer, size = metric(metrics, "layer"), metric(metrics, "largest.size")
    title = "Feature absorption (first letters)" + ("" if layer is None else f" (layer {layer:.0f})")
    gate = Number("first-letter probe accuracy (null: majority class)", metric(metrics, "gate.accuracy"),
                  metric(metrics, "gate.majority"), _ci(metrics, "gate.accuracy"))
    figure = Figure("figures/absorption.png", "")
    if not metric(metrics, "gate.passes"):
        return Section(title=title, summary=gate_text(metrics), numbers=(gate,),
                       figures=(Figure(figure.path, "The first-letter gate: probe, shuffled labels, majority class, "
                                                    f"chance; accuracy {gate.text()}."),),
                       order=85, notes=_notes(out_dir))
    n = "n/a" if size is None else f"{size:.0f}"
    rate = Number(f"mean absorption rate over letters, n = {n} (null: random direction)",
                  metric(metrics, "largest.absorption_rate"), metric(metrics, "largest.absorption_rate_null"),
                  _ci(metrics, "largest.absorption_rate"))
    fn = Number(f"mean false-negative rate (main latents silent on a probe true positive), n = {n}",
                metric(metrics, "largest.false_negative_rate"), None, _ci(metrics, "largest.false_negative_rate"))
    f1 = Number(f"mean test F1 of the main latents' k-sparse probe, n = {n}", metric(metrics, "largest.main_latent_f1"))
    letters = int(metric(metrics, "letters") or 0)
    share = metric(metrics, "config.absorption_share") or 0.4
    cos = metric(metrics, "config.probe_cos") or 0.025
    rows = "; ".join(f"n = {s}: {metric(metrics, f'n{s}.absorption_rate') or 0:.3f} (null "
                     f"{metric(metrics, f'n{s}.absorption_rate_null') or 0:.3f}, false negatives "
                     f"{metric(metrics, f'n{s}.false_negative_rate') or 0:.3f})" for s in _sizes(metrics))
    summary = " ".join([
        gate_text(metrics),
        f"{letters} letters measured. A probe true positive on which none of the letter's main latents fires is "
        f"absorbed when another active latent with decoder cosine >= {cos:g} to the letter's probe carries at least "
        f"{share:g} of the probe's positive projection of the reconstruction and of the letter's mean projection "
        f"(Chanin et al. 2024's thresholds, our linear attribution; methods in absorption_summary.json). "
        f"Absorption rate by size: {rows}.",
        f"{rate.text()}; {fn.text()}; {f1.text()}.",
        verdict(metrics),
    ])
    figures = (Figure(figure.path, "Left: mean absorption rate over letters vs dictionary size (bootstrap interval "
                                   "over letters shaded), the false-negative rate dashed and the random-direction "
                                   f"null dotted; largest size {rate.text()}. Right: each letter at the largest size, "
                                   "absorption and null rates, the false-negative rate as a tick."),)
    tables = (Table("tables/summary.csv", "Per size: mean rates over letters with their intervals, the main "
                                          "latents' mean F1 and count, letters with split features."),
              Table("tables/letters.csv", "Per size and letter: probe true positives, false negatives, absorbed "
                                          "tokens (and the null's), the main latents with the F1 at each k, the "
                                          "latent that absorbs most."))
    return Section(title=title, summary=summary, numbers=(gate, rate, fn, f1), figures=figures, tables=tables,
                   order=85, notes=_notes(out_dir))
