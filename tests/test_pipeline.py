"""Snakemake and DVC describe the same graph: same stages, commands, inputs, outputs, logs; the
graph is the stage table's; a stage's code dependencies are what it imports; the analyses keep
their shape (no analysis imports another, no module or function too long to read)."""

from __future__ import annotations

import itertools
import re
import subprocess
from math import prod
from pathlib import Path

import pytest
import yaml

from saeatlas.generate import generated
from saeatlas.graph import (WILDCARD_LISTS, WILDCARD_PATTERNS, code_files, gather_dir, gathered_wildcards,
                            import_closure)
from saeatlas.pipeline import ANALYSES, STAGE, STAGES, input_templates

from conftest import REPO, copy_project, tool

SRC = REPO / "src" / "saeatlas"


def test_committed_generated_files_are_current() -> None:
    """dvc.yaml and params.schema.yaml are generated from the stage table and the analysis configs."""
    for path, text in generated(REPO).items():
        assert path.read_text() == text, f"{path} is stale: run `python -m saeatlas generate`"


def test_code_dependencies_are_the_import_closure() -> None:
    """Function-level imports count (the drift the hand-kept lists had: evaluate runs tracking.py and
    corpus.py, train_sae runs lm.py), and no stage depends on the table or the CLI."""
    deps = {s.name: set(code_files(s)) for s in STAGES}
    code = lambda *names: {f"src/saeatlas/{n}" for n in names}  # noqa: E731
    assert code("tracking.py", "corpus.py", "evaluate.py", "sae/io.py") <= deps["evaluate"]
    assert code("lm.py", "sae/train.py") <= deps["train_sae"]
    assert code("lm.py", "sources.py") <= deps["corpus"]
    assert not code("sae/train.py", "evaluate.py", "features.py") & deps["activations"]
    assert "src/saeatlas/data/concepts" in deps["scaling"]
    # The report imports each analysis's section.py by name: a change to one re-renders it.
    assert {f"src/saeatlas/analysis/{a.name}/section.py" for a in ANALYSES} <= deps["report"]
    for name, files in deps.items():
        assert not code("pipeline.py", "cli.py", "graph.py") & files, name
        assert all((REPO / f).exists() for f in files), name
    # An analysis depends on its own folder, on common, and on no other analysis, unless it reads that
    # analysis's whole params section because it runs it (seeds re-runs splitting, galaxy, lobes and
    # scaling on its replicas, and must re-run when their code changes).
    for stage in ANALYSES:
        own = {m.split(".")[2] for m in import_closure(stage.module) if m.startswith("saeatlas.analysis.")}
        runs = {p for p in stage.params if "." not in p and p != stage.name}
        assert own <= {stage.name, "common", *runs}, (stage.name, own)
    assert {"splitting", "galaxy", "lobes", "scaling"} <= {
        m.split(".")[2] for m in import_closure(STAGE["seeds"].module) if m.startswith("saeatlas.analysis.")}


def test_inputs_are_upstream_outputs() -> None:
    order = [s.name for s in STAGES]
    for stage in STAGES:
        for ref in stage.inputs:
            assert order.index(ref.stage) < order.index(stage.name), (stage.name, ref)
        plain, gathered = input_templates(stage)
        # A gathered input ranges over a wildcard the consumer lacks (sizes for a per-layer
        # analysis; layers and sizes for the study-level report).
        assert all(gathered_wildcards(p, stage.wildcards) for p in gathered), stage.name


