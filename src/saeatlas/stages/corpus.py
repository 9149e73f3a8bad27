"""Stage ``corpus``: read, mix, tokenise and pack the text sources (``corpus.py``)."""

from __future__ import annotations

from typing import Any

from saeatlas.adapters import RESULTS, corpus_dir, model_dir, path
from saeatlas.artifacts import write_metrics
from saeatlas.config import Params
from saeatlas.tracking import stage_run


def run(params: Params) -> dict[str, Any]:
    from saeatlas.corpus import build_corpus
    from saeatlas.lm import load_tokenizer

    with stage_run("corpus", params, RESULTS) as job:
        tokenizer = load_tokenizer(model_dir(params))
        metrics = build_corpus(params.corpus, tokenizer, corpus_dir(params))
        write_metrics(path("corpus", "metrics", params), metrics)
        job.log_metrics(metrics)
    return metrics
