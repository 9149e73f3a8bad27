"""A stage is one row plus one folder: a test-only analysis added to a built study runs through
the CLI, a generated Snakemake rule and the generated dvc.yaml, with no other file edited (its
params section aside: the study's parameters live in params.yaml)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import clone_study, run_tool, tool

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"

TOY = {
    "__init__.py": '"""Test-only analysis: the mean decoder-row norm of each dictionary size."""\n',
    "config.py": '''
from dataclasses import dataclass

from saeatlas.analysis.common.config import AnalysisConfig, param


@dataclass(frozen=True)
class ToyConfig(AnalysisConfig, section="toy", summary="Test-only analysis."):
    scale: float = param(1.0, "Multiplier of the mean norm.", exclusiveMinimum=0)
''',
    "compute.py": '''
from dataclasses import dataclass

import numpy as np

from saeatlas.analysis.common.output import AnalysisOutput
from saeatlas.analysis.toy.figures import norm_figure


@dataclass
class ToyInputs:
    decoders: dict


def run(config, inputs):
    norms = {n: float(np.linalg.norm(d, axis=1).mean()) for n, d in inputs.decoders.items()}
    return AnalysisOutput(metrics={f"n{n}.mean_norm": config.scale * v for n, v in norms.items()},
                          figures={"norms": norm_figure(norms)})
''',
    "figures.py": '''
from saeatlas.analysis.common.plotting import new_figure


def norm_figure(norms):
    fig = new_figure(3, 2)
    fig.add_subplot().plot(list(norms), list(norms.values()), "o-")
    return fig
''',
    "section.py": '''
from saeatlas.analysis.common.section import Figure, Section


def section(metrics, out_dir):
    return Section("Toy", f"{len(metrics)} sizes.", figures=(Figure("figures/norms.png", "Mean norm per size."),))
''',
    "stage.py": '''
import numpy as np

from saeatlas.adapters import analysis_config, codes_dir, sizes
from saeatlas.analysis.common.job import analysis_job
from saeatlas.analysis.toy.compute import ToyInputs, run as compute
from saeatlas.analysis.toy.config import ToyConfig


def run(params, layer):
    from saeatlas.codes import SparseCodes

    cfg = analysis_config(ToyConfig, params)
    with analysis_job("toy", params, layer) as job:
        decoders = {n: np.asarray(SparseCodes.open(codes_dir(params, layer, n)).decoder()) for n in sizes(params, "toy")}
        return job.write(compute(cfg, ToyInputs(decoders)))
''',
}
ROW = ('    analysis("toy", "Test-only: mean decoder norm per size.", ("sae.sizes",),\n'
       '             (Ref("features", "codes", gather=True),)),\n')


def add_toy_stage(proj: Path) -> None:
    folder = proj / "src/saeatlas/analysis/toy"
    folder.mkdir()
    for name, text in TOY.items():
        (folder / name).write_text(text.lstrip("\n"))
    table = proj / "src/saeatlas/pipeline.py"
    text = table.read_text()
    assert text.count(")  # end of STAGES") == 1
    table.write_text(text.replace(")  # end of STAGES", ROW + ")  # end of STAGES"))
    with open(proj / "params.yaml", "a") as fh:
        fh.write("\ntoy:\n  scale: 2.0\n")


def test_a_new_stage_is_one_row_plus_one_folder(smoke_study: Path, tmp_path: Path) -> None:
    proj = clone_study(smoke_study, tmp_path / "study")
    env = {"PYTHONPATH": str(proj / "src")}  # the copy's package, with its new folder
    add_toy_stage(proj)
    run_tool([sys.executable, "-m", "saeatlas", "generate"], proj, env=env)
    changed = set(run_tool(["git", "status", "--porcelain"], proj).stdout.split("\n"))
    changed = {line[3:] for line in changed if line}
    generated = {"dvc.yaml", "src/saeatlas/params.schema.yaml"}
    assert changed - generated == {"params.yaml", "src/saeatlas/pipeline.py", "src/saeatlas/analysis/toy/"}, changed

    # The CLI has the sub-command, and a bad value of its section fails naming the key.
    helptext = run_tool([sys.executable, "-m", "saeatlas", "toy", "--help"], proj, env=env).stdout
    assert "--layer" in helptext and "--size" not in helptext
    bad = proj / "bad.yaml"
    bad.write_text((proj / "params.yaml").read_text().replace("scale: 2.0", "scale: -1"))
    proc = subprocess.run([sys.executable, "-m", "saeatlas", "toy", "--params", "bad.yaml", "--layer", "15", "--arch", "topk"],
                          cwd=proj, capture_output=True, text=True, env={**__import__("os").environ, **env})
    assert proc.returncode == 2 and "toy.scale" in proc.stderr, proc.stderr

    # Snakemake runs the generated rule, and only it and the report that shows it; its success hook
    # records them in DVC. The report has the new section without an edit to the report code.
    snake = run_tool([tool("snakemake"), "--cores", "2", "--configfile", "params.yaml"], proj, env=env)
    ran = set(re.findall(r"^(?:local)?rule (\w+):", snake.stdout + snake.stderr, re.MULTILINE)) - {"all"}
    assert ran == {"toy", "report"}, snake.stdout + snake.stderr
    page = (proj / "results/report/index.html").read_text(encoding="utf-8")
    assert '<h2>Toy</h2>' in page and "Mean norm per size." in page and "figures/layer15/toy/norms.png" in page
    metrics = json.loads((proj / f"results/analysis/toy/{MODEL}/layer15/topk.metrics.json").read_text())
    for n in (256, 512):
        decoder = np.load(proj / f"results/codes/{MODEL}/layer15/topk/n{n}/decoder.npy")
        assert metrics[f"n{n}.mean_norm"] == pytest.approx(2.0 * np.linalg.norm(decoder, axis=1).mean(), rel=1e-6)
    assert (proj / f"results/analysis/toy/{MODEL}/layer15/topk/figures/norms.png").stat().st_size > 1000
    assert "up to date" in run_tool([tool("dvc"), "status"], proj, env=env).stdout

    # DVC runs the generated stage, and only it, when its section changes.
    rerun = run_tool([tool("dvc"), "exp", "run", "-S", "toy.scale=3.0"], proj, env=env)
    assert set(re.findall(r"Running stage '([^']+)'", rerun.stdout)) == {"toy@15-topk", "report"}, rerun.stdout
    again = json.loads((proj / f"results/analysis/toy/{MODEL}/layer15/topk.metrics.json").read_text())
    assert again == pytest.approx({k: 1.5 * v for k, v in metrics.items()}, rel=1e-9)
