"""The Snakemake -> DVC hand-over (``dvc_adopt``), fed what a careful user might: another
parameter file, no DVC project, job names the table does not know, a DVC that refuses."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from saeatlas import config
from saeatlas.dvc_adopt import adopt, dvc_jobs
from saeatlas.errors import SaeAtlasError
from saeatlas.pipeline import STAGES

from conftest import REPO


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(REPO / "params/smoke.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_job_names_are_dvcs_and_cover_the_table(project: Path) -> None:
    params = config.load("params.yaml")
    jobs = dvc_jobs(params)
    assert {"model", "corpus", "activations", "train_sae@15-topk-256", "lobes@15-topk-512", "galaxy@15-topk"} <= set(jobs)
    per = {(): 1, ("layer", "arch"): 1, ("layer", "arch", "size"): 2}
    assert len(jobs) == sum(per[s.wildcards] for s in STAGES)
    assert Path("results/logs/train_sae-layer15-archtopk-size256.log") in jobs["train_sae@15-topk-256"]


def test_another_parameter_file_or_no_dvc_project_records_nothing(project: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    shutil.copy("params.yaml", "other.yaml")
    with caplog.at_level(logging.INFO):
        assert adopt(config.load("other.yaml")) == []
        assert "DVC reads params.yaml only" in caplog.text
        assert adopt(config.load("params.yaml")) == []  # no .dvc/
        assert "not a DVC project" in caplog.text


def test_unknown_jobs_are_refused_by_name(project: Path) -> None:
    (project / ".dvc").mkdir()
    with pytest.raises(SaeAtlasError, match=r"--jobs: .*'splitting@99'"):
        adopt(config.load("params.yaml"), ["model", "splitting@99"])


def test_a_refusing_dvc_is_a_clear_error_and_leaves_the_outputs_as_they_were(project: Path) -> None:
    """Here DVC refuses (a .dvc/ folder that is no DVC project, no git): the message says so, and
    the outputs keep their times (Snakemake must still see them as up to date)."""
    (project / ".dvc").mkdir()
    params = config.load("params.yaml")
    outputs = dvc_jobs(params)["model"]
    for out in outputs:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("x")
        os.utime(out, ns=(1_000_000_000, 1_000_000_000))
    with pytest.raises(SaeAtlasError, match="dvc commit failed"):
        adopt(params, ["model", "corpus"])  # corpus has no outputs: not attempted
    assert all(out.stat().st_mtime_ns == 1_000_000_000 for out in outputs)
