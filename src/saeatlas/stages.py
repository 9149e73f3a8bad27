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

import numpy as np

from saeatlas.artifacts import write_metrics
from saeatlas.config import Params
from saeatlas.errors import ParamsError, StoreError
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

    _check_wildcards(params, layer)
    stage = STAGE["activations"]
    final = _store_dir(params, layer)
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


def _check_wildcards(params: Params, layer: int, size: int | None = None) -> None:
    if layer not in params.model.layers:
        raise ParamsError(f"--layer: {layer} is not listed in model.layers {list(params.model.layers)}")
    if size is not None and size not in params.sae.sizes:
        raise ParamsError(f"--size: {size} is not listed in sae.sizes {list(params.sae.sizes)}")


def _store_dir(params: Params, layer: int) -> Path:
    return STAGE["activations"].out("store", model=params.model.name, layer=layer)


def _sae_out(stage: str, name: str, params: Params, layer: int, size: int) -> Path:
    return STAGE[stage].out(name, model=params.model.name, layer=layer, size=size)


def run_train_sae(params: Params, layer: int, size: int, device: str = "auto") -> dict[str, Any]:
    """Train the SAE of one dictionary size; export it in SAELens layout with its training curve."""
    from saeatlas.activations import ActivationStore
    from saeatlas.artifacts import write_csv_atomic
    from saeatlas.lm import resolve_device
    from saeatlas.sae.io import export_sae
    from saeatlas.sae.train import CURVE_COLUMNS, TrainConfig, train_sae

    _check_wildcards(params, layer, size)
    weights = _sae_out("train_sae", "weights", params, layer, size)
    out_dir = weights.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    store = ActivationStore.open(_store_dir(params, layer) / "train")
    cfg = TrainConfig.from_params(params.sae, size)
    checkpoint = out_dir / "checkpoint.pt"  # not an output: removed once the SAE is exported
    with stage_run("train_sae", params, RESULTS, {"layer": layer, "size": size}, group={"layer": layer}) as run:
        torch_device = resolve_device(device)
        log.info("n=%d %s k=%d on %s: %d tokens x %d epoch(s), batch %d, lr %.3g (scaled from %.3g)",
                 size, cfg.architecture, cfg.k, torch_device, store.n_tokens, cfg.epochs, cfg.batch_size,
                 cfg.scaled_lr(), cfg.lr)

        def on_log(row: dict[str, float]) -> None:
            run.log_metrics({f"train.{k}": v for k, v in row.items() if k not in ("step", "tokens")},
                            step=int(row["tokens"]))

        result = train_sae(cfg, store, torch_device, checkpoint=checkpoint, on_log=on_log)
        corpus = params.corpus
        export_sae(result.sae, out_dir, store.scale, {
            "model_name": params.model.name,
            "model_source": params.model.source,
            "hook_name": f"blocks.{layer}.hook_resid_post",  # TransformerLens name of the same point
            "hf_hook_name": f"model.layers.{layer}",  # output of this HF decoder layer
            "context_size": corpus.context_length,
            "prepend_bos": corpus.prepend_bos,
            "exclude_special_tokens": ["bos"],
            "dataset_path": "saeatlas corpus (see params corpus.sources)",
            "saeatlas_params_hash": params.hash(),
        })
        write_csv_atomic(_sae_out("train_sae", "curve", params, layer, size), result.rows, CURVE_COLUMNS)
        metrics = {"n_latents": size, "k": cfg.k, "normalisation_scale": store.scale,
                   **result.summary, "tokens_per_second": result.summary["tokens"] / max(result.summary["seconds"], 1e-9)}
        write_metrics(_sae_out("train_sae", "metrics", params, layer, size), metrics)
        run.log_metrics(metrics)
        checkpoint.unlink(missing_ok=True)
    return metrics


