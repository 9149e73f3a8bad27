"""Stage ``train_sae``: train one SAE (one dictionary size) on a layer's activation store and
export it in SAELens layout with its training curve (``sae/train.py``, ``sae/io.py``)."""

from __future__ import annotations

import logging
from typing import Any

from saeatlas.adapters import path, sae_dir, stage_job, store_dir
from saeatlas.artifacts import sha256_file, write_csv_atomic, write_metrics
from saeatlas.config import Params
from saeatlas.errors import ParamsError
from saeatlas.pipeline import STAGE

log = logging.getLogger(__name__)


def _export_metadata(params: Params, layer: int) -> dict[str, Any]:
    corpus = params.corpus
    return {
        "model_name": params.model.name,
        "model_source": params.model.source,
        "hook_name": f"blocks.{layer}.hook_resid_post",  # TransformerLens name of the same point
        "hf_hook_name": f"model.layers.{layer}",  # output of this HF decoder layer
        "context_size": corpus.context_length,
        "prepend_bos": corpus.prepend_bos,
        "exclude_special_tokens": ["bos"],
        "dataset_path": "saeatlas corpus (see params corpus.sources)",
        "saeatlas_params_hash": params.hash(),
    }


def run(params: Params, layer: int, size: int, device: str = "auto") -> dict[str, Any]:
    from saeatlas.activations import MANIFEST, ActivationStore
    from saeatlas.lm import resolve_device
    from saeatlas.sae.io import export_sae
    from saeatlas.sae.train import CURVE_COLUMNS, TrainConfig, train_sae

    with stage_job("train_sae", params, layer, size) as job:
        out_dir = sae_dir(params, layer, size)
        out_dir.mkdir(parents=True, exist_ok=True)
        store = ActivationStore.open(store_dir(params, layer, "train"))
        cfg = TrainConfig.from_params(params.sae, size)
        if store.batches_per_epoch(cfg.batch_size, cfg.exclude_outliers) == 0:
            raise ParamsError(f"sae.batch_size: {cfg.batch_size} is more than the store's "
                              f"{store.batches_per_epoch(1, cfg.exclude_outliers)} training rows "
                              f"(raise corpus.train_tokens or lower sae.batch_size)")
        checkpoint = out_dir / "checkpoint.pt"  # not an output: removed once the SAE is exported
        # A checkpoint resumes only on the same data and params: the store's manifest (its shards'
        # checksums and scale) and the hash of the params keys this stage reads.
        binding = {"store_manifest_sha256": sha256_file(store.path / MANIFEST),
                   "params": params.hash(STAGE["train_sae"].params)}
        torch_device = resolve_device(device)
        log.info("n=%d %s k=%d on %s: %d tokens x %d epoch(s), batch %d, lr %.3g (scaled from %.3g)",
                 size, cfg.architecture, cfg.k, torch_device, store.n_tokens, cfg.epochs, cfg.batch_size,
                 cfg.scaled_lr(), cfg.lr)

        def on_log(row: dict[str, float]) -> None:
            job.run.log_metrics({f"train.{k}": v for k, v in row.items() if k not in ("step", "tokens")},
                                step=int(row["tokens"]))

        result = train_sae(cfg, store, torch_device, checkpoint=checkpoint, on_log=on_log, binding=binding)
        export_sae(result.sae, out_dir, store.scale, _export_metadata(params, layer))
        write_csv_atomic(path("train_sae", "curve", params, layer=layer, size=size), result.rows, CURVE_COLUMNS)
        metrics = {"n_latents": size, "k": cfg.k, "normalisation_scale": store.scale, **result.summary,
                   "tokens_per_second": result.summary["tokens"] / max(result.summary["seconds"], 1e-9)}
        write_metrics(path("train_sae", "metrics", params, layer=layer, size=size), metrics)
        job.run.log_metrics(metrics)
        checkpoint.unlink(missing_ok=True)
    return metrics
