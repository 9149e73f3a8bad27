"""The seed spread in the report: each headline number's mean and spread over training seeds,
beside the study seed's within-seed interval."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric


def _headlines(metrics: Mapping[str, float]) -> list[str]:
    return sorted({k[: -len(".mean")] for k in metrics if k.endswith(".mean")})


def section(metrics: Mapping[str, float], out_dir: Path) -> Section:
    n_seeds = int(metric(metrics, "n_seeds") or 0)
    numbers = []
    wider = []
    for key in _headlines(metrics):
        mean, sd = metric(metrics, f"{key}.mean"), metric(metrics, f"{key}.sd")
        low, high = metric(metrics, f"{key}.within_ci_low"), metric(metrics, f"{key}.within_ci_high")
        ci = None if sd is None or mean is None else (mean - sd, mean + sd)
        label = f"{key} (mean ± sd over {metric(metrics, f'{key}.n_seeds') or 0:.0f} seeds)"
        numbers.append(Number(label, mean, ci=ci))
        if sd is not None and low is not None and high is not None and 2 * sd > (high - low):
            wider.append(key)
    if n_seeds < 2:
        summary = ("One training seed only (seeds.extra is empty): the spread over seeds is not estimated; every "
                   "interval in this report is within one seed.")
    else:
        summary = (f"{n_seeds} training seeds (sizes up to the largest retrained one), each analysed exactly as the "
                   f"study's own SAEs. {len(wider)} of {len(numbers)} headline numbers have a seed spread (±1 sd) "
                   "wider than the study seed's own within-seed interval"
                   + (f": {', '.join(wider)}." if wider else "."))
    return Section(
        title="Training seeds: how far the headline numbers move", summary=summary, numbers=tuple(numbers),
        figures=(Figure("figures/seed_spread.png", "Each headline number per training seed (filled: the study's "
                        "seed), with the study seed's within-seed interval shaded."),) if numbers else (),
        tables=(Table("tables/per_seed.csv", "Every headline number for every seed."),), order=95)
