"""The only module that talks to MLflow.

Every stage run becomes one MLflow run in the experiment ``saeatlas-<study.name>``, named after
the stage (plus its wildcard, e.g. ``activations[layer=15]``) and tagged with ``stage``, the
wildcards, the git commit and the params hash, so it can be found by experiment and stage.
Params are logged flattened (``corpus.train_tokens``), metrics are the stage's flat metrics.

Backend: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///results/mlflow.db`` with artifacts
under ``results/mlartifacts``. Stages may run in parallel (Snakemake ``--cores``); SQLite
allows one writer, so every write happens under a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from saeatlas.artifacts import provenance
from saeatlas.config import Params, flatten

log = logging.getLogger(__name__)

_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /:]")


def tracking_uri(results: Path) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(results / 'mlflow.db').resolve()}"


def experiment_name(params: Params) -> str:
    return f"saeatlas-{params.study.name}"


def run_name(stage: str, wildcards: Mapping[str, Any]) -> str:
    if not wildcards:
        return stage
    return stage + "[" + ",".join(f"{k}={v}" for k, v in sorted(wildcards.items())) + "]"


def metric_key(key: str) -> str:
    """MLflow accepts letters, digits and ``_-. /:`` in names; anything else becomes ``_``."""
    return _BAD_KEY.sub("_", key)


@contextlib.contextmanager
def _locked(results: Path) -> Iterator[None]:
    results.mkdir(parents=True, exist_ok=True)
    with open(results / ".mlflow.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class StageRun:
    """Handle a stage uses to report results; a no-op when tracking is disabled."""

    def __init__(self, client: Any, run_id: str | None, results: Path):
        self.client = client
        self.run_id = run_id
        self.results = results

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()]
        with _locked(self.results):
            for i in range(0, len(items), 500):
                self.client.log_batch(self.run_id, metrics=items[i:i + 500])


def _parent_run_id(client: Any, exp_id: str, name: str, tags: Mapping[str, str]) -> str:
    """The run that groups a stage's jobs (e.g. ``train_sae[layer=15]`` over all sizes) for this
    parameter set: found by name and params hash, created on first use (under the file lock)."""
    query = (f"tags.`saeatlas.group` = '{name}' and tags.params_hash = '{tags['params_hash']}' "
             f"and tags.params_file = '{tags['params_file']}'")
    found = client.search_runs([exp_id], filter_string=query, max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=name, tags={**tags, "saeatlas.group": name})
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


# MLflow 3's UI opens an experiment without this tag on its GenAI overview; these are model runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _experiment_id(client: Any, name: str, uri: str, results: Path) -> str:
    """The study's experiment (created on first use, artifacts under ``results/mlartifacts`` for
    the local SQLite store), tagged so the MLflow UI opens on its training runs."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        artifacts = (results / "mlartifacts").resolve().as_uri() if uri.startswith("sqlite:") else None
        return client.create_experiment(name, artifact_location=artifacts, tags=EXPERIMENT_KIND)
    for key, value in EXPERIMENT_KIND.items():
        if exp.tags.get(key) != value:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def _log_params(client: Any, run_id: str, flat: Mapping[str, Any]) -> None:
    """Every (flattened) parameter, in batches MLflow accepts, values cut to its length limit."""
    from mlflow.entities import Param

    items = [Param(metric_key(k), str(v)[:6000]) for k, v in sorted(flat.items())]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


@contextlib.contextmanager
def _terminated(client: Any, run_id: str, results: Path) -> Iterator[None]:
    """Close the run when the block ends: FINISHED, or FAILED if it raised."""
    try:
        yield
    except BaseException:
        try:
            with _locked(results):
                client.set_terminated(run_id, status="FAILED")
        except Exception:  # never let bookkeeping hide the stage's own error
            log.warning("could not mark MLflow run %s as failed", run_id, exc_info=True)
        raise
    with _locked(results):
        client.set_terminated(run_id, status="FINISHED")