def _analysis_imports(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found.update(n.split(".")[2] for n in names if n.startswith("saeatlas.analysis.") and n.count(".") >= 2)
    return found


def test_no_analysis_imports_another() -> None:
    folders = [p for p in (SRC / "analysis").iterdir() if p.is_dir() and p.name not in ("common", "__pycache__")]
    assert {s.name for s in ANALYSES} <= {p.name for p in folders}
    # ... but the analyses a stage runs (it reads their whole params section: seeds), in its sources
    runs = {s.name: {p for p in s.params if "." not in p and p != s.name} for s in ANALYSES}
    for folder in folders:
        for path in folder.rglob("*.py"):
            assert _analysis_imports(path) <= {folder.name, "common", *runs.get(folder.name, ())}, path
    for path in (SRC / "analysis" / "common").rglob("*.py"):
        assert _analysis_imports(path) <= {"common"}, path


def test_every_analysis_has_the_one_shape() -> None:
    """config.py, compute.py, figures.py, section.py, stage.py; a section that names its figures."""
    from importlib import import_module

    for stage in ANALYSES:
        folder = SRC / "analysis" / stage.name
        assert {"config.py", "compute.py", "figures.py", "section.py", "stage.py"} <= {p.name for p in folder.iterdir()}
        assert callable(import_module(f"saeatlas.analysis.{stage.name}.section").section)


def test_no_module_over_500_lines_and_no_function_over_80() -> None:
    import ast

    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 500, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno + 1 <= 80, f"{path}:{node.lineno} {node.name}"


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


@pytest.mark.parametrize("params", ["params.yaml", "params/paper.yaml", "params/architectures.yaml"])
def test_snakemake_and_dvc_run_the_same_graph(tmp_path: Path, params: str) -> None:
    # paper.yaml lists several layers, architectures.yaml three architectures: the wildcards must
    # expand the same way in both.
    proj = copy_project(tmp_path, params=params)
    dvc, snake = dvc_jobs(proj), snakemake_jobs(proj)
    assert set(snake) == set(dvc)
    raw = yaml.safe_load((proj / "params.yaml").read_text())
    count = {w: len(_lookup(raw, key)) for w, key in WILDCARD_LISTS.items()}  # values per wildcard
    # one job per stage and combination of its wildcards
    assert len(dvc) == sum(prod(count[w] for w in s.wildcards) for s in STAGES)
    for job, stage in ((j, STAGE[j.split("@")[0]]) for j in snake):
        # DVC has no gather: it depends on the directory that holds every copy (gather_dir); Snakemake
        # lists one copy per size (and per layer, for the study-level report).
        gathered, dirs = set(), set()
        for template in input_templates(stage)[1]:
            pattern = re.escape(template).replace(r"\{model\}", r"(?P<model>[^/]+)")
            for w, value in WILDCARD_PATTERNS.items():
                pattern = pattern.replace(r"\{%s\}" % w, f"(?P<{w}>{value})")
            found = [m for m in map(lambda p: re.fullmatch(pattern, p), snake[job]["inputs"]) if m]
            assert found, (job, template)
            copies = {tuple(m.groupdict().get(w) for w in gathered_wildcards(template, stage.wildcards))
                      for m in found}
            assert len(copies) == len(found) == prod(count[w] for w in gathered_wildcards(template, stage.wildcards)), job
            gathered |= {m.string for m in found}
            dirs |= {gather_dir(template, stage.wildcards).format(**m.groupdict()) for m in found}
        snake[job]["inputs"] = (snake[job]["inputs"] - gathered) | dirs
        # An output one job writes for every layer (Stage.spread): Snakemake lists every copy,
        # DVC tracks the folder holding them (and consumers depend on their own copy inside it).
        for output in (o for o in stage.outputs if stage.spread(o)):
            model = raw["model"]["name"]
            copies = {output.path.format(model=model, layer=L) for L in raw["model"]["layers"]}
            assert copies <= snake[job]["outputs"], (job, output.name)
            snake[job]["outputs"] = (snake[job]["outputs"] - copies) | {stage.dvc_output(output).format(model=model)}
        # Snakemake compares files' times, so a package-data folder is listed file by file (a
        # package-data file, e.g. analysis/published.yaml, is listed as it is on both sides)
        for folder in (f"src/saeatlas/{d}" for d in stage.data if (SRC / d).is_dir()):
            inside = {p for p in snake[job]["inputs"] if p.startswith(folder + "/")}
            assert inside, (job, folder)
            snake[job]["inputs"] = (snake[job]["inputs"] - inside) | {folder}
    assert f"train_sae@{raw['model']['layers'][-1]}-{raw['sae']['architectures'][-1]}-{raw['sae']['sizes'][-1]}" in dvc
    for job in dvc:
        assert snake[job] == dvc[job], job


def test_snakemake_lint_and_dvc_dag(tmp_path: Path) -> None:
    proj = copy_project(tmp_path, params=None)
    lint = subprocess.run([tool("snakemake"), "--lint"], cwd=proj, capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    dag = subprocess.run([tool("dvc"), "dag", "--md"], cwd=proj, capture_output=True, text=True, timeout=300)
    assert dag.returncode == 0, dag.stderr
    for stage in ("model", "corpus", "activations", "train_sae@15-topk-1152", "evaluate@15-topk-18432"):
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


def test_slurm_profile_asks_each_job_what_its_row_says(tmp_path: Path) -> None:
    """GPU, memory, CPUs and run time are said once, in the row; the SLURM plan carries them."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    proj = copy_project(tmp_path, params=None)
    proc = subprocess.run([tool("snakemake"), "-n", "--profile", "workflow/profiles/slurm"], cwd=proj,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    for stage in STAGES:
        block = text[text.index(f"rule {stage.name}:"):]
        block = block[:block.index("\n\n")]
        res = stage.resources
        assert f"mem_mb={res.mem_mb}" in block and f"cpus_per_task={res.cpus}" in block, stage.name
        assert f"runtime={res.runtime}" in block and ("gpu=1" in block) == res.gpu, stage.name
    # What the old hand-written profile asked, now said once in the rows.
    block = text[text.index("rule activations:"):]
    assert "gpu=1" in block[:block.index("\n\n")] and "mem_mb=32000" in block and "cpus_per_task=8" in block
    assert STAGE["activations"].resources.gpu and not STAGE["lobes"].resources.gpu
    assert STAGE["lobes"].resources.mem_mb == 96000
    # The profile's threads for a multi-threaded job are its row's cpus.
    profile = yaml.safe_load((proj / "workflow/profiles/slurm/config.yaml").read_text())
    for name, threads in profile["set-threads"].items():
        assert threads == STAGE[name].resources.cpus, name


def test_every_output_shown_in_snakemakes_report_has_its_caption_file() -> None:
    """`snakemake --report` fails on a missing caption: a new analysis needs
    workflow/report/<name>.rst (checked here in a second, not only by the slow report test)."""
    missing = [f"{s.name}: workflow/report/{o.shown.caption}" for s in STAGES for o in s.outputs
               if o.shown and not (REPO / "workflow" / "report" / o.shown.caption).is_file()]
    assert not missing, missing
