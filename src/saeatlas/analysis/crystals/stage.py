"""The crystals stage: read every task's words through the LM (the residual at each word's last
token) and through every SAE, then run the analysis and write it."""

from __future__ import annotations

from saeatlas.adapters import analysis_config, model_dir, sae_dir, sizes
from saeatlas.analysis.common.job import analysis_job
from saeatlas.config import Params


def run(params: Params, layer: int, device: str = "auto") -> dict[str, float]:
    """Word-pair crystals in activation space and in each SAE's feature space."""
    import torch

    from saeatlas.analysis.crystals.compute import CrystalsInputs
    from saeatlas.analysis.crystals.compute import run as compute
    from saeatlas.analysis.crystals.config import CrystalsConfig
    from saeatlas.analysis.crystals.tasks import distractor_labels, load_tasks, vocabulary
    from saeatlas.codes import csr_from_code
    from saeatlas.corpus import special_ids
    from saeatlas.lm import load_model
    from saeatlas.sae.io import load_sae

    cfg = analysis_config(CrystalsConfig, params)
    dict_sizes = sizes(params, "crystals")
    with analysis_job("crystals", params, layer) as job:
        lm = load_model(model_dir(params), params.model.dtype, device)
        tasks = load_tasks(cfg.tasks)
        words = list(vocabulary(tasks))
        bos, _ = special_ids(params.corpus, lm.tokenizer)
        token_ids, vectors = lm.word_residuals(words, cfg.template, layer, bos)
        codes = {}
        with torch.inference_mode():
            for n in dict_sizes:
                sae, _ = load_sae(sae_dir(params, layer, n), lm.device)
                code = sae.encode(vectors.to(lm.device))
                codes[n] = csr_from_code(code.values.float().cpu().numpy(), code.indices.cpu().numpy(),
                                         sae.n_latents)
        inputs = CrystalsInputs(words=words, pairs=tasks, activations=vectors.numpy(), codes=codes,
                                distractors=distractor_labels(words, token_ids))
        return job.write(compute(cfg, inputs))
