# The study as a Snakemake workflow. `snakemake --cores all` runs it locally;
# `snakemake --configfile params/smoke.yaml ...` picks another parameter set;
# `snakemake --profile workflow/profiles/slurm` runs the same graph on a SLURM cluster.
# Rules are built from the stage table in src/saeatlas/pipeline.py, the same table dvc.yaml
# is generated from, so both front-ends run the same commands on the same files. When a run
# succeeds, DVC records what it built (dvc.lock), so `dvc status` / `dvc exp run` continue from it.
import shlex

from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/stages.smk"


rule all:
    input:
        ALL_TARGETS,
    default_target: True


onsuccess:
    # Record in DVC what this run made up to date: the jobs of its graph, by DVC's names.
    _jobs = sorted({dvc_job_name(job) for job in workflow.dag.jobs if job.rule.name in STAGE})
    try:
        shell(f"python -m saeatlas dvc-adopt --params {shlex.quote(PARAMS)} --jobs {' '.join(_jobs)}")
    except Exception:  # the study itself succeeded; say how to record it, do not fail it
        print(f"WARNING: DVC did not record this run (see above); retry with "
              f"`python -m saeatlas dvc-adopt --params {PARAMS}`")
