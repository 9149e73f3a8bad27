"""Stage ``activations``: run the LM up to one layer over the corpus and store the residual
stream, both splits, resumably (``activations.py``)."""

from __future__ import annotations

import logging
import time
from typing import Any

from saeatlas.adapters import corpus_dir, model_dir, path, stage_job
from saeatlas.artifacts import replace_dir, write_metrics
from saeatlas.config import Params

log = logging.getLogger(__name__)
NORM_METRICS = ("scale", "mean_sq_norm", "median_norm", "max_norm", "outlier_rows", "outlier_share_of_sum_sq_norm")


def _header(params: Params, lm: Any, layer: int, split: str, data: Any) -> dict[str, Any]:
    """What a resumed store must share with the run that started it (else it starts afresh)."""
    import torch

    from saeatlas.activations import fingerprint

    spec = {
        "model": params.model.name, "weights_sha256": lm.info.get("weights_sha256"),
        "model_dtype": params.model.dtype, "layer": layer, "split": split,
        "corpus_sha256": data.manifest["files"][f"{split}_contexts.npy"],
        "batch_contexts": params.activations.batch_contexts,
        # Bit-identical resumption needs the same kernels: same device kind, torch, threads.
        "device": lm.device.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    return {**spec, "fingerprint": fingerprint({**spec, "activations": params.raw["activations"]})}


def _split_metrics(split: str, manifest: dict[str, Any]) -> dict[str, Any]:
    norm = manifest["normalisation"]
    if norm["outlier_rows"]:
        log.warning("%s: %d rows (%.2f%%) have norms > %g x the median and carry %.0f%% of "
                    "sum ||x||^2; they are flagged (norms.npy) and do not set the scale",
                    split, norm["outlier_rows"], 100 * norm["outlier_rows"] / manifest["n_tokens"],
                    norm["outlier_factor"], 100 * norm["outlier_share_of_sum_sq_norm"])
    return {f"{split}.tokens": manifest["n_tokens"], f"{split}.shards": len(manifest["shards"]),
            **{f"{split}.{key}": norm[key] for key in NORM_METRICS}}


def run(params: Params, layer: int, device: str = "auto") -> dict[str, Any]:
    import torch

    from saeatlas.activations import ActivationStore, write_store
    from saeatlas.corpus import SPLITS, CorpusSplit
    from saeatlas.lm import load_model

    final = path("activations", "store", params, layer=layer)
    partial = final.with_name(final.name + ".partial")
    with stage_job("activations", params, layer) as job:
        lm = load_model(model_dir(params), params.model.dtype, device)
        lm.check_layer(layer)
        log.info("layer %d on %s, %s, %d torch threads", layer, lm.device, params.model.dtype,
                 torch.get_num_threads())
        metrics: dict[str, Any] = {}
        seconds = 0.0
        for split in SPLITS:
            data = CorpusSplit.open(corpus_dir(params), split)
            t0 = time.perf_counter()
            manifest = write_store(lm, data, layer, params.activations, partial / split,
                                   _header(params, lm, layer, split, data), desc=f"layer {layer} {split}")
            seconds += time.perf_counter() - t0
            metrics.update(_split_metrics(split, manifest))
        replace_dir(partial, final)
        for split in SPLITS:  # re-read what was published: manifests and files agree
            ActivationStore.open(final / split)
        metrics["d_model"] = lm.d_model
        write_metrics(path("activations", "metrics", params, layer=layer), metrics)
        total = metrics["train.tokens"] + metrics["eval.tokens"]
        job.run.log_metrics({**metrics, "seconds": seconds, "tokens_per_second": total / max(seconds, 1e-9)})
    return metrics