def run_evaluate(params: Params, layer: int, size: int, device: str = "auto") -> dict[str, Any]:
    """Evaluate the exported SAE of one size on the held-out split (see ``evaluate.py``)."""
    from saeatlas.artifacts import write_csv_atomic
    from saeatlas.corpus import CorpusSplit
    from saeatlas.evaluate import density_histogram, reconstruction_metrics, spliced_loss_metrics
    from saeatlas.lm import load_model
    from saeatlas.sae.io import load_sae

    _check_wildcards(params, layer, size)
    ev = params.evaluate
    with stage_run("evaluate", params, RESULTS, {"layer": layer, "size": size}, group={"layer": layer}) as run:
        lm = load_model(_model_dir(params), params.model.dtype, device)
        sae, cfg = load_sae(_sae_out("train_sae", "weights", params, layer, size).parent, lm.device)
        store = _eval_store(params, layer)
        rec, counts = reconstruction_metrics(sae, store, ev.batch_size, ev.dense_threshold, lm.device)
        norm = store.manifest["normalisation"]
        contexts = CorpusSplit.open(STAGE["corpus"].out("manifest").parent, "eval").contexts[:ev.ce_contexts]
        ce = spliced_loss_metrics(lm, sae, contexts, layer, norm["outlier_factor"] * norm["median_norm"],
                                  ev.batch_contexts)
        metrics = {"n_latents": size, "k": int(cfg.get("k", 0)), **rec, **ce}
        write_metrics(_sae_out("evaluate", "metrics", params, layer, size), metrics)
        write_csv_atomic(_sae_out("evaluate", "density", params, layer, size),
                         density_histogram(counts, rec["eval_tokens"]), ("log10_density", "latents"))
        run.log_metrics(metrics)
        log.info("n=%d: FVU %.4f, L0 %.1f, dead %.3f, dense %.3f, CE recovered %.4f (delta CE %.4f, KL %.4f)",
                 size, rec["fvu"], rec["l0"], rec["dead_fraction"], rec["dense_fraction"],
                 ce["ce_loss_recovered"], ce["delta_ce"], ce["kl_sae"])
    return metrics


