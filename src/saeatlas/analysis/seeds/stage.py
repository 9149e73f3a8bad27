"""The seeds stage: retrain the sizes up to ``seeds.max_size`` with every extra seed, run the
analyses on each replica exactly as on the study's own SAEs, and write the spread."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

from saeatlas.adapters import RESULTS, analysis_config, codes_dir, sae_dir, sizes, store_dir
from saeatlas.analysis.common.job import analysis_job
from saeatlas.analysis.seeds.config import SeedsConfig
from saeatlas.config import Params
from saeatlas.errors import ParamsError

log = logging.getLogger(__name__)

# Trained replicas live here, outside the stage's outputs (which Snakemake and DVC delete before a
# run), bound to the store and the training params: a change to an analysis key re-trains nothing.
CACHE = RESULTS / "cache" / "seeds"
WEIGHTS_KEY = "sae_weights_sha256"  # in binding.json beside what the replica is bound to


def _sizes(params: Params, cfg: SeedsConfig) -> tuple[int, ...]:
    ns = tuple(n for n in sizes(params, "seeds") if n <= cfg.max_size)
    if len(ns) < 2:
        raise ParamsError(f"seeds.max_size: {cfg.max_size} keeps {list(ns)} of sae.sizes {sorted(params.sae.sizes)}; "
                          "the splitting headline needs at least two sizes")
    if params.sae.seed in cfg.extra:
        raise ParamsError(f"seeds.extra: {list(cfg.extra)} repeats sae.seed = {params.sae.seed}")
    from saeatlas.analysis.lobes.config import LobesConfig

    lobes = analysis_config(LobesConfig, params)
    if cfg.lobes_k not in lobes.k_values:
        raise ParamsError(f"seeds.lobes_k: {cfg.lobes_k} is not one of lobes.k_values {list(lobes.k_values)}")
    return ns


def headlines(cfg: SeedsConfig, ns: tuple[int, ...]) -> tuple[str, ...]:
    """The keys compared across seeds, in report order."""
    from saeatlas.analysis.seeds import sources

    return (*(f"n{n}.fvu" for n in ns), *sources.headline_keys(cfg),
            *(f"cross_seed.n{n}.leask_reconstruction_fraction" for n in ns))


def _trained(params: Params, layer: int, size: int, seed: int, store: Any, device: Any) -> Path:
    """The replica SAE of ``size`` trained with ``seed`` (exported, SAELens layout): from the cache
    when it was trained on this store with these settings, else trained now (resumable)."""
    from saeatlas.activations import MANIFEST
    from saeatlas.artifacts import sha256_file, write_json_atomic
    from saeatlas.pipeline import STAGE
    from saeatlas.sae.io import export_sae
    from saeatlas.sae.train import TrainConfig, train_sae
    # private, imported as is: renaming it would change train_sae's code and so invalidate every trained SAE
    from saeatlas.stages.train_sae import _export_metadata as export_metadata

    out = CACHE / params.model.name / f"layer{layer}" / params.sae.architecture / f"seed{seed}" / f"n{size}"
    binding = {"store_manifest_sha256": sha256_file(store.path / MANIFEST),
               "params": params.hash(STAGE["train_sae"].params), "seed": str(seed)}
    recorded = _read_binding(out / "binding.json")
    weights = out / "sae_weights.safetensors"
    if recorded is not None and {k: v for k, v in recorded.items() if k != WEIGHTS_KEY} == binding \
            and (out / "cfg.json").is_file() and weights.is_file() and recorded.get(WEIGHTS_KEY) == sha256_file(weights):
        log.info("seed %d n=%d: trained replica reused from %s", seed, size, out)
        return out
    if recorded is not None:
        log.warning("seed %d n=%d: cached replica in %s is for other data or settings, or damaged: retrained",
                    seed, size, out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cfg = replace(TrainConfig.from_params(params.sae, size), seed=seed)
    log.info("seed %d n=%d: training the replica", seed, size)
    result = train_sae(cfg, store, device, checkpoint=out.with_suffix(".checkpoint.pt"), binding=binding)
    export_sae(result.sae, out, store.scale, export_metadata(params, layer))
    # last: an interrupted export is retrained; the weights' checksum catches a damaged file later
    write_json_atomic(out / "binding.json", {**binding, WEIGHTS_KEY: sha256_file(weights)})
    out.with_suffix(".checkpoint.pt").unlink(missing_ok=True)
    return out


def _read_binding(path: Path) -> dict[str, str] | None:
    """A replica's binding, or None when absent or unreadable (then it is retrained)."""
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _fvu(sae_path: Path, eval_store: Any, params: Params, device: Any) -> float:
    from saeatlas.evaluate import reconstruction_metrics
    from saeatlas.sae.io import load_sae

    sae, _ = load_sae(sae_path, device)
    metrics, _ = reconstruction_metrics(sae, eval_store, params.evaluate.batch_size, params.evaluate.dense_threshold,
                                        device)
    return float(metrics["fvu"])


