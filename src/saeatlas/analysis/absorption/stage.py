"""Stage adapter of the absorption analysis: the layer's held-out activation store (tokens,
massive-activation flags, residual rows), the tokenizer's string of every token id, every size's
codes and decoder rows, then ``compute.run`` and the shared writer."""

from __future__ import annotations

from typing import Any, Mapping

from saeatlas.adapters import analysis_config, codes_dir, model_dir, sizes, store_dir
from saeatlas.analysis.absorption.config import AbsorptionConfig
from saeatlas.analysis.common.first_letter import token_strings
from saeatlas.analysis.common.job import analysis_job
from saeatlas.config import Params


def inputs(params: Params, layer: int, codes: Mapping[int, Any]) -> Any:
    """The analysis's inputs from code stores by size."""
    import numpy as np

    from saeatlas.activations import ActivationStore
    from saeatlas.analysis.absorption.compute import AbsorptionInputs
    from saeatlas.lm import load_tokenizer

    store = ActivationStore.open(store_dir(params, layer, "eval"))
    tokens = np.asarray(store.tokens())
    strings = token_strings(load_tokenizer(model_dir(params)), np.unique(tokens))
    ns = tuple(sorted(codes))
    return AbsorptionInputs(layer=layer, sizes=ns, tokens=tokens, ordinary=np.asarray(store.ordinary_mask()),
                            strings=strings, take=store.take, codes=codes,
                            decoders={n: np.asarray(codes[n].decoder()) for n in ns})


def run(params: Params, layer: int) -> dict[str, float]:
    """Feature absorption on the first-letter task at every size (``analysis/absorption/``)."""
    from saeatlas.analysis.absorption.compute import run as compute
    from saeatlas.codes import SparseCodes

    cfg = analysis_config(AbsorptionConfig, params)
    with analysis_job("absorption", params, layer) as job:
        stores = {n: SparseCodes.open(codes_dir(params, layer, n)) for n in sizes(params, "absorption")}
        return job.write(compute(cfg, inputs(params, layer, stores)))
