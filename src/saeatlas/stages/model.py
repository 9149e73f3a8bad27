"""Stage ``model``: convert the language model once into a safetensors checkpoint."""

from __future__ import annotations

import time
from typing import Any

from saeatlas.adapters import RESULTS, model_dir, path
from saeatlas.artifacts import write_metrics
from saeatlas.config import Params
from saeatlas.errors import ParamsError
from saeatlas.tracking import stage_run


def run(params: Params) -> dict[str, Any]:
    from saeatlas.lm import prepare_model

    with stage_run("model", params, RESULTS) as job:
        t0 = time.perf_counter()
        info = prepare_model(params.model.source, model_dir(params))
        metrics = {"n_layers": info["n_layers"], "d_model": info["d_model"],
                   "vocab_size": info["vocab_size"], "n_params": info["n_params"]}
        write_metrics(path("model", "metrics", params), metrics)
        job.log_metrics({**metrics, "seconds": time.perf_counter() - t0})
        for layer in params.model.layers:
            if layer >= info["n_layers"]:
                raise ParamsError(f"model.layers: layer {layer} out of range; "
                                  f"the model has layers 0..{info['n_layers'] - 1}")
    return metrics
