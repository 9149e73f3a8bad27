"""The splitting stage: every size's decoder and held-out codes in, the analysis out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from saeatlas.adapters import analysis_config, codes_dir, sizes
from saeatlas.analysis.common.job import analysis_job
from saeatlas.config import Params


def inputs(params: Params, layer: int, codes: Mapping[int, Any]) -> Any:
    """The analysis's inputs from code stores by size (the study's, or a seed replica's)."""
    import numpy as np

    from saeatlas.analysis.splitting.compute import SplittingInputs

    ns = tuple(sorted(codes))
    return SplittingInputs(ns, {n: np.asarray(codes[n].decoder()) for n in ns}, {n: codes[n].csr() for n in ns})


def run(params: Params, layer: int) -> dict[str, float]:
    """Match the features of each pair of adjacent sizes (``analysis/splitting/``)."""
    from saeatlas.analysis.splitting.compute import run as compute
    from saeatlas.analysis.splitting.config import SplittingConfig
    from saeatlas.codes import SparseCodes

    cfg = analysis_config(SplittingConfig, params)
    ns = sizes(params, "splitting", at_least=2)
    with analysis_job("splitting", params, layer) as job:
        stores = {n: SparseCodes.open(codes_dir(params, layer, n)) for n in ns}
        return job.write(compute(cfg, replace(inputs(params, layer, stores), prefixes=prefix_ends(params, max(ns)))))


def prefix_ends(params: Params, largest: int) -> tuple[int, ...]:
    """The largest SAE's inner prefix ends when it is a Matryoshka SAE (its splitting is then also
    read across its own prefixes), else none. The seed replicas skip this: not a seeds headline."""
    from saeatlas.config import matryoshka_prefixes

    if params.sae.architecture != "matryoshka":
        return ()
    return tuple(matryoshka_prefixes(params.sae.matryoshka_fractions, largest))
