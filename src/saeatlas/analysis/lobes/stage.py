"""The lobes stage: co-occurrence lobes of one dictionary vs its geometric clusters."""

from __future__ import annotations

from saeatlas.adapters import analysis_config, codes_dir, corpus_dir, store_dir
from saeatlas.analysis.common.job import analysis_job
from saeatlas.config import Params


def run(params: Params, layer: int, size: int) -> dict[str, float]:
    """Stream the held-out codes of dictionary ``size`` at ``layer`` (``chunk_rows`` at a time, from
    the memmap), with the decoder frozen beside them and the corpus domain and document of every
    row (the documents make the published protocol's windows)."""
    import numpy as np

    from saeatlas.activations import ActivationStore
    from saeatlas.analysis.lobes.compute import LobesInputs
    from saeatlas.analysis.lobes.compute import run as compute
    from saeatlas.analysis.lobes.config import LobesConfig
    from saeatlas.codes import SparseCodes
    from saeatlas.corpus import row_domains

    cfg = analysis_config(LobesConfig, params)
    with analysis_job("lobes", params, layer, size) as job:
        store = ActivationStore.open(store_dir(params, layer, "eval"))
        codes = SparseCodes.open(codes_dir(params, layer, size))
        domains, names = row_domains(store.doc_ids(), corpus_dir(params), store.path)
        inputs = LobesInputs(codes=codes, n_latents=codes.n_latents,
                             positions_per_context=int(store.manifest["positions_per_context"]),
                             decoder=np.asarray(codes.decoder()), row_domains=domains, domain_names=tuple(names),
                             doc_ids=np.asarray(store.doc_ids()))
        return job.write(compute(cfg, inputs))
