"""The splitting stage: every size's decoder and held-out codes in, the analysis out."""

from __future__ import annotations

from saeatlas.adapters import analysis_config, codes_dir, sizes
from saeatlas.analysis.common.job import analysis_job
from saeatlas.config import Params


def run(params: Params, layer: int) -> dict[str, float]:
    """Match the features of each pair of adjacent sizes (``analysis/splitting/``)."""
    import numpy as np

    from saeatlas.analysis.splitting.compute import SplittingInputs
    from saeatlas.analysis.splitting.compute import run as compute
    from saeatlas.analysis.splitting.config import SplittingConfig
    from saeatlas.codes import SparseCodes

    cfg = analysis_config(SplittingConfig, params)
    ns = sizes(params, "splitting", at_least=2)
    with analysis_job("splitting", params, layer) as job:
        stores = {n: SparseCodes.open(codes_dir(params, layer, n)) for n in ns}
        decoders = {n: np.asarray(stores[n].decoder()) for n in ns}
        codes = {n: stores[n].csr() for n in ns}
        return job.write(compute(cfg, SplittingInputs(ns, decoders, codes)))
