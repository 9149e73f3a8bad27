"""Stage adapter of the neurons analysis: every size's held-out codes, the layer's MLP neuron store
and residual store of the same tokens (``eval_neurons/`` and ``eval/``), then ``compute.run`` and
the shared writer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from saeatlas.adapters import analysis_config, codes_dir, sizes, store_dir
from saeatlas.analysis.common.job import analysis_job
from saeatlas.analysis.neurons.config import NeuronsConfig
from saeatlas.config import Params
from saeatlas.errors import ParamsError, StoreError

NEURON_SPLIT = "eval_neurons"


@dataclass
class StoreRows:
    """An activation store read as ``rows[a:b]`` (shard by shard through its memmaps), raw or
    normalised by the store's scale."""

    store: Any
    normalise: bool

    @property
    def shape(self) -> tuple[int, int]:
        return self.store.n_tokens, self.store.d_model

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.store.n_tokens)
        return self.store.take(np.arange(start, stop), normalise=self.normalise)


def open_neuron_store(params: Params, layer: int) -> Any:
    """The layer's MLP neuron store, or a clear error naming ``activations.neurons``."""
    from saeatlas.activations import ActivationStore

    if not params.activations.neurons:
        raise ParamsError("activations.neurons is false: the neurons analysis needs the MLP neuron store; set "
                          "activations.neurons: true and re-run the activations stage")
    where = store_dir(params, layer, NEURON_SPLIT)
    if not (where / "manifest.json").is_file():
        raise StoreError(f"{where}: no MLP neuron store; the neurons analysis needs activations.neurons: true "
                         "and the activations stage re-run with it")
    return ActivationStore.open(where)


def inputs(params: Params, layer: int, codes: Mapping[int, Any]) -> Any:
    """The analysis's inputs; the three stores must hold the same held-out tokens, row for row."""
    from saeatlas.activations import ActivationStore
    from saeatlas.analysis.neurons.compute import NeuronsInputs

    neurons = open_neuron_store(params, layer)
    residual = ActivationStore.open(store_dir(params, layer, "eval"))
    for n, c in codes.items():
        if c.n_tokens != residual.n_tokens:
            raise StoreError(f"codes of n={n} hold {c.n_tokens} rows, the eval store {residual.n_tokens}")
    if neurons.n_tokens != residual.n_tokens:
        raise StoreError(f"{neurons.path}: {neurons.n_tokens} rows, the eval store {residual.n_tokens}: they must "
                         "be the same tokens (re-run the activations stage)")
    # massive-activation rows are told apart by the residual norm (the SAEs were not applied there)
    return NeuronsInputs(layer, tuple(sorted(codes)), codes, StoreRows(neurons, normalise=False),
                         StoreRows(residual, normalise=True), residual.ordinary_mask())


def run(params: Params, layer: int) -> dict[str, float]:
    """Features vs MLP neurons: max Pearson |r| per feature, vs two nulls (``analysis/neurons/``)."""
    from saeatlas.analysis.neurons.compute import run as compute
    from saeatlas.codes import SparseCodes

    cfg = analysis_config(NeuronsConfig, params)
    all_sizes = sizes(params, "neurons")
    with analysis_job("neurons", params, layer) as job:
        stores = {n: SparseCodes.open(codes_dir(params, layer, n)) for n in all_sizes}
        return job.write(compute(cfg, inputs(params, layer, stores)))
