"""Stage ``activations``: run the LM once over the corpus and store, for every layer in
``model.layers``, the residual stream of both splits and (``activations.neurons``) the MLP hidden
activations of the held-out split, resumably (``activations.py``).

One job for all layers: the forward to the deepest listed layer passes every shallower one, so
capturing ten layers costs what capturing the deepest costs (``benchmarks/lm_forward.py
--layers`` measures it). Each layer still gets its own store, and the analyses downstream stay
per layer."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from saeatlas.adapters import RESULTS, corpus_dir, model_dir, path
from saeatlas.artifacts import replace_dir, write_metrics
from saeatlas.config import Params
from saeatlas.tracking import stage_run

log = logging.getLogger(__name__)
NORM_METRICS = ("scale", "mean_sq_norm", "median_norm", "max_norm", "outlier_rows", "outlier_share_of_sum_sq_norm")
NEURONS = "eval_neurons"  # the store of the held-out split's MLP hidden activations, beside train/ and eval/


def _header(params: Params, lm: Any, key: tuple[str, int], split: str, data: Any) -> dict[str, Any]:
    """What a resumed store must share with the run that started it (else it starts afresh).
    Only what shapes the store's bytes: ``activations.neurons`` says whether a neuron store
    exists, not what any store holds, so it is left out (switching it re-uses the residuals)."""
    import torch

    from saeatlas.activations import fingerprint

    kind, layer = key
    spec = {
        "model": params.model.name, "weights_sha256": lm.info.get("weights_sha256"),
        "model_dtype": params.model.dtype, "layer": layer, "split": split,
        "corpus_sha256": data.manifest["files"][f"{split}_contexts.npy"],
        "batch_contexts": params.activations.batch_contexts,
        # Bit-identical resumption needs the same kernels: same device kind, torch, threads.
        "device": lm.device.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    if kind == "neurons":
        spec["captures"] = "mlp_hidden"  # the input of the MLP's output projection
    settings = {k: v for k, v in params.raw["activations"].items() if k != "neurons"}
    return {**spec, "fingerprint": fingerprint({**spec, "activations": settings})}


def _split_metrics(prefix: str, manifest: dict[str, Any]) -> dict[str, Any]:
    norm = manifest["normalisation"]
    if norm["outlier_rows"]:
        log.warning("%s: %d rows (%.2f%%) have norms > %g x the median and carry %.0f%% of "
                    "sum ||x||^2; they are flagged (norms.npy) and do not set the scale",
                    prefix, norm["outlier_rows"], 100 * norm["outlier_rows"] / manifest["n_tokens"],
                    norm["outlier_factor"], 100 * norm["outlier_share_of_sum_sq_norm"])
    return {f"{prefix}.tokens": manifest["n_tokens"], f"{prefix}.shards": len(manifest["shards"]),
            **{f"{prefix}.{key}": norm[key] for key in NORM_METRICS}}


def partial_dir(params: Params, layer: int) -> Path:
    """Where a layer's stores grow: beside the stage's output folder, not inside it, because
    DVC and Snakemake delete a stage's outputs before they run it and resuming needs what a
    killed run left."""
    final = path("activations", "store", params, layer=layer)
    return final.parent.with_name(final.parent.name + ".partial") / final.name


def _drop_unlisted(root: Path, layers: list[int]) -> None:
    """Remove stores of layers ``model.layers`` no longer lists (and publish leftovers): DVC
    tracks the whole folder, so a stale layer (another corpus, another run) must not be
    recorded as this run's output."""
    listed = {f"layer{layer}" for layer in layers}
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name.startswith("layer") and entry.name not in listed:
            log.warning("%s: layer not in model.layers %s; removed", entry, layers)
            shutil.rmtree(entry)


def run(params: Params, device: str = "auto") -> dict[str, Any]:
    import torch

    from saeatlas.activations import ActivationStore, Capture, write_stores
    from saeatlas.corpus import SPLITS, CorpusSplit
    from saeatlas.lm import load_model

    layers = sorted(params.model.layers)
    with stage_run("activations", params, RESULTS) as job:
        lm = load_model(model_dir(params), params.model.dtype, device)
        for layer in layers:
            lm.check_layer(layer)
        log.info("layers %s in one pass (to block %d) on %s, %s, %d torch threads", layers, layers[-1],
                 lm.device, params.model.dtype, torch.get_num_threads())
        metrics: dict[str, Any] = {"d_model": lm.d_model, "layers": len(layers)}
        seconds = 0.0
        tokens = 0
        for split in SPLITS:
            data = CorpusSplit.open(corpus_dir(params), split)
            keys = [("resid", L) for L in layers]
            if params.activations.neurons and split == "eval":
                keys += [("neurons", L) for L in layers]
            captures = [Capture(key, partial_dir(params, key[1]) / (split if key[0] == "resid" else NEURONS),
                                _header(params, lm, key, split, data)) for key in keys]
            t0 = time.perf_counter()
            manifests = write_stores(lm, data, captures, params.activations, desc=f"{split}, layers {layers}")
            seconds += time.perf_counter() - t0
            tokens += manifests[keys[0]]["n_tokens"]
            for (kind, layer), manifest in manifests.items():
                if kind == "resid":
                    metrics.update(_split_metrics(f"layer{layer}.{split}", manifest))
                else:
                    metrics[f"layer{layer}.neurons"] = manifest["d_model"]
        for layer in layers:
            final = path("activations", "store", params, layer=layer)
            final.parent.mkdir(parents=True, exist_ok=True)
            if not params.activations.neurons:  # a neuron store a killed earlier run began is not published
                shutil.rmtree(partial_dir(params, layer) / NEURONS, ignore_errors=True)
            replace_dir(partial_dir(params, layer), final)
            for split in (*SPLITS, *((NEURONS,) if params.activations.neurons else ())):
                ActivationStore.open(final / split)  # re-read what was published: manifests and files agree
        # every listed layer is published; what is left is a killed run's layer that is no longer listed
        shutil.rmtree(partial_dir(params, layers[0]).parent, ignore_errors=True)
        _drop_unlisted(path("activations", "store", params, layer=layers[0]).parent, layers)
        write_metrics(path("activations", "metrics", params), metrics)
        job.log_metrics({**metrics, "seconds": seconds, "tokens_per_second": tokens / max(seconds, 1e-9)})
    return metrics