@contextlib.contextmanager
def stage_run(stage: str, params: Params, results: Path, wildcards: Mapping[str, Any] | None = None,
              group: Mapping[str, Any] | None = None) -> Iterator[StageRun]:
    """Open an MLflow run for one stage execution; mark it FAILED if the stage raises.

    With ``group`` (a subset of the wildcards, e.g. ``{"layer": 15}``) the run is a child of one
    parent run per stage and group (``train_sae[layer=15]``), so the MLflow UI shows the sizes of
    a layer together and can overlay their training curves."""
    wildcards = dict(wildcards or {})
    if not params.tracking.enabled:
        yield StageRun(None, None, results)
        return
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(results)
    prov = provenance(params.hash())
    with _locked(results):
        client = MlflowClient(tracking_uri=uri)
        name = experiment_name(params)
        exp_id = _experiment_id(client, name, uri, results)
        base = {"stage": stage, "git_commit": prov["git_commit"], "params_hash": prov["params_hash"],
                "params_file": params.path, **{f"version.{k}": v for k, v in prov["versions"].items()}}
        tags = {**base, **{k: str(v) for k, v in wildcards.items()}}
        if group is not None:
            parent_tags = {**base, **{k: str(v) for k, v in group.items()}}
            tags["mlflow.parentRunId"] = _parent_run_id(client, exp_id, run_name(stage, group), parent_tags)
        run = client.create_run(exp_id, run_name=run_name(stage, wildcards), tags=tags)
        run_id = run.info.run_id
        flat = {**flatten(params.raw), **{f"wildcard.{k}": v for k, v in wildcards.items()}}
        _log_params(client, run_id, flat)
    log.info("MLflow run %s (%s) in experiment %s at %s", run_id, run_name(stage, wildcards), name, uri)
    with _terminated(client, run_id, results):
        yield StageRun(client, run_id, results)


@dataclass
class StudyRun:
    """The study-level run while the report is built: its ids (the report prints them) and the
    stage runs of the same params it links to (name, run id, wall-clock seconds or None while a
    run is open)."""

    client: Any
    results: Path
    experiment_id: str | None = None
    run_id: str | None = None
    stage_runs: list[tuple[str, str, float | None]] = field(default_factory=list)

    def finish(self, metrics: Mapping[str, float], artifacts: list[Path]) -> None:
        """Log the headline metrics and the report's files, link the stage runs, close the run."""
        if self.run_id is None:
            return
        StageRun(self.client, self.run_id, self.results).log_metrics(metrics)
        with _locked(self.results):
            for _, stage_run_id, _ in self.stage_runs:
                self.client.set_tag(stage_run_id, "saeatlas.study_run", self.run_id)
            self.client.set_tag(self.run_id, "saeatlas.stage_runs", str(len(self.stage_runs)))
        for path in artifacts:  # outside the lock: copying a large zip must not block other stages
            self.client.log_artifact(self.run_id, str(path))
        log.info("MLflow study run %s (%d stage runs linked)", self.run_id, len(self.stage_runs))


@contextlib.contextmanager
def study_run(params: Params, results: Path, device: str) -> Iterator[StudyRun]:
    """One run for the whole study execution (opened by the report stage, which prints its id):
    every parameter, tags to find and compare it (git commit, params hash, DVC experiment name
    under ``dvc exp run``, host, device); ``StudyRun.finish`` adds the headline metrics of every
    stage, the report as artifacts, and a ``saeatlas.study_run`` tag on each stage run of the same
    params. Two studies (e.g. two ``dvc exp run -S sae.k=...``) are then two rows of MLflow's
    compare view. FAILED if the report fails."""
    if not params.tracking.enabled:
        yield StudyRun(None, results)
        return
    import socket

    from mlflow.tracking import MlflowClient

    uri = tracking_uri(results)
    prov = provenance(params.hash())
    tags = {"saeatlas.kind": "study", "stage": "study", "git_commit": prov["git_commit"],
            "params_hash": prov["params_hash"], "params_file": params.path, "host": socket.gethostname(),
            "device": device, **{f"version.{k}": v for k, v in prov["versions"].items()}}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    with _locked(results):
        client = MlflowClient(tracking_uri=uri)
        exp_id = _experiment_id(client, experiment_name(params), uri, results)
        query = f"tags.params_hash = '{prov['params_hash']}' and tags.params_file = '{params.path}'"
        found = client.search_runs([exp_id], filter_string=query, max_results=5000)
        stage_runs = [(r.info.run_name, r.info.run_id,
                       None if not r.info.end_time else round((r.info.end_time - r.info.start_time) / 1000, 1))
                      for r in found if r.data.tags.get("saeatlas.kind") != "study"]
        run_id = client.create_run(exp_id, run_name=f"study[{prov['params_hash']}]", tags=tags).info.run_id
        _log_params(client, run_id, flatten(params.raw))
    with _terminated(client, run_id, results):
        yield StudyRun(client, results, exp_id, run_id, sorted(stage_runs))
