"""Stage ``neighbours``: every size's frozen decoder in, nearest neighbours and UMAP maps out."""

from __future__ import annotations

from saeatlas.adapters import analysis_config, codes_dir, sizes
from saeatlas.analysis.common.job import analysis_job
from saeatlas.config import Params


def run(params: Params, layer: int) -> dict[str, float]:
    import numpy as np

    from saeatlas.analysis.neighbours.compute import NeighboursInputs, run as compute
    from saeatlas.analysis.neighbours.config import NeighboursConfig
    from saeatlas.codes import SparseCodes

    cfg = analysis_config(NeighboursConfig, params)
    all_sizes = sizes(params, "neighbours")
    with analysis_job("neighbours", params, layer) as job:
        # Every size's decoder rows, as the features stage froze them beside the codes.
        decoders = {n: np.asarray(SparseCodes.open(codes_dir(params, layer, n)).decoder()) for n in all_sizes}
        return job.write(compute(cfg, NeighboursInputs(all_sizes, decoders)))
