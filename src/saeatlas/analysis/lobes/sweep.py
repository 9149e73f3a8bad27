"""Why is our lobe AMI lower than Li et al.'s? Vary one factor of the published protocol at a time.

``python -m saeatlas lobes-sweep --params /work/study/params.yaml --size 4608
--out /tmp/lobes_sweep.csv`` reads a finished study (read-only) and writes one row per setting:
our per-context blocks, then document windows of W tokens (``--windows``) on a seeded random
share of the windows (``--fractions``: how AMI grows with the amount of text, since our 100k
evaluation tokens are a few hundred windows against the paper's ~50k documents), then activity
thresholds (``--thresholds``, relative to each feature's largest code) and the partial last
window kept. Each row: windows, analysed features, AMI at each ``--ks``, seconds.

What is held fixed, so that only the factor moves: the geometric clusters are computed once, on
every feature that fires at least once on the evaluation tokens (the stage clusters the geometry
of each variant's own analysed features), and each AMI is over the analysed features of that
row. The steps are the stage's own (counting, affinity, features left out, spectral embedding,
k-means).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from saeatlas.analysis.lobes.ami import AMIScorer
from saeatlas.analysis.lobes.compute import LobesInputs, _cooccurrence_affinity, _count, _features_with_evidence
from saeatlas.analysis.lobes.config import SMALL_PROBLEM, LobesConfig
from saeatlas.analysis.lobes.cooccurrence import document_windows, feature_max, iter_code_chunks, subsample_windows
from saeatlas.analysis.lobes.spectral import angular_affinity, kmeans_labels, spectral_embedding
from saeatlas.analysis.common.threads import limit_threads


def load_inputs(params_path: Path, layer: int | None, size: int,
                arch: str | None = None) -> tuple[LobesConfig, LobesInputs]:
    """The study's evaluation codes (in memory: ~100k rows x 32 codes), decoder and document ids,
    with paths resolved against the params file's folder; nothing is written there."""
    from saeatlas.activations import ActivationStore
    from saeatlas.adapters import analysis_config, codes_dir, store_dir
    from saeatlas.codes import SparseCodes
    from saeatlas.config import load

    params = load(params_path)
    params = params.for_architecture(arch or params.sae.architectures[0])
    root = params_path.resolve().parent
    layer = params.model.layers[0] if layer is None else layer
    store = ActivationStore.open(root / store_dir(params, layer, "eval"))
    codes = SparseCodes.open(root / codes_dir(params, layer, size))
    cfg = analysis_config(LobesConfig, params)
    inputs = LobesInputs(codes=codes.csr(0, codes.n_tokens), n_latents=codes.n_latents,
                         positions_per_context=int(store.manifest["positions_per_context"]),
                         decoder=np.asarray(codes.decoder()), doc_ids=np.asarray(store.doc_ids()))
    return cfg, inputs


