"""What every stage adapter does around its computation: check its wildcards, find its files
through the stage table, build its config from params.yaml and open its MLflow run (an
analysis writes through ``analysis/common/job.py`` on top of this). Kept here once so each
adapter (``stages/<name>.py``, ``analysis/<name>/stage.py``) reads as: load inputs, call the
computation, write, log.

This module imports nothing heavy: a stage's code dependencies are the import closure of its
module, so whatever is imported here every stage depends on.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from saeatlas.config import Params
from saeatlas.errors import ParamsError
from saeatlas.pipeline import STAGE
from saeatlas.tracking import StageRun, stage_run

RESULTS = Path("results")


def check_wildcards(params: Params, layer: int, size: int | None = None) -> None:
    if layer not in params.model.layers:
        raise ParamsError(f"--layer: {layer} is not listed in model.layers {list(params.model.layers)}")
    if size is not None and size not in params.sae.sizes:
        raise ParamsError(f"--size: {size} is not listed in sae.sizes {list(params.sae.sizes)}")


def path(stage: str, output: str, params: Params, **wildcards: int) -> Path:
    """Where stage ``stage`` writes its output ``output`` (the stage table's template, filled;
    ``{arch}`` is the job's architecture, ``params.sae.architecture``)."""
    return STAGE[stage].out(output, model=params.model.name, **{"arch": params.sae.architecture, **wildcards})


def model_dir(params: Params) -> Path:
    return path("model", "checkpoint", params)


def corpus_dir(params: Params) -> Path:
    return path("corpus", "manifest", params).parent


def store_dir(params: Params, layer: int, split: str) -> Path:
    """One split (``train`` or ``eval``) of a layer's activation store."""
    return path("activations", "store", params, layer=layer) / split


def sizes(params: Params, stage: str, at_least: int = 1) -> tuple[int, ...]:
    """``sae.sizes`` ascending; a stage that compares sizes needs ``at_least`` of them."""
    out = tuple(sorted(params.sae.sizes))
    if len(out) < at_least:
        raise ParamsError(f"sae.sizes: the {stage} analysis compares sizes; got only {list(out)}")
    return out


def analysis_config(cls: Any, params: Params) -> Any:
    """The analysis's frozen config from its params section; a bad value names the key."""
    try:
        return cls.from_params(params.section(cls.section))
    except ValueError as exc:
        message = str(exc)
        raise ParamsError(message if message.startswith(cls.section) else f"{cls.section}: {message}") from exc


def codes_dir(params: Params, layer: int, size: int) -> Path:
    return path("features", "codes", params, layer=layer, size=size)


def sae_dir(params: Params, layer: int, size: int) -> Path:
    return path("train_sae", "weights", params, layer=layer, size=size).parent


@dataclass
class StageJob:
    """A running job: its wildcards and the MLflow run it reports to (``run.log_metrics``)."""

    stage: str
    params: Params
    wildcards: dict[str, int]
    run: StageRun


@contextlib.contextmanager
def stage_job(stage: str, params: Params, layer: int, size: int | None = None) -> Iterator[StageJob]:
    """Check the wildcards and open the MLflow run of one job of a per-layer stage (a per-size
    job is a child of its layer's run, so the UI groups the sizes)."""
    check_wildcards(params, layer, size)
    arch = {"arch": params.sae.architecture} if "arch" in STAGE[stage].wildcards else {}
    wildcards = {"layer": layer, **arch} if size is None else {"layer": layer, **arch, "size": size}
    group = None if size is None else {"layer": layer, **arch}
    with stage_run(stage, params, RESULTS, wildcards, group=group) as run:
        yield StageJob(stage, params, wildcards, run)
