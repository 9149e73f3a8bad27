"""The scaling analysis in the report: how many latents stay alive as the dictionary grows (against
"every latent alive"), and where a concept gets its own latent (against the paper's "frequency
slightly below 1 / alive latents"), from the written metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

from saeatlas.analysis.common.published import label, value
from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric


def _ci(metrics: Mapping[str, float], key: str) -> tuple[float, float] | None:
    lo, hi = metric(metrics, f"{key}_ci_low"), metric(metrics, f"{key}_ci_high")
    return None if lo is None or hi is None else (lo, hi)


def _x50_reason(out_dir: Path) -> str:
    """Why the 50% point was not estimated, in ``scaling_summary.json``'s words."""
    path = out_dir / "scaling_summary.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    return str(doc.get("completeness", {}).get("x50_reason") or "not estimable")


def section(metrics: Mapping[str, float], out_dir: Path) -> Section:
    sizes = sorted(int(m.group(1)) for k in metrics if (m := re.fullmatch(r"n(\d+)\.alive", k)))
    alpha = Number("alpha", metric(metrics, "alive_power_law.exponent"), null=1.0,
                   ci=_ci(metrics, "alive_power_law.exponent"))
    f50 = Number("frequency x alive", metric(metrics, "completeness.freq50_times_alive"),
                 ci=_ci(metrics, "completeness.freq50_times_alive"),
                 published=label("scaling", "templeton2024_completeness_freq50_times_alive")
                 + ": about one occurrence per alive feature")
    p_x = Number("LR p of one curve in log10(frequency x alive)", metric(metrics, "completeness.collapse.lr_pvalue"))
    p_u = Number("in log10 frequency", metric(metrics, "completeness.collapse.lr_pvalue_unrescaled"))
    ratio = Number("SD of per-size 50% points, rescaled / not", metric(metrics, "completeness.collapse.spread_ratio"),
                   null=1.0)
    dead = [metric(metrics, f"n{n}.dead_fraction") for n in sizes]
    dead_top = Number(f"dead fraction at n = {sizes[-1] if sizes else 'n/a'}", dead[-1] if dead else None,
                      published=f"{label('scaling', 'templeton2024_dead_fraction_1m')} at 1M latents "
                      f"({value('scaling', 'templeton2024_dead_fraction_4m'):g} at 4M, "
                      f"{value('scaling', 'templeton2024_dead_fraction_34m'):g} at 34M)")
    judged, total = (int(metric(metrics, f"completeness.concepts_{k}") or 0) for k in ("judged", "total"))
    pairs, exist, absent = (int(metric(metrics, f"completeness.pairs_{k}") or 0) for k in ("judged", "exist", "absent"))
    span = metric(metrics, "completeness.frequency_span_decades")

    summary = (f"Over {len(sizes)} size(s) ({', '.join(map(str, sizes))}) on "
               f"{int(metric(metrics, 'evaluated_tokens') or 0)} evaluated tokens, ")
    summary += (f"alive latents grow as n^alpha (null 1: all alive), {alpha.text()}" if alpha.value is not None
                else "the alive power law was not fitted (alive_power_law.estimated = 0)")
    if len(dead) > 1 and None not in (dead[0], dead[-1]):
        sm = ", ".join(f"{value('scaling', f'templeton2024_dead_fraction_{k}'):g}" for k in ("1m", "4m", "34m"))
        summary += (f"; the dead fraction goes from {dead[0]:.3g} to {dead[-1]:.3g} (Templeton et al. 2024: "
                    f"{sm} at 1M, 4M and 34M latents, dictionaries 50-2000x larger than ours)")
    summary += (f". {judged} of {total} concepts were judged (shipped lists and corpus words"
                + (f", frequencies over {span:.2g} decades" if span is not None else "") + f"); {exist} of {pairs} "
                f"(concept, size) pairs have a concept-specific latent and {absent} do not. ")
    if f50.value is None:
        summary += f"The 50% point was not estimated (completeness.x50_estimated = 0): {_x50_reason(out_dir)}. "
    else:
        summary += (f"P(feature exists) = 50% at {f50.text()}"
                    + (". " if f50.ci else " (no CI: completeness.x50_ci_estimated = 0). "))
    summary += (f"Collapse across sizes (high p: one shared curve fits): {p_x.text()}, {p_u.text()}"
                if p_x.value is not None else
                "The collapse test across sizes was not run (completeness.collapse.lr_estimated = 0)")
    summary += f"; {ratio.text()}." if ratio.value is not None else "."


    figures = [
        Figure("figures/alive_power_law.png", "Alive latents against size (log-log) with the fitted power law, "
               f"dotted: every latent alive; {alpha.text()}. Right: dead fraction."),
        Figure("figures/density_distribution.png", "Log10 firing densities of the alive latents per size (share "
               "of the dictionary); dotted: one firing on the evaluation set."),
        Figure("figures/completeness.plotly.json", "Every judged (concept, size) pair (exists, jittered) against "
               "log10(frequency x alive), with the shared Firth-logistic fit where estimated."),
    ]
    if judged:
        figures.insert(2, Figure("figures/completeness_curves.png", "Share of concepts with a specific latent per "
                                 "size, in log10(frequency x alive) (left, shared fit) and in log10 frequency "
                                 f"(right); {f50.text()}; {ratio.text()}."))
    missing = (("alive power law", alpha), ("completeness 50% point", f50), ("collapse test", p_x))
    return Section(
        title="Scaling with dictionary size and feature completeness", summary=summary,
        numbers=(alpha, dead_top, f50, p_x, p_u, ratio), figures=tuple(figures),
        tables=(Table("tables/sizes.csv", "Per size: alive, dead, density quantiles, bootstrap spread."),
                Table("tables/power_law_fits.csv", "Power laws of alive, dead and median density in n, with the "
                      "context-bootstrap CI, the percentile interval and the OLS standard error."),
                Table("tables/concepts.csv", "Every concept (shipped lists and corpus words): frequency on all "
                      "tokens and on the training split, evaluation occurrences, judged or why not."),
                Table("tables/completeness_per_size.csv", "Per size: pairs with a concept-specific latent and the "
                      "per-size 50% point (or why none).")),
        order=30, notes=tuple(f"{label}: not estimated" for label, n in missing if n.value is None),
    )
