"""Snakemake and DVC describe the same graph: same stages, commands, inputs, outputs, logs."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from saeatlas.pipeline import STAGE, STAGES, dvc_yaml

from conftest import REPO, copy_project, tool


def test_committed_dvc_yaml_is_generated_from_the_stage_table() -> None:
    assert (REPO / "dvc.yaml").read_text() == dvc_yaml(), "run `python -m saeatlas dvc-yaml`"


def dvc_jobs(proj: Path) -> dict[str, dict]:
    """dvc.yaml with matrix stages expanded and ${...} interpolated from params.yaml, as DVC does
    (a matrix job is named <stage>@<value>-<value>)."""
    params = yaml.safe_load((proj / "params.yaml").read_text())
    doc = yaml.safe_load((proj / "dvc.yaml").read_text())

    def interp(text: str, item=None) -> str:
        for key, value in (item or {}).items():
            text = text.replace("${item.%s}" % key, str(value))
        return re.sub(r"\$\{([\w.]+)\}", lambda m: str(_lookup(params, m.group(1))), text)

    def paths(entries, item):
        out = set()
        for e in entries or []:
            out.add(interp(next(iter(e)) if isinstance(e, dict) else e, item))
        return out

    jobs = {}
    for name, body in doc["stages"].items():
        items = [(None, body)]
        if "matrix" in body:
            keys = list(body["matrix"])
            lists = [_lookup(params, body["matrix"][k][2:-1]) for k in keys]
            items = [(dict(zip(keys, combo)), body) for combo in itertools.product(*lists)]
        for item, stage in items:
            outs = (paths(stage.get("outs"), item) | paths(stage.get("metrics"), item)
                    | paths(stage.get("plots"), item))
            logs = {p for p in outs if p.startswith("results/logs/")}
            jobs[name if item is None else name + "@" + "-".join(map(str, item.values()))] = {
                "cmd": interp(stage["cmd"], item),
                "inputs": paths(stage.get("deps"), item),
                "outputs": outs - logs,
                "log": logs,
            }
    return jobs


def _lookup(mapping: dict, dotted: str):
    for part in dotted.split("."):
        mapping = mapping[part]
    return mapping


def snakemake_jobs(proj: Path) -> dict[str, dict]:
    """Parse `snakemake -n -p` (every job, its files and its shell command)."""
    proc = subprocess.run([tool("snakemake"), "-n", "-p", "--forceall", "--cores", "1"], cwd=proj,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    jobs = {}
    for block in re.split(r"\n(?=\[[^\n]*\]\nrule )", text):
        m = re.search(r"^rule (\w+):", block, re.MULTILINE)
        if not m or m.group(1) == "all":
            continue
        fields = dict(re.findall(r"^    (input|output|log|wildcards): (.*)$", block, re.MULTILINE))
        cmd = re.search(r"^Shell command: (.*)$", block, re.MULTILINE).group(1)
        split = lambda key: set(fields[key].split(", ")) if key in fields else set()  # noqa: E731
        wildcards = dict(w.split("=") for w in fields["wildcards"].split(", ")) if "wildcards" in fields else {}
        rule = m.group(1)
        name = rule + ("@" + "-".join(wildcards[w] for w in STAGE[rule].wildcards) if wildcards else "")
        jobs[name] = {"cmd": cmd, "inputs": split("input"), "outputs": split("output"), "log": split("log")}
    return jobs


@pytest.mark.parametrize("params", ["params.yaml", "params/paper.yaml"])
def test_snakemake_and_dvc_run_the_same_graph(tmp_path: Path, params: str) -> None:
    # paper.yaml lists several layers: the wildcards must expand the same way in both.
    proj = copy_project(tmp_path, params=params)
    dvc, snake = dvc_jobs(proj), snakemake_jobs(proj)
    assert set(snake) == set(dvc)
    raw = yaml.safe_load((proj / "params.yaml").read_text())
    n_layers, n_sizes = len(raw["model"]["layers"]), len(raw["sae"]["sizes"])
    # model, corpus, activations; train_sae/evaluate/features/lobes per size; splitting, scaling,
    # neighbours, crystals, galaxy per layer
    assert len(dvc) == 2 + n_layers + 4 * n_layers * n_sizes + 5 * n_layers
    for job, stage in ((j, STAGE[j.split("@")[0]]) for j in snake):
        # DVC has no gather: it depends on the directory that holds every size's file
        gathered = {p for p in snake[job]["inputs"] if any(
            re.fullmatch(re.escape(t).replace(r"\{model\}", r"[^/]+").replace(r"\{layer\}", r"\d+")
                         .replace(r"\{size\}", r"\d+"), p) for t in stage.gathered)}
        sizes = {int(m) for p in gathered for m in re.findall(r"/n(\d+)(?:/|$)", p)}
        assert not gathered or sizes == set(raw["sae"]["sizes"]), job  # one copy per size
        snake[job]["inputs"] = (snake[job]["inputs"] - gathered) | {re.sub(r"/n\d+(/.*)?$", "", p) for p in gathered}
    assert f"train_sae@{raw['model']['layers'][-1]}-{raw['sae']['sizes'][-1]}" in dvc
    for job in dvc:
        assert snake[job] == dvc[job], job


def test_snakemake_lint_and_dvc_dag(tmp_path: Path) -> None:
    proj = copy_project(tmp_path, params=None)
    lint = subprocess.run([tool("snakemake"), "--lint"], cwd=proj, capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    dag = subprocess.run([tool("dvc"), "dag", "--md"], cwd=proj, capture_output=True, text=True, timeout=300)
    assert dag.returncode == 0, dag.stderr
    for stage in ("model", "corpus", "activations@15", "train_sae@15-1152", "evaluate@15-18432"):
        assert stage in dag.stdout


def test_partial_configfile_and_config_overrides_are_refused(tmp_path: Path) -> None:
    """The stages read one parameter file; Snakemake must not silently see something else."""
    proj = copy_project(tmp_path, params=None)
    (proj / "partial.yaml").write_text("sae:\n  k: 8\n")
    partial = subprocess.run([tool("snakemake"), "-n", "--configfile", "partial.yaml"], cwd=proj,
                             capture_output=True, text=True, timeout=300)
    assert partial.returncode != 0
    assert "partial.yaml: 6 problems: study: required key is missing" in partial.stdout + partial.stderr
    override = subprocess.run([tool("snakemake"), "-n", "--config", "sae={'k': 8}"], cwd=proj,
                              capture_output=True, text=True, timeout=300)
    assert override.returncode != 0
    assert "give a complete parameter file" in override.stdout + override.stderr


def test_slurm_profile_plans_the_same_jobs_with_a_gpu_for_activations(tmp_path: Path) -> None:
    pytest.importorskip("snakemake_executor_plugin_slurm")
    proj = copy_project(tmp_path, params=None)
    proc = subprocess.run([tool("snakemake"), "-n", "--profile", "workflow/profiles/slurm"], cwd=proj,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    block = text[text.index("rule activations:"):]
    block = block[:block.index("\n\n")]
    assert "gpu=1" in block and "mem_mb=32000" in block and "cpus_per_task=8" in block
    block = text[text.index("rule train_sae:"):]
    block = block[:block.index("\n\n")]
    assert "gpu=1" in block and "cpus_per_task=8" in block
