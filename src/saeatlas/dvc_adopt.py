"""Make DVC see what Snakemake built: ``dvc commit`` of the jobs of a successful Snakemake run.

Why: the study has two front-ends over one graph. Without this, a study run by Snakemake leaves
no ``dvc.lock``, and the first ``dvc repro`` / ``dvc exp run -S key=value`` after it re-runs the
whole hour-long study instead of the stages the change touches. The Snakefile calls this when a
run succeeds (``onsuccess``) with the jobs of that run's graph (``--jobs``): Snakemake has just
made every one of them up to date, so ``dvc commit`` records exactly that state (each job's code,
inputs, params values and outputs in ``dvc.lock``; the outputs in DVC's cache). Jobs outside the
run (a partial run with a named target) are not recorded: their outputs may be stale.

Only when it means something: DVC reads ``params.yaml`` alone, so a run on another parameter
file (``--configfile params/smoke.yaml``) is not adopted (DVC would record params the outputs
were not built from), and a folder that is not a DVC project is left alone.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
from pathlib import Path

from saeatlas.config import Params
from saeatlas.errors import SaeAtlasError
from saeatlas.graph import PARAMS_FILE, WILDCARD_LISTS
from saeatlas.pipeline import STAGES

log = logging.getLogger(__name__)


def dvc_jobs(params: Params) -> dict[str, list[Path]]:
    """Every DVC job (``stage`` or ``stage@<layer>[-<size>]``, as DVC names matrix jobs) and the
    files it outputs, logs included."""
    jobs: dict[str, list[Path]] = {}
    for stage in STAGES:
        lists = [params.section(WILDCARD_LISTS[w]) for w in stage.wildcards]
        for combo in itertools.product(*lists):
            values = dict(zip(stage.wildcards, combo))
            # an output one job writes for every layer (Stage.spread): DVC tracks the folder above
            outs = [Path(stage.dvc_output(o).format(model=params.model.name, **values)) for o in stage.outputs]
            jobs[stage.job_name(values)] = [*outs, Path(stage.log_path().format(**values))]
    return jobs


def _mtimes(root: Path, outputs: list[Path]) -> dict[Path, tuple[int, int]]:
    files = []
    for out in outputs:
        path = root / out
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return {f: (f.stat().st_atime_ns, f.stat().st_mtime_ns) for f in files}


def adopt(params: Params, jobs: list[str] | None = None, root: Path = Path(".")) -> list[str]:
    """``dvc commit`` the given DVC jobs (default: every job) whose outputs all exist; return
    their names. A name the table does not know is a SaeAtlasError."""
    if Path(params.path).resolve() != (root / PARAMS_FILE).resolve():
        log.warning("not recorded in DVC: this run read %s, and DVC reads %s only (copy it there to "
                    "share one state)", params.path, PARAMS_FILE)
        return []
    if not (root / ".dvc").is_dir():
        log.info("not a DVC project (no .dvc/): nothing to record")
        return []
    known = dvc_jobs(params)
    unknown = sorted(set(jobs or ()) - set(known))
    if unknown:
        raise SaeAtlasError(f"--jobs: not jobs of the stage table under {params.path}: {unknown[:5]}")
    wanted = known if jobs is None else {name: known[name] for name in jobs}
    jobs = [name for name, outs in wanted.items() if all((root / p).exists() for p in outs)]
    if not jobs:
        return []
    # dvc commit moves each output into its cache and puts a copy back, with a new mtime: Snakemake
    # would then see every input as newer than its outputs and re-run the study. The content is
    # unchanged, so the times are put back (DVC re-hashes once, finding the same hashes).
    times = _mtimes(root, [p for name in jobs for p in wanted[name]])
    try:
        proc = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet", *jobs], cwd=root,
                              capture_output=True, text=True)
    finally:
        for file, (atime, mtime) in times.items():
            if file.exists():
                os.utime(file, ns=(atime, mtime), follow_symlinks=False)
    if proc.returncode != 0:
        raise SaeAtlasError(f"dvc commit failed (exit {proc.returncode}): "
                            + " ".join((proc.stderr or proc.stdout).split())[-800:])
    log.info("recorded %d DVC jobs in dvc.lock (dvc status and dvc exp run now see this run)", len(jobs))
    return jobs
