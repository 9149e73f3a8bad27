"""Mean and spread of each headline number over training seeds, beside the study seed's own
within-seed interval (methods: the package docstring). Pure: per-seed metrics in, output out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from saeatlas.analysis.common.output import AnalysisOutput
from saeatlas.analysis.seeds.figures import CI_SUFFIXES, finite, spread_figure



@dataclass
class SeedsInputs:
    """Every seed's headline metrics (seed -> {headline: value}); ``study_seed`` is ``sae.seed``,
    whose metrics may also carry ``<headline>_ci_low/high``."""

    study_seed: int
    per_seed: Mapping[int, Mapping[str, float]]
    headlines: tuple[str, ...]  # the keys compared, in the order the report shows them

    def validate(self) -> None:
        if self.study_seed not in self.per_seed:
            raise ValueError(f"the study's seed {self.study_seed} has no metrics")



def spread(values: Mapping[int, float]) -> dict[str, float]:
    """mean, sample sd (ddof = 1; left out for one seed), min, max and the count of seeds."""
    arr = np.array([float(v) for v in values.values()])
    out = {"mean": float(arr.mean()), "min": float(arr.min()), "max": float(arr.max()), "n_seeds": len(arr)}
    if len(arr) > 1:
        out["sd"] = float(arr.std(ddof=1))
    return out


def run(inputs: SeedsInputs) -> AnalysisOutput:
    """Per headline: its value per seed, the spread over the seeds that estimated it, and the study
    seed's within-seed interval. A headline a seed did not estimate is left out of that seed (and
    said in the table), never imputed."""
    inputs.validate()
    seeds = sorted(inputs.per_seed)
    metrics: dict[str, float] = {"n_seeds": len(seeds), "study_seed": inputs.study_seed}
    rows = []
    for key in inputs.headlines:
        values = {s: float(inputs.per_seed[s][key]) for s in seeds if finite(inputs.per_seed[s].get(key))}
        for s in seeds:
            rows.append({"seed": s, "headline": key, "value": values.get(s),
                         "study_seed": int(s == inputs.study_seed)})
        if not values:
            continue
        metrics.update({f"{key}.{name}": v for name, v in spread(values).items()})
        metrics.update({f"{key}.seed{s}": v for s, v in values.items()})
        own = inputs.per_seed[inputs.study_seed]
        if all(finite(own.get(key + suffix)) for suffix in CI_SUFFIXES):
            metrics[f"{key}.within_ci_low"] = float(own[key + "_ci_low"])
            metrics[f"{key}.within_ci_high"] = float(own[key + "_ci_high"])
    figures = {"seed_spread": spread_figure(inputs.per_seed, inputs.study_seed, inputs.headlines)} \
        if inputs.headlines else {}
    return AnalysisOutput(metrics=metrics, tables={"per_seed": rows}, figures=figures)