def run_features(params: Params, layer: int, size: int, device: str = "auto") -> dict[str, Any]:
    """Encode the held-out split with one SAE and derive the feature browser's data (``features.py``)."""
    import shutil

    from saeatlas.artifacts import write_npy_atomic
    from saeatlas.codes import DECODER, SparseCodes
    from saeatlas.features import (activation_at, contexts_table, encode_store, feature_stats, features_table,
                                   logit_lens, select_examples, summary_metrics, windows, write_parquet_atomic)
    from saeatlas.lm import load_model
    from saeatlas.sae.io import load_sae

    _check_wildcards(params, layer, size)
    fp = params.features
    out = lambda name: _sae_out("features", name, params, layer, size)  # noqa: E731
    with stage_run("features", params, RESULTS, {"layer": layer, "size": size}, group={"layer": layer}) as run:
        t0 = time.perf_counter()
        lm = load_model(_model_dir(params), params.model.dtype, device)
        sae, _ = load_sae(_sae_out("train_sae", "weights", params, layer, size).parent, lm.device)
        store = _eval_store(params, layer)
        codes_dir = out("codes")
        partial = codes_dir.with_name(codes_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        encode_store(sae, store, partial, fp.batch_size, fp.max_active, lm.device)
        write_npy_atomic(partial / DECODER, sae.decoder.detach().cpu().numpy())
        shutil.rmtree(codes_dir, ignore_errors=True)
        partial.rename(codes_dir)
        encode_seconds = time.perf_counter() - t0
        codes = SparseCodes.open(codes_dir)
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
        metrics = {**summary_metrics(stats, examples, codes), "encode_seconds": encode_seconds,
                   "encode_tokens_per_second": store.n_tokens / max(encode_seconds, 1e-9)}
        write_metrics(out("metrics"), metrics)
        run.log_metrics({**metrics, "seconds": time.perf_counter() - t0})
        log.info("n=%d: %d alive, L0 %.1f, %d top + %d sampled examples", size, metrics["alive_latents"],
                 metrics["l0"], metrics["top_examples"], metrics["quantile_examples"])
    return metrics


def _analysis_config(cls: Any, params: Params, section: str) -> Any:
    """The analysis's frozen config from its params section; its range checks name the key."""
    try:
        return cls.from_params(params.section(section))
    except ValueError as exc:
        message = str(exc)
        raise ParamsError(message if message.startswith(section) else f"{section}: {message}") from exc


def _write_analysis(name: str, params: Params, output: Any, run: Any, **wildcards: int) -> None:
    """Write an analysis's output where the stage table says (per layer, or per layer and size)."""
    from saeatlas.analysis.output import write_output

    stage = STAGE[name]
    where = {"model": params.model.name, **wildcards}
    write_output(output, stage.out("report", **where), stage.out("metrics", **where), params.hash())
    run.log_metrics(output.metrics)


def _codes(params: Params, layer: int, size: int) -> Any:
    from saeatlas.codes import SparseCodes

    return SparseCodes.open(_sae_out("features", "codes", params, layer, size))


def run_splitting(params: Params, layer: int) -> dict[str, Any]:
    """Match the features of each pair of adjacent sizes (``analysis/splitting.py``)."""
    from saeatlas.analysis.splitting import SplittingConfig, SplittingInputs, run

    _check_wildcards(params, layer)
    cfg = _analysis_config(SplittingConfig, params, "splitting")
    sizes = _sizes(params, "splitting", at_least=2)
    with stage_run("splitting", params, RESULTS, {"layer": layer}) as run_:
        stores = {n: _codes(params, layer, n) for n in sizes}
        decoders = {n: np.asarray(stores[n].decoder()) for n in sizes}
        codes = {n: stores[n].csr() for n in sizes}
        output = run(cfg, SplittingInputs(sizes, decoders, codes))
        _write_analysis("splitting", params, output, run_, layer=layer)
    return output.metrics


def run_scaling(params: Params, layer: int) -> dict[str, Any]:
    """Feature counts and densities against size; concept completeness (``analysis/scaling.py``)."""
    from saeatlas.analysis.scaling import (ScalingConfig, ScalingInputs, load_concepts, run, tokenize_concepts,
                                           word_boundaries)
    from saeatlas.corpus import CorpusSplit
    from saeatlas.lm import load_tokenizer

    _check_wildcards(params, layer)
    cfg = _analysis_config(ScalingConfig, params, "scaling")
    sizes = _sizes(params, "scaling")
    with stage_run("scaling", params, RESULTS, {"layer": layer}) as run_:
        tokenizer = load_tokenizer(_model_dir(params))
        encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        store = _eval_store(params, layer)
        train = CorpusSplit.open(STAGE["corpus"].out("manifest").parent, "train")
        inputs = ScalingInputs(
            sizes=sizes,
            codes={n: _codes(params, layer, n).csr() for n in sizes},
            positions_per_context=int(store.manifest["positions_per_context"]),
            eval_tokens=np.asarray(store.tokens()),
            train_contexts=train.contexts,
            concepts=tokenize_concepts(load_concepts(cfg.categories), encode),
            train_has_bos=train.manifest["bos_token_id"] is not None,
            boundaries=word_boundaries([tokenizer.decode([i]) for i in range(len(tokenizer))]),
        )
        output = run(cfg, inputs)
        _write_analysis("scaling", params, output, run_, layer=layer)
    return output.metrics


# --------------------------------------------------------------------------------------
# Geometry of the feature cloud (analysis/geometry/)
# --------------------------------------------------------------------------------------


def _decoders(params: Params, layer: int, sizes: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Every size's decoder rows, as the features stage froze them beside the codes."""
    return {n: np.asarray(_codes(params, layer, n).decoder()) for n in sizes}


def _eval_store(params: Params, layer: int) -> Any:
    from saeatlas.activations import ActivationStore

    return ActivationStore.open(_store_dir(params, layer) / "eval")


def _activation_sample(store: Any, rows: int, seed: int) -> np.ndarray:
    """``rows`` ordinary held-out rows (massive activations left out, as in training), normalised,
    drawn without replacement with ``seed``; read through the memmaps, never the whole split."""
    ordinary = np.flatnonzero(store.ordinary_mask())
    pick = np.random.default_rng(seed).choice(ordinary, size=min(rows, ordinary.size), replace=False)
    return store.take(np.sort(pick))


def _row_domains(store: Any) -> tuple[np.ndarray, list[str]]:
    """The corpus domain (wiki, code, ...) of every held-out row, as codes into a sorted name list."""
    from saeatlas.corpus import read_documents

    docs = read_documents(STAGE["corpus"].out("documents").parent)
    names = sorted({d["domain"] for d in docs})
    code = {name: i for i, name in enumerate(names)}
    doc_ids = np.asarray(store.doc_ids())
    domain_of_doc = np.full(max(int(d["doc_id"]) for d in docs) + 1, -1, dtype=np.int64)
    for d in docs:
        domain_of_doc[int(d["doc_id"])] = code[d["domain"]]
    known = (doc_ids >= 0) & (doc_ids < domain_of_doc.size)
    domains = np.where(known, domain_of_doc[np.where(known, doc_ids, 0)], -1)
    if (domains < 0).any():
        raise StoreError(f"{store.path}: names documents the corpus does not list; re-run the corpus and "
                         "activations stages")
    return domains, names


def _sizes(params: Params, stage: str, at_least: int = 1) -> tuple[int, ...]:
    sizes = tuple(sorted(params.sae.sizes))
    if len(sizes) < at_least:
        raise ParamsError(f"sae.sizes: the {stage} analysis compares sizes; got only {list(sizes)}")
    return sizes


def run_neighbours(params: Params, layer: int) -> dict[str, Any]:
    """Nearest decoder neighbours and UMAP maps (``analysis/geometry/neighbours.py``)."""
    from saeatlas.analysis.geometry.neighbours import NeighboursConfig, NeighboursInputs, run

    _check_wildcards(params, layer)
    cfg = _analysis_config(NeighboursConfig, params, "neighbours")
    sizes = _sizes(params, "neighbours")
    with stage_run("neighbours", params, RESULTS, {"layer": layer}) as run_:
        output = run(cfg, NeighboursInputs(sizes, _decoders(params, layer, sizes)))
        _write_analysis("neighbours", params, output, run_, layer=layer)
    return output.metrics


def run_galaxy(params: Params, layer: int) -> dict[str, Any]:
    """Eigenvalue spectrum and clustering negentropy of the decoder cloud (``analysis/geometry/galaxy.py``)."""
    from saeatlas.analysis.geometry.galaxy import GalaxyConfig, GalaxyInputs, run

    _check_wildcards(params, layer)
    cfg = _analysis_config(GalaxyConfig, params, "galaxy")
    sizes = _sizes(params, "galaxy")
    with stage_run("galaxy", params, RESULTS, {"layer": layer}) as run_:
        activations = _activation_sample(_eval_store(params, layer), cfg.max_points, cfg.seed)
        output = run(cfg, GalaxyInputs(layer, sizes, _decoders(params, layer, sizes), activations))
        _write_analysis("galaxy", params, output, run_, layer=layer)
    return output.metrics


def _sparse_codes(sae: Any, x: Any) -> Any:
    """The SAE's codes of rows ``x`` as a SciPy CSR matrix [rows, n_latents] (k entries per row)."""
    from scipy import sparse

    code = sae.encode(x)
    values, indices = code.values.float().cpu().numpy(), code.indices.cpu().numpy()
    rows = np.repeat(np.arange(values.shape[0]), values.shape[1])
    out = sparse.csr_matrix((values.ravel(), (rows, indices.ravel())), shape=(values.shape[0], sae.n_latents))
    out.eliminate_zeros()
    return out


def run_crystals(params: Params, layer: int, device: str = "auto") -> dict[str, Any]:
    """Word-pair crystals in activation space and in each SAE's feature space (``analysis/geometry/crystals.py``)."""
    import torch

    from saeatlas.analysis.geometry.crystals import (CrystalsConfig, CrystalsInputs, distractor_labels, load_tasks,
                                                     run, vocabulary)
    from saeatlas.corpus import special_ids
    from saeatlas.lm import load_model
    from saeatlas.sae.io import load_sae

    _check_wildcards(params, layer)
    cfg = _analysis_config(CrystalsConfig, params, "crystals")
    sizes = _sizes(params, "crystals")
    with stage_run("crystals", params, RESULTS, {"layer": layer}) as run_:
        lm = load_model(_model_dir(params), params.model.dtype, device)
        tasks = load_tasks(cfg.tasks)
        words = list(vocabulary(tasks))
        bos, _ = special_ids(params.corpus, lm.tokenizer)
        token_ids, vectors = lm.word_residuals(words, cfg.template, layer, bos)
        codes = {}
        with torch.inference_mode():
            for n in sizes:
                sae, _ = load_sae(_sae_out("train_sae", "weights", params, layer, n).parent, lm.device)
                codes[n] = _sparse_codes(sae, vectors.to(lm.device))
        inputs = CrystalsInputs(words=words, pairs=tasks, activations=vectors.numpy(), codes=codes,
                                distractors=distractor_labels(words, token_ids))
        output = run(cfg, inputs)
        _write_analysis("crystals", params, output, run_, layer=layer)
    return output.metrics


def run_lobes(params: Params, layer: int, size: int) -> dict[str, Any]:
    """Co-occurrence lobes of one dictionary vs its geometric clusters (``analysis/geometry/lobes.py``)."""
    from saeatlas.analysis.geometry.lobes import LobesConfig, LobesInputs, run

    _check_wildcards(params, layer, size)
    cfg = _analysis_config(LobesConfig, params, "lobes")
    with stage_run("lobes", params, RESULTS, {"layer": layer, "size": size}, group={"layer": layer}) as run_:
        store = _eval_store(params, layer)
        codes = _codes(params, layer, size)  # streamed from the memmap, chunk_rows at a time
        domains, names = _row_domains(store)
        inputs = LobesInputs(codes=codes, n_latents=codes.n_latents,
                             positions_per_context=int(store.manifest["positions_per_context"]),
                             decoder=np.asarray(codes.decoder()), row_domains=domains, domain_names=tuple(names))
        output = run(cfg, inputs)
        _write_analysis("lobes", params, output, run_, layer=layer, size=size)
    return output.metrics
