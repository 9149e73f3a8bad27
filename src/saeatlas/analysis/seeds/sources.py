"""Which analyses a seed replica goes through and which of their numbers are headlines.

Each analysis is run by its own ``compute.run`` with its own config, on inputs its own stage
adapter builds (``<analysis>.stage.inputs``) from the replica's code stores: nothing about an
estimator is restated here, so a seed's numbers mean exactly what the study's numbers mean.
"""

from __future__ import annotations

from typing import Mapping

from saeatlas.adapters import analysis_config
from saeatlas.analysis.seeds.config import SeedsConfig
from saeatlas.config import Params

# analysis -> its headline metric keys ("{k}" is seeds.lobes_k); both our estimator and the
# published protocol where the analysis computes one.
HEADLINES: dict[str, tuple[str, ...]] = {
    "splitting": ("mean.similar_fraction", "mean.novel_fraction", "mean.leask_reconstruction_fraction"),
    "galaxy": ("largest.slope", "largest.slope_goc", "largest.negentropy", "largest.entropy_goc"),
    "lobes": ("k{k}.ami", "goc.k{k}.ami"),
    "scaling": ("completeness.freq50_times_alive",),
}


def headline_keys(cfg: SeedsConfig) -> tuple[str, ...]:
    return tuple(f"{name}.{key.format(k=cfg.lobes_k)}" for name, keys in HEADLINES.items() for key in keys)


def _prefixed(name: str, metrics: Mapping[str, float]) -> dict[str, float]:
    return {f"{name}.{k}": float(v) for k, v in metrics.items()}


def analysed(params: Params, layer: int, cfg: SeedsConfig, codes: Mapping[int, object]) -> dict[str, float]:
    """Every analysis's metrics on one replica (code stores by size), prefixed by the analysis."""
    from saeatlas.analysis.galaxy import compute as galaxy
    from saeatlas.analysis.galaxy import stage as galaxy_stage
    from saeatlas.analysis.galaxy.config import GalaxyConfig
    from saeatlas.analysis.lobes import compute as lobes
    from saeatlas.analysis.lobes import stage as lobes_stage
    from saeatlas.analysis.lobes.config import LobesConfig
    from saeatlas.analysis.scaling import compute as scaling
    from saeatlas.analysis.scaling import stage as scaling_stage
    from saeatlas.analysis.scaling.config import ScalingConfig
    from saeatlas.analysis.splitting import compute as splitting
    from saeatlas.analysis.splitting import stage as splitting_stage
    from saeatlas.analysis.splitting.config import SplittingConfig

    ns = tuple(sorted(codes))
    out = _prefixed("splitting", splitting.run(analysis_config(SplittingConfig, params),
                                               splitting_stage.inputs(params, layer, codes)).metrics)
    out.update(_prefixed("galaxy", galaxy.run(analysis_config(GalaxyConfig, params),
                                              galaxy_stage.inputs(params, layer, codes)).metrics))
    largest = ns[-1]
    out.update(_prefixed("lobes", lobes.run(analysis_config(LobesConfig, params),
                                            lobes_stage.inputs(params, layer, codes[largest])).metrics))
    scaling_cfg = analysis_config(ScalingConfig, params)
    out.update(_prefixed("scaling", scaling.run(scaling_cfg, scaling_stage.load_inputs(params, layer, scaling_cfg,
                                                                                      codes)).metrics))
    return out
