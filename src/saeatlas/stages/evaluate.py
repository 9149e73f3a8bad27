"""Stage ``evaluate``: one SAE on the held-out split: FVU, L0, dead/dense, density histogram,
spliced CE/ΔCE/KL (``evaluate.py``)."""

from __future__ import annotations

import logging
from typing import Any

from saeatlas.adapters import corpus_dir, model_dir, path, sae_dir, stage_job, store_dir
from saeatlas.artifacts import write_csv_atomic, write_metrics
from saeatlas.config import Params

log = logging.getLogger(__name__)


def run(params: Params, layer: int, size: int, device: str = "auto") -> dict[str, Any]:
    from saeatlas.activations import ActivationStore
    from saeatlas.corpus import CorpusSplit
    from saeatlas.evaluate import density_histogram, reconstruction_metrics, spliced_loss_metrics
    from saeatlas.lm import load_model
    from saeatlas.sae.io import load_sae

    ev = params.evaluate
    with stage_job("evaluate", params, layer, size) as job:
        lm = load_model(model_dir(params), params.model.dtype, device)
        sae, cfg = load_sae(sae_dir(params, layer, size), lm.device)
        store = ActivationStore.open(store_dir(params, layer, "eval"))
        rec, counts = reconstruction_metrics(sae, store, ev.batch_size, ev.dense_threshold, lm.device)
        norm = store.manifest["normalisation"]
        contexts = CorpusSplit.open(corpus_dir(params), "eval").contexts[:ev.ce_contexts]
        ce = spliced_loss_metrics(lm, sae, contexts, layer, norm["outlier_factor"] * norm["median_norm"],
                                  ev.batch_contexts)
        metrics = {"n_latents": size, "k": int(cfg.get("k", 0)), **rec, **ce}
        write_metrics(path("evaluate", "metrics", params, layer=layer, size=size), metrics)
        write_csv_atomic(path("evaluate", "density", params, layer=layer, size=size),
                         density_histogram(counts, rec["eval_tokens"]), ("log10_density", "latents"))
        job.run.log_metrics(metrics)
        log.info("n=%d: FVU %.4f, L0 %.1f, dead %.3f, dense %.3f, CE recovered %.4f (delta CE %.4f, KL %.4f)",
                 size, rec["fvu"], rec["l0"], rec["dead_fraction"], rec["dense_fraction"],
                 ce["ce_loss_recovered"], ce["delta_ce"], ce["kl_sae"])
    return metrics