def _replica(params: Params, layer: int, ns: tuple[int, ...], cfg: SeedsConfig, sae_of: Callable[[int], Path],
             codes_of: Callable[[int], Path], eval_store: Any, device: Any) -> dict[str, float]:
    """One seed's headline metrics (with the analyses' own within-seed intervals)."""
    from saeatlas.analysis.seeds import sources
    from saeatlas.codes import SparseCodes

    out = {f"n{n}.fvu": _fvu(sae_of(n), eval_store, params, device) for n in ns}
    out.update(sources.analysed(params, layer, cfg, {n: SparseCodes.open(codes_of(n)) for n in ns}))
    return out


def _cross_seed(params: Params, layer: int, ns: tuple[int, ...], replica_codes: Callable[[int], Path]
                ) -> dict[str, float]:
    """Leask et al.'s rule between two seeds of the *same* size: the share of the replica's latents
    whose best decoder cosine to the study seed's is at least ``splitting.leask_cos``. It is the
    ceiling the across-size fraction can be read against: a dictionary that does not reproduce
    itself under a new seed cannot reproduce a smaller one."""
    import numpy as np

    from saeatlas.analysis.common.linalg import best_decoder_matches
    from saeatlas.analysis.splitting.compute import share_at_least
    from saeatlas.analysis.splitting.config import SplittingConfig
    from saeatlas.codes import SparseCodes

    cut = analysis_config(SplittingConfig, params).leask_cos
    out = {}
    for n in ns:
        own = np.asarray(SparseCodes.open(codes_dir(params, layer, n)).decoder())
        other = np.asarray(SparseCodes.open(replica_codes(n)).decoder())
        _, cos = best_decoder_matches(own, other, desc=f"cross-seed cosines n={n}")
        out[f"cross_seed.n{n}.leask_reconstruction_fraction"] = share_at_least(cos, np.ones(len(cos), bool), cut)
    return out


def run(params: Params, layer: int, device: str = "auto") -> dict[str, float]:
    """Spread of the headline numbers over training seeds (``analysis/seeds/``)."""
    from saeatlas.activations import ActivationStore
    from saeatlas.analysis.seeds.compute import SeedsInputs
    from saeatlas.analysis.seeds.compute import run as compute
    from saeatlas.artifacts import replace_dir
    from saeatlas.features import encode_store
    from saeatlas.lm import resolve_device
    from saeatlas.sae.io import load_sae

    cfg = analysis_config(SeedsConfig, params)
    ns = _sizes(params, cfg)
    torch_device = resolve_device(device)
    with analysis_job("seeds", params, layer) as job:
        train_store = ActivationStore.open(store_dir(params, layer, "train"))
        eval_store = ActivationStore.open(store_dir(params, layer, "eval"))
        per_seed: dict[int, Mapping[str, float]] = {
            params.sae.seed: _replica(params, layer, ns, cfg, lambda n: sae_dir(params, layer, n),
                                      lambda n: codes_dir(params, layer, n), eval_store, torch_device)}
        for seed in cfg.extra:
            saes = {n: _trained(params, layer, n, seed, train_store, torch_device) for n in ns}
            scratch = (CACHE / params.model.name / f"layer{layer}" / params.sae.architecture / f"seed{seed}"
                       / "codes.partial")
            shutil.rmtree(scratch, ignore_errors=True)
            for n in ns:  # the held-out codes of the replica, as the features stage encodes them
                sae, _ = load_sae(saes[n], torch_device)
                partial = scratch / f"n{n}.partial"
                encode_store(sae, eval_store, partial, params.features.batch_size, params.features.max_active,
                             torch_device)
                replace_dir(partial, scratch / f"n{n}")
            per_seed[seed] = {**_replica(params, layer, ns, cfg, saes.__getitem__, lambda n: scratch / f"n{n}",
                                         eval_store, torch_device),
                              **_cross_seed(params, layer, ns, lambda n: scratch / f"n{n}")}
            shutil.rmtree(scratch)  # codes are re-made in seconds; the trained SAEs are kept
        return job.write(compute(SeedsInputs(params.sae.seed, per_seed, headlines(cfg, ns))))
