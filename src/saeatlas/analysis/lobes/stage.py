"""The lobes stage: co-occurrence lobes of one dictionary vs its geometric clusters."""

from __future__ import annotations

from typing import Any

from saeatlas.adapters import analysis_config, codes_dir, corpus_dir, store_dir
from saeatlas.analysis.common.job import analysis_job
from saeatlas.config import Params


def inputs(params: Params, layer: int, codes: Any) -> Any:
    """The analysis's inputs from one code store (the study's, or a seed replica's), with the
    corpus domain and document of every held-out row (the documents make the published
    protocol's windows)."""
    import numpy as np

    from saeatlas.activations import ActivationStore
    from saeatlas.analysis.lobes.compute import LobesInputs
    from saeatlas.corpus import row_domains

    store = ActivationStore.open(store_dir(params, layer, "eval"))
    domains, names = row_domains(store.doc_ids(), corpus_dir(params), store.path)
    return LobesInputs(codes=codes, n_latents=codes.n_latents,
                       positions_per_context=int(store.manifest["positions_per_context"]),
                       decoder=np.asarray(codes.decoder()), row_domains=domains, domain_names=tuple(names),
                       doc_ids=np.asarray(store.doc_ids()))


def run(params: Params, layer: int, size: int) -> dict[str, float]:
    """Stream the held-out codes of dictionary ``size`` at ``layer`` (``chunk_rows`` at a time, from
    the memmap), with the decoder frozen beside them."""
    from saeatlas.analysis.lobes.compute import run as compute
    from saeatlas.analysis.lobes.config import LobesConfig
    from saeatlas.codes import SparseCodes

    cfg = analysis_config(LobesConfig, params)
    with analysis_job("lobes", params, layer, size) as job:
        return job.write(compute(cfg, inputs(params, layer, SparseCodes.open(codes_dir(params, layer, size)))))
