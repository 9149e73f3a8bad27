"""Stage adapter of the galaxy analysis: every size's decoder rows (as the features stage froze
them beside the codes) and a sample of the layer's held-out activation rows, then
``compute.run`` and the shared writer."""

from __future__ import annotations

from typing import Any, Mapping

from saeatlas.adapters import analysis_config, codes_dir, sizes, store_dir
from saeatlas.analysis.common.job import analysis_job
from saeatlas.analysis.galaxy.config import GalaxyConfig
from saeatlas.config import Params


def inputs(params: Params, layer: int, codes: Mapping[int, Any]) -> Any:
    """The analysis's inputs from code stores by size (the study's, or a seed replica's)."""
    import numpy as np

    from saeatlas.activations import ActivationStore
    from saeatlas.analysis.galaxy.compute import GalaxyInputs

    cfg = analysis_config(GalaxyConfig, params)
    ns = tuple(sorted(codes))
    # ordinary held-out rows (massive activations left out, as in training), normalised
    activations = ActivationStore.open(store_dir(params, layer, "eval")).sample_ordinary(cfg.max_points, cfg.seed)
    return GalaxyInputs(layer, ns, {n: np.asarray(codes[n].decoder()) for n in ns}, activations)


def run(params: Params, layer: int) -> dict[str, float]:
    """Eigenvalue spectrum and clustering negentropy of the decoder cloud (``analysis/galaxy/``)."""
    from saeatlas.analysis.galaxy.compute import run as compute
    from saeatlas.codes import SparseCodes

    cfg = analysis_config(GalaxyConfig, params)
    all_sizes = sizes(params, "galaxy")
    with analysis_job("galaxy", params, layer) as job:
        stores = {n: SparseCodes.open(codes_dir(params, layer, n)) for n in all_sizes}
        return job.write(compute(cfg, inputs(params, layer, stores)))
