"""The seed spread in the report: each headline number's mean and spread over training seeds,
beside the study seed's within-seed interval."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric


def _headlines(metrics: Mapping[str, float]) -> list[str]:
    return sorted({k[: -len(".mean")] for k in metrics if k.endswith(".mean")})


def section(metrics: Mapping[str, float], out_dir: Path) -> Section:
    """Per headline: the mean over seeds as the value, the seed sd in the label, and the study
    seed's own within-seed 95% interval in the CI column, so the two uncertainties sit side by side."""
    n_seeds = int(metric(metrics, "n_seeds") or 0)
    numbers = []
    wider = []
    for key in _headlines(metrics):
        mean, sd = metric(metrics, f"{key}.mean"), metric(metrics, f"{key}.sd")
        low, high = metric(metrics, f"{key}.within_ci_low"), metric(metrics, f"{key}.within_ci_high")
        count = int(metric(metrics, f"{key}.n_seeds") or 0)
        spread = "one seed: no spread" if sd is None else f"sd over seeds {sd:.3g}"
        ci = None if low is None or high is None else (low, high)
        numbers.append(Number(f"{key}: mean of {count} seed(s), {spread}"
                              + ("; CI: the study seed's own" if ci else ""), mean, ci=ci))
        # the within-seed sd behind a ± 1.96 sd interval, against the sd over seeds
        if sd is not None and ci is not None and sd > (high - low) / 3.92:
            wider.append(key)
    if n_seeds < 2:
        summary = ("One training seed only (seeds.extra is empty): the spread over seeds is not estimated; every "
                   "interval in this report is within one seed.")
    else:
        with_ci = sum(1 for n in numbers if n.ci is not None)
        summary = (f"{n_seeds} training seeds for the sizes up to the largest retrained one, each analysed exactly "
                   f"as the study's own SAEs. Of the {with_ci} headline numbers with a within-seed interval, "
                   f"{len(wider)} move more between seeds (sd over seeds) than within one (the interval's sd)"
                   + (f": {', '.join(wider)}." if wider else "."))
    return Section(
        title="Training seeds: how far the headline numbers move", summary=summary, numbers=tuple(numbers),
        figures=(Figure("figures/seed_spread.png", "Each headline number per training seed (filled: the study's "
                        "seed), with the study seed's within-seed interval shaded."),) if numbers else (),
        tables=(Table("tables/per_seed.csv", "Every headline number for every seed."),), order=95)
