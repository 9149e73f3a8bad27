"""Stage adapter of the probing analysis: the layer's held-out activation store (tokens, documents,
massive-activation flags, residual rows), the corpus domains, the tokenizer's string of every
token id and every size's codes, then ``compute.run`` and the shared writer."""

from __future__ import annotations

from typing import Any, Mapping

from saeatlas.adapters import analysis_config, codes_dir, corpus_dir, model_dir, sizes, store_dir
from saeatlas.analysis.common.first_letter import token_strings
from saeatlas.analysis.common.job import analysis_job
from saeatlas.analysis.probing.config import ProbingConfig
from saeatlas.config import Params


def inputs(params: Params, layer: int, codes: Mapping[int, Any]) -> Any:
    """The analysis's inputs from code stores by size."""
    import numpy as np

    from saeatlas.activations import ActivationStore
    from saeatlas.analysis.probing.compute import ProbingInputs
    from saeatlas.corpus import row_domains
    from saeatlas.lm import load_tokenizer

    store = ActivationStore.open(store_dir(params, layer, "eval"))
    domains, names = row_domains(store.doc_ids(), corpus_dir(params), store.path)
    tokens = np.asarray(store.tokens())
    strings = token_strings(load_tokenizer(model_dir(params)), np.unique(tokens))
    return ProbingInputs(layer=layer, sizes=tuple(sorted(codes)), tokens=tokens, domains=np.asarray(domains),
                         domain_names=tuple(names), ordinary=np.asarray(store.ordinary_mask()),
                         positions_per_context=int(store.manifest["positions_per_context"]), strings=strings,
                         take=store.take, codes=codes, doc_ids=np.asarray(store.doc_ids()))


def run(params: Params, layer: int) -> dict[str, float]:
    """Sparse probing of every size and the first-letter gate (``analysis/probing/``)."""
    from saeatlas.analysis.probing.compute import run as compute
    from saeatlas.codes import SparseCodes

    cfg = analysis_config(ProbingConfig, params)
    with analysis_job("probing", params, layer) as job:
        stores = {n: SparseCodes.open(codes_dir(params, layer, n)) for n in sizes(params, "probing")}
        return job.write(compute(cfg, inputs(params, layer, stores)))
