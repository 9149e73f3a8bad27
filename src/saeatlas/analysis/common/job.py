"""An analysis stage's job: ``adapters.stage_job`` plus the one writer of an analysis's output,
at the paths the stage table gives."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

from saeatlas.adapters import StageJob, stage_job
from saeatlas.analysis.common.output import AnalysisOutput, write_output
from saeatlas.config import Params
from saeatlas.pipeline import STAGE


@dataclass
class AnalysisJob:
    job: StageJob

    def write(self, output: AnalysisOutput) -> dict[str, float]:
        """Write the analysis's output where the table says; log its metrics; return them."""
        params = self.job.params
        where: dict[str, Any] = dict(model=params.model.name, **self.job.wildcards)
        stage = STAGE[self.job.stage]
        write_output(output, stage.out("report", **where), stage.out("metrics", **where), params.hash())
        self.job.run.log_metrics(output.metrics)
        return output.metrics


@contextlib.contextmanager
def analysis_job(stage: str, params: Params, layer: int, size: int | None = None) -> Iterator[AnalysisJob]:
    """Check the wildcards, open the MLflow run, hand back the writer."""
    with stage_job(stage, params, layer, size) as job:
        yield AnalysisJob(job)
