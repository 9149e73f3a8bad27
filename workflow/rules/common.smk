# Shared set-up: validate the parameters once, pick the parameter file the stages read, and
# turn rows of the stage table (saeatlas.pipeline) into rule arguments.
import os
from pathlib import Path

import yaml
from snakemake.utils import validate
from snakemake.exceptions import WorkflowError

from saeatlas import config as saeatlas_config
from saeatlas.graph import PARAMS_FILE, WILDCARD_LISTS, WILDCARD_PATTERNS, code_files, gathered_wildcards
from saeatlas.pipeline import STAGE, input_templates


# The stages read one complete parameter file: the last --configfile given, else params.yaml.
# A partial --configfile or a --config override would make Snakemake's view differ from what
# the stages read, so that is refused here instead of silently ignored.
_cli_files = [os.path.relpath(f) for f in workflow.config_settings.configfiles]
PARAMS = _cli_files[-1] if _cli_files else PARAMS_FILE
# saeatlas.config first: its messages name the key path (e.g. "sae.sizes[2]: must be >= 64").
_file_params = saeatlas_config.load(PARAMS)
with open(PARAMS, encoding="utf-8") as _fh:
    if dict(config) != yaml.safe_load(_fh):
        raise ValueError(
            f"the Snakemake config differs from {PARAMS}: give a complete parameter file with "
            "--configfile (params/*.yaml) instead of --config overrides or partial files"
        )
validate(config, "../schemas/params.schema.yaml")

MODEL = config["model"]["name"]
# each wildcard of the stage table and the values it takes (pipeline.WILDCARD_LISTS)
WILDCARD_VALUES = {w: _file_params.section(key) for w, key in WILDCARD_LISTS.items()}


def _path(template):
    return template.replace("{model}", MODEL)


def stage_inputs(name):
    stage = STAGE[name]
    plain, gathered = input_templates(stage)
    every = []  # a gathered input once per value of each wildcard the stage does not have
    for template in gathered:
        over = gathered_wildcards(template, stage.wildcards)
        every += expand(_path(template), allow_missing=True, **{w: WILDCARD_VALUES[w] for w in over})
    return [*_files(code_files(stage)), *(_path(p) for p in plain), *every]


def _files(paths):
    """Files as they are, folders (package data) as their files: Snakemake compares files' times."""
    out = []
    for p in paths:
        out += sorted(str(f) for f in Path(p).rglob("*") if f.is_file()) if Path(p).is_dir() else [p]
    return out


def stage_outputs(name):
    """The row's outputs; those it shows in Snakemake's report wrapped in report() with their caption."""
    out = []
    stage = STAGE[name]
    for o in stage.outputs:
        for copy in _spread(stage, o):
            path = directory(copy) if o.directory else copy
            if o.shown:
                path = report(path, caption=f"../report/{o.shown.caption}", category=o.shown.category,
                              patterns=list(o.shown.patterns))
            out.append(path)
    return out


def _spread(stage, output):
    """An output's path, or every copy of it when one job writes it for every value of a
    wildcard the stage does not range over (``Stage.spread``: each layer's activation store)."""
    over = stage.spread(output)
    if not over:
        return [_path(output.path)]
    return expand(_path(output.path), allow_missing=True, **{w: WILDCARD_VALUES[w] for w in over})


def stage_log(name):
    return STAGE[name].log_path()


def stage_command(name, wildcards):
    """The stage's CLI call for one job (the same string dvc.yaml runs, wildcards filled)."""
    stage = STAGE[name]
    values = {w: str(getattr(wildcards, w)) for w in stage.wildcards}
    return stage.command(log=stage.log_path().format(**values), params_file=PARAMS, wildcard_values=values)


def stage_params(name):
    """The params.yaml values a stage depends on; Snakemake re-runs the rule when they change."""
    return {key: str(_file_params.section(key)) for key in STAGE[name].params}


def stage_threads(name):
    """Every core the job may use (on SLURM the profile's set-threads, checked against the rows'
    cpus by tests/test_pipeline.py)."""
    threads = STAGE[name].resources.threads
    if threads != "all":
        return threads
    try:
        return workflow.cores
    except WorkflowError:  # no --cores: `snakemake --report`, `--lint`, a dry run; nothing executes
        return 1


def stage_resources(name):
    """What the SLURM executor requests per job (locally only --resources limits apply)."""
    res = STAGE[name].resources
    out = {"cpus_per_task": res.cpus, "mem_mb": res.mem_mb, "runtime": res.runtime}
    if res.gpu:
        out["gpu"] = 1
    return out


def stage_constraints(name):
    return {w: WILDCARD_PATTERNS[w] for w in STAGE[name].wildcards}


def dvc_job_name(job):
    """DVC's name of a Snakemake job (``Stage.job_name``)."""
    stage = STAGE[job.rule.name]
    return stage.job_name({w: getattr(job.wildcards, w) for w in stage.wildcards})


def stage_targets(name):
    stage = STAGE[name]
    paths = [p for o in stage.outputs for p in _spread(stage, o)]
    if stage.wildcards:
        return expand(paths, **{w: WILDCARD_VALUES[w] for w in stage.wildcards})
    return paths


ALL_TARGETS = [t for name in STAGE for t in stage_targets(name)]
