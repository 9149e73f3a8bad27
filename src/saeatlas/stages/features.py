"""Stage ``features``: encode the held-out split once with one SAE into the code store, and
derive the feature browser's tables (``features.py``)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from saeatlas.adapters import model_dir, path, sae_dir, stage_job, store_dir
from saeatlas.artifacts import replace_dir, write_metrics, write_parquet_atomic
from saeatlas.config import Params

log = logging.getLogger(__name__)


def _encode(sae: Any, store: Any, codes_dir: Path, params: Params, device: Any) -> None:
    """The code store and the decoder beside it, published whole or not at all."""
    from saeatlas.features import encode_store

    partial = codes_dir.with_name(codes_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    encode_store(sae, store, partial, params.features.batch_size, params.features.max_active, device)
    replace_dir(partial, codes_dir)


def _tables(codes: Any, store: Any, sae: Any, lm: Any, params: Params, out: Any) -> dict[str, float]:
    """Feature statistics, chosen examples with their token windows, the logit lens: to Parquet."""
    from saeatlas.features import (activation_at, contexts_table, feature_stats, features_table, logit_lens,
                                   select_examples, summary_metrics, windows)

    fp = params.features
    stats = feature_stats(codes)
    examples = select_examples(codes, stats.max, fp)
    positions = int(store.manifest["positions_per_context"])
    rows = windows(examples["row"], positions, fp.window_before, fp.window_after, store.n_tokens)
    acts = activation_at(codes, examples["feature"], rows)
    unembed, gain = lm.unembedding()
    lens = logit_lens(sae.decoder.detach(), unembed, gain, fp.logit_lens_k)
    write_parquet_atomic(features_table(stats, lens, lm.vocabulary()), out("features"))
    write_parquet_atomic(contexts_table(examples, rows, acts, store.tokens(), store.doc_ids(), positions),
                         out("contexts"))
    return summary_metrics(stats, examples, codes)


def run(params: Params, layer: int, size: int, device: str = "auto") -> dict[str, Any]:
    from saeatlas.activations import ActivationStore
    from saeatlas.codes import SparseCodes
    from saeatlas.lm import load_model
    from saeatlas.sae.io import load_sae

    out = lambda name: path("features", name, params, layer=layer, size=size)  # noqa: E731
    with stage_job("features", params, layer, size) as job:
        t0 = time.perf_counter()
        lm = load_model(model_dir(params), params.model.dtype, device)
        sae, _ = load_sae(sae_dir(params, layer, size), lm.device)
        store = ActivationStore.open(store_dir(params, layer, "eval"))
        _encode(sae, store, out("codes"), params, lm.device)
        encode_seconds = time.perf_counter() - t0
        summary = _tables(SparseCodes.open(out("codes")), store, sae, lm, params, out)
        metrics = {**summary, "encode_seconds": encode_seconds,
                   "encode_tokens_per_second": store.n_tokens / max(encode_seconds, 1e-9)}
        write_metrics(out("metrics"), metrics)
        job.run.log_metrics({**metrics, "seconds": time.perf_counter() - t0})
        log.info("n=%d: %d alive, L0 %.1f, %d top + %d sampled examples", size, metrics["alive_latents"],
                 metrics["l0"], metrics["top_examples"], metrics["quantile_examples"])
    return metrics