def geometric_labels(cfg: LobesConfig, inputs: LobesInputs, ks: list[int]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The features that fire at least once, and their geometric clusters at every k (fixed for
    the whole sweep)."""
    alive = np.flatnonzero(np.diff(inputs.codes.tocsc().indptr) > 0)
    with limit_threads(1 if alive.size < SMALL_PROBLEM else None, torch_too=True):
        emb, _ = spectral_embedding(angular_affinity(np.asarray(inputs.decoder)[alive]), max(ks), tol=cfg.eig_tol,
                                    max_restarts=cfg.eig_max_restarts, seed=cfg.seed)
        return alive, {k: kmeans_labels(emb, k, cfg.kmeans_n_init, cfg.seed) for k in ks}


def one_setting(cfg: LobesConfig, inputs: LobesInputs, ks: list[int], alive: np.ndarray,
                geo: dict[int, np.ndarray], row_blocks: np.ndarray | None,
                thresholds: np.ndarray | None) -> dict[str, Any]:
    """Count, keep, cluster and score one setting (the stage's steps 1-6, without the nulls)."""
    t0 = time.perf_counter()
    counts = _count(cfg, inputs, row_blocks=row_blocks, thresholds=thresholds)
    keep, metrics = _features_with_evidence(cfg, inputs, counts)
    buf, keep = _cooccurrence_affinity(cfg, counts, keep, metrics)
    row: dict[str, Any] = {"n_blocks": counts.n_blocks, "n_analysed": int(keep.size)}
    at = np.searchsorted(alive, keep)  # keep ⊂ alive: a feature in a block fired
    run_ks = [k for k in ks if k * cfg.min_features_per_cluster <= keep.size]
    if run_ks:
        with limit_threads(1 if keep.size < SMALL_PROBLEM else None, torch_too=True):
            emb, _ = spectral_embedding(buf, max(run_ks), tol=cfg.eig_tol, max_restarts=cfg.eig_max_restarts,
                                        seed=cfg.seed)
            del buf
            for k in run_ks:
                row[f"ami_k{k}"] = AMIScorer(kmeans_labels(emb, k, cfg.kmeans_n_init, cfg.seed), geo[k][at]).ami()
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def settings(windows: list[int], fractions: list[float], thresholds: list[float]) -> list[dict[str, Any]]:
    """Ours, then W x fraction at threshold 0, then the thresholds and the partial window at 256 (or
    the first W)."""
    base = 256 if 256 in windows else windows[0]
    out: list[dict[str, Any]] = [{"blocks": "per-context", "window": 0, "fraction": 1.0, "threshold": 0.0,
                                  "keep_partial": False}]
    out += [{"blocks": "document windows", "window": w, "fraction": f, "threshold": 0.0, "keep_partial": False}
            for w in windows for f in fractions]
    out += [{"blocks": "document windows", "window": base, "fraction": 1.0, "threshold": t, "keep_partial": False}
            for t in thresholds if t > 0]
    out.append({"blocks": "document windows", "window": base, "fraction": 1.0, "threshold": 0.0, "keep_partial": True})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m saeatlas lobes-sweep", description=__doc__.split("\n")[0])
    ap.add_argument("--params", type=Path, required=True, help="the study's params.yaml (read-only)")
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--arch", default=None, help="one of sae.architectures (default: the first)")
    ap.add_argument("--out", type=Path, required=True, help="CSV to write")
    ap.add_argument("--windows", default="128,256,512,1024")
    ap.add_argument("--fractions", default="0.25,0.5,1")
    ap.add_argument("--thresholds", default="0.1,0.3")
    ap.add_argument("--ks", default="2,16,128,256")
    args = ap.parse_args(argv)
    cfg, inputs = load_inputs(args.params, args.layer, args.size, args.arch)
    ks = sorted(int(x) for x in args.ks.split(","))
    t0 = time.perf_counter()
    alive, geo = geometric_labels(cfg, inputs, ks)
    print(f"geometric clusters of {alive.size} features: {time.perf_counter() - t0:.0f} s", flush=True)
    fmax = feature_max(iter_code_chunks(inputs.codes, cfg.chunk_rows), inputs.n_latents)
    rows = []
    for s in settings([int(x) for x in args.windows.split(",")], [float(x) for x in args.fractions.split(",")],
                      [float(x) for x in args.thresholds.split(",")]):
        blocks = None
        if s["window"]:
            win = document_windows(inputs.doc_ids, s["window"], s["keep_partial"])
            blocks = win.row_blocks if s["fraction"] >= 1 else subsample_windows(
                win.row_blocks, s["fraction"], np.random.default_rng(cfg.seed))
        thr = s["threshold"] * fmax if s["threshold"] > 0 else None
        row = {**s, **one_setting(cfg, inputs, ks, alive, geo, blocks, thr)}
        rows.append(row)
        print(row, flush=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out} ({len(rows)} rows, {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
