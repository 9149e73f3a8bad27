"""The scaling stage: every size's held-out codes, the evaluation tokens, the training split and the
tokenizer in, the analysis out."""

from __future__ import annotations

from saeatlas.adapters import analysis_config, codes_dir, corpus_dir, model_dir, sizes, store_dir
from saeatlas.analysis.common.job import analysis_job
from saeatlas.config import Params


def run(params: Params, layer: int) -> dict[str, float]:
    """Feature counts and densities against size; concept completeness (``analysis/scaling/``)."""
    import numpy as np

    from saeatlas.activations import ActivationStore
    from saeatlas.analysis.scaling.compute import ScalingInputs
    from saeatlas.analysis.scaling.compute import run as compute
    from saeatlas.analysis.scaling.concepts import load_concepts, tokenize_concepts, word_boundaries
    from saeatlas.analysis.scaling.config import ScalingConfig
    from saeatlas.codes import SparseCodes
    from saeatlas.corpus import CorpusSplit
    from saeatlas.lm import load_tokenizer

    cfg = analysis_config(ScalingConfig, params)
    ns = sizes(params, "scaling")
    with analysis_job("scaling", params, layer) as job:
        tokenizer = load_tokenizer(model_dir(params))
        encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        store = ActivationStore.open(store_dir(params, layer, "eval"))
        train = CorpusSplit.open(corpus_dir(params), "train")
        inputs = ScalingInputs(
            sizes=ns,
            codes={n: SparseCodes.open(codes_dir(params, layer, n)).csr() for n in ns},
            positions_per_context=int(store.manifest["positions_per_context"]),
            eval_tokens=np.asarray(store.tokens()),
            train_contexts=train.contexts,
            concepts=tokenize_concepts(load_concepts(cfg.categories), encode),
            train_has_bos=train.manifest["bos_token_id"] is not None,
            boundaries=word_boundaries([tokenizer.decode([i]) for i in range(len(tokenizer))]),
        )
        return job.write(compute(cfg, inputs))
