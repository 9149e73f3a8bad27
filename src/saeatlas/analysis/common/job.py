"""An analysis stage's job: ``adapters.stage_job`` plus the one writer of an analysis's output,
at the paths the stage table gives."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from saeatlas.adapters import StageJob, path, stage_job
from saeatlas.analysis.common.output import AnalysisOutput, write_output
from saeatlas.config import Params


@dataclass
class AnalysisJob:
    job: StageJob

    def write(self, output: AnalysisOutput) -> dict[str, float]:
        """Write the analysis's output where the table says; log its metrics; return them."""
        params, stage, where = self.job.params, self.job.stage, self.job.wildcards
        write_output(output, path(stage, "report", params, **where), path(stage, "metrics", params, **where),
                     params.hash())
        self.job.run.log_metrics(output.metrics)
        return output.metrics


@contextlib.contextmanager
def analysis_job(stage: str, params: Params, layer: int, size: int | None = None) -> Iterator[AnalysisJob]:
    """Check the wildcards, open the MLflow run, hand back the writer."""
    with stage_job(stage, params, layer, size) as job:
        yield AnalysisJob(job)
