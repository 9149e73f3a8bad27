"""The scaling stage: every size's held-out codes, the evaluation tokens, the training split and the
tokenizer in, the analysis out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from saeatlas.adapters import analysis_config, codes_dir, corpus_dir, model_dir, sizes, store_dir
from saeatlas.analysis.common.job import analysis_job
from saeatlas.config import Params

if TYPE_CHECKING:
    from saeatlas.analysis.scaling.compute import ScalingInputs
    from saeatlas.analysis.scaling.config import ScalingConfig


def load_inputs(params: Params, layer: int, cfg: ScalingConfig,
                codes: Mapping[int, Any] | None = None) -> ScalingInputs:
    """The study's files as ``ScalingInputs``: codes of every size, evaluation tokens, the training
    split, and the concepts (shipped lists, then whole words drawn from the training split).
    ``codes`` (code stores by size) replaces the study's own, e.g. with a seed replica's."""
    import numpy as np

    from saeatlas.activations import ActivationStore
    from saeatlas.analysis.scaling.compute import ScalingInputs
    from saeatlas.analysis.scaling.concepts import corpus_words, load_concepts, tokenize_concepts, word_boundaries
    from saeatlas.codes import SparseCodes
    from saeatlas.corpus import CorpusSplit
    from saeatlas.lm import load_tokenizer

    ns = sizes(params, "scaling") if codes is None else tuple(sorted(codes))
    if codes is None:
        codes = {n: SparseCodes.open(codes_dir(params, layer, n)) for n in ns}
    tokenizer = load_tokenizer(model_dir(params))
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    token_texts = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    store = ActivationStore.open(store_dir(params, layer, "eval"))
    train = CorpusSplit.open(corpus_dir(params), "train")
    has_bos = train.manifest["bos_token_id"] is not None
    shipped = load_concepts(cfg.categories)
    # third child of the config seed: the first two are compute.run's resamples
    word_rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(3)[2])
    words = corpus_words(train.contexts[:, 1:] if has_bos else train.contexts, token_texts, cfg.word_sampling(),
                         word_rng, exclude=[name for c in shipped for name in c.names])
    return ScalingInputs(
        sizes=ns,
        codes={n: codes[n].csr() for n in ns},
        positions_per_context=int(store.manifest["positions_per_context"]),
        eval_tokens=np.asarray(store.tokens()),
        train_contexts=train.contexts,
        concepts=tokenize_concepts(shipped + words, encode),
        train_has_bos=has_bos,
        boundaries=word_boundaries(token_texts),
    )


def run(params: Params, layer: int) -> dict[str, float]:
    """Feature counts and densities against size; concept completeness (``analysis/scaling/``)."""
    from saeatlas.analysis.scaling.compute import run as compute
    from saeatlas.analysis.scaling.config import ScalingConfig

    cfg = analysis_config(ScalingConfig, params)
    with analysis_job("scaling", params, layer) as job:
        return job.write(compute(cfg, load_inputs(params, layer, cfg)))
