"""Each stage as one function of (params, results dir): read inputs, compute, write outputs.

This is the edge where results are handed to tracking (MLflow) and written as flat metrics
JSON; the modules below (corpus, lm, activations) know nothing of either. Output paths come
from the stage table in ``pipeline.py``, the same table Snakemake and DVC are built from.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from saeatlas.artifacts import write_metrics
from saeatlas.config import Params
from saeatlas.errors import ParamsError
from saeatlas.pipeline import STAGE
from saeatlas.tracking import stage_run

log = logging.getLogger(__name__)

RESULTS = Path("results")


def _model_dir(params: Params) -> Path:
    return STAGE["model"].out("checkpoint", model=params.model.name)


def run_model(params: Params) -> dict[str, Any]:
    from saeatlas.lm import prepare_model

    stage = STAGE["model"]
    out = _model_dir(params)
    with stage_run("model", params, RESULTS) as run:
        t0 = time.perf_counter()
        info = prepare_model(params.model.source, out)
        metrics = {"n_layers": info["n_layers"], "d_model": info["d_model"],
                   "vocab_size": info["vocab_size"], "n_params": info["n_params"]}
        write_metrics(stage.out("metrics", model=params.model.name), metrics)
        run.log_metrics({**metrics, "seconds": time.perf_counter() - t0})
        for layer in params.model.layers:
            if layer >= info["n_layers"]:
                raise ParamsError(f"model.layers: layer {layer} out of range; "
                                  f"the model has layers 0..{info['n_layers'] - 1}")
    return metrics


def run_corpus(params: Params) -> dict[str, Any]:
    from saeatlas.corpus import build_corpus
    from saeatlas.lm import load_tokenizer

    stage = STAGE["corpus"]
    with stage_run("corpus", params, RESULTS) as run:
        tokenizer = load_tokenizer(_model_dir(params))
        metrics = build_corpus(params.corpus, tokenizer, stage.out("manifest").parent)
        write_metrics(stage.out("metrics"), metrics)
        run.log_metrics(metrics)
    return metrics


def run_activations(params: Params, layer: int, device: str = "auto") -> dict[str, Any]:
    import torch

    from saeatlas.activations import ActivationStore, fingerprint, publish, write_store
    from saeatlas.corpus import SPLITS, CorpusSplit
    from saeatlas.lm import load_model

    if layer not in params.model.layers:
        raise ParamsError(f"--layer: {layer} is not listed in model.layers {list(params.model.layers)}")
    stage = STAGE["activations"]
    final = stage.out("store", model=params.model.name, layer=layer)
    partial = final.with_name(final.name + ".partial")
    corpus_dir = STAGE["corpus"].out("manifest").parent
    with stage_run("activations", params, RESULTS, {"layer": layer}) as run:
        lm = load_model(_model_dir(params), params.model.dtype, device)
        lm.check_layer(layer)
        log.info("layer %d on %s, %s, %d torch threads", layer, lm.device, params.model.dtype,
                 torch.get_num_threads())
        metrics: dict[str, Any] = {}
        seconds = 0.0
        for split in SPLITS:
            data = CorpusSplit.open(corpus_dir, split)
            spec = {
                "model": params.model.name, "weights_sha256": lm.info.get("weights_sha256"),
                "model_dtype": params.model.dtype, "layer": layer, "split": split,
                "corpus_sha256": data.manifest["files"][f"{split}_contexts.npy"],
                "batch_contexts": params.activations.batch_contexts,
                # Bit-identical resumption needs the same kernels: same device kind, torch, threads.
                "device": lm.device.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
            }
            header = {**spec, "fingerprint": fingerprint({**spec, "activations": params.raw["activations"]})}
            t0 = time.perf_counter()
            manifest = write_store(lm, data, layer, params.activations, partial / split, header,
                                   desc=f"layer {layer} {split}")
            seconds += time.perf_counter() - t0
            metrics[f"{split}.tokens"] = manifest["n_tokens"]
            metrics[f"{split}.shards"] = len(manifest["shards"])
            norm = manifest["normalisation"]
            for key in ("scale", "mean_sq_norm", "median_norm", "max_norm", "outlier_rows",
                        "outlier_share_of_sum_sq_norm"):
                metrics[f"{split}.{key}"] = norm[key]
            if norm["outlier_rows"]:
                log.warning("%s: %d rows (%.2f%%) have norms > %g x the median and carry %.0f%% of "
                            "sum ||x||^2; they are flagged (norms.npy) and do not set the scale",
                            split, norm["outlier_rows"], 100 * norm["outlier_rows"] / manifest["n_tokens"],
                            norm["outlier_factor"], 100 * norm["outlier_share_of_sum_sq_norm"])
        publish(partial, final)
        for split in SPLITS:  # re-read what was published: manifests and files agree
            ActivationStore.open(final / split)
        metrics["d_model"] = lm.d_model
        write_metrics(stage.out("metrics", model=params.model.name, layer=layer), metrics)
        total = metrics["train.tokens"] + metrics["eval.tokens"]
        run.log_metrics({**metrics, "seconds": seconds, "tokens_per_second": total / max(seconds, 1e-9)})
    return metrics
