"""The shape of a stage row, and what is derived from a row: its paths, its command, its code
dependencies and its ``dvc.yaml`` entry. The rows themselves are in ``pipeline.py``.

Why derive instead of declare: a hand-kept list of the source files a stage runs drifts (it did:
``evaluate`` used ``tracking.py`` and ``corpus.py`` without declaring them, so ``dvc repro`` could
miss a code change). Here the code dependencies of a stage are the import closure of the module
its row names, read from the source with ``ast`` (function-level imports included).
"""

from __future__ import annotations

import ast
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Mapping

PARAMS_FILE = "params.yaml"
PACKAGE = "saeatlas"
CODE = "src/saeatlas/"
# Each wildcard and the params.yaml list it ranges over.
WILDCARD_LISTS = {"layer": "model.layers", "arch": "sae.architectures", "size": "sae.sizes"}
# What each wildcard's value may look like (Snakemake's constraints; the CLI's argument types).
WILDCARD_PATTERNS = {"layer": r"\d+", "arch": r"[a-z]+", "size": r"\d+"}
# Modules no stage's outputs depend on: the table itself (its effect on a stage is the stage's
# command, paths and params, which DVC and Snakemake compare directly) and the CLI's dispatch.
NOT_CODE_DEPS = (f"{PACKAGE}.pipeline", f"{PACKAGE}.graph", f"{PACKAGE}.cli", f"{PACKAGE}.__main__")


@dataclass(frozen=True)
class Shown:
    """How an output appears in Snakemake's own report (``snakemake --report``): its caption file
    under ``workflow/report/``, its category and, for a directory, which files (``patterns``) to
    show. (Not the HTML report itself: Snakemake embeds a directory page only in a ``.zip``
    report, and the single-file ``--report x.html`` must work.)"""

    caption: str
    category: str
    patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Output:
    name: str
    path: str  # template: {model}, and the stage's wildcards
    directory: bool = False
    metric: bool = False
    plot: dict[str, str] | None = None  # a CSV that `dvc plots` draws: {"x": column, "y": column}
    shown: Shown | None = None  # in Snakemake's report


@dataclass(frozen=True)
class Ref:
    """An input: output ``output`` of stage ``stage``. With ``gather``, that output for every value
    of each wildcard the consumer does not have (every size for a per-layer analysis comparing
    sizes; every layer and size for the study-level report): Snakemake lists one path per value;
    DVC, which has no gather, depends on the directory above them (``gather_dir``)."""

    stage: str
    output: str
    gather: bool = False


@dataclass(frozen=True)
class Resources:
    """What a job asks of the executor. Locally ``threads="all"`` gives the job every core it may
    use (Snakemake sets OMP_NUM_THREADS to a job's threads, 1 by default); ``gpu``, ``cpus``,
    ``mem_mb`` and ``runtime`` (minutes) are what the SLURM executor requests per job."""

    threads: int | str = "all"
    gpu: bool = False
    cpus: int = 4
    mem_mb: int = 16000
    runtime: int = 120


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    run: str  # "module:function", called as function(params, **wildcards[, device=...])
    params: tuple[str, ...]
    inputs: tuple[Ref, ...] = ()
    outputs: tuple[Output, ...] = ()
    wildcards: tuple[str, ...] = ()  # one job per combination, e.g. ("layer", "arch", "size")
    resources: Resources = field(default_factory=Resources)
    data: tuple[str, ...] = ()  # package data folders it reads, relative to src/saeatlas/
    # Modules it imports by name at run time (``import_module``), which the import scan cannot see.
    modules: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return self.run.partition(":")[0]

    @property
    def uses_device(self) -> bool:
        """Heavy torch work: the command takes --device (CPU or CUDA)."""
        return self.resources.gpu

    def out(self, name: str, **values: Any) -> Path:
        return Path(self.output(name).path.format(**values))

    def output(self, name: str) -> Output:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(f"stage {self.name!r} has no output {name!r}")

    def spread(self, output: Output) -> tuple[str, ...]:
        """The wildcards of ``output``'s path that the stage itself does not range over: one job
        writes that output for every value (``activations`` writes every layer's store in one
        pass). Snakemake lists every copy as the rule's output; DVC, whose ``outs`` cannot be
        expanded from a params list outside a matrix, tracks the folder above them (``gather_dir``)
        while consumers depend on their own copy inside it."""
        return gathered_wildcards(output.path, self.wildcards)

    def dvc_output(self, output: Output) -> str:
        """The path DVC tracks for ``output`` (see ``spread``)."""
        return gather_dir(output.path, self.wildcards) if self.spread(output) else output.path

    def job_name(self, values: Mapping[str, Any]) -> str:
        """DVC's name of one job: ``stage`` or ``stage@<layer>[-<arch>][-<size>]`` (its matrix naming)."""
        return self.name + ("@" + "-".join(str(values[w]) for w in self.wildcards) if self.wildcards else "")

    def log_path(self) -> str:
        suffix = "".join(f"-{w}{{{w}}}" for w in self.wildcards)
        return f"results/logs/{self.name}{suffix}.log"

    def command(self, log: str, params_file: str = PARAMS_FILE,
                wildcard_values: Mapping[str, str] | None = None) -> str:
        """The CLI call both front-ends run (each passes its own spelling of the wildcards)."""
        parts = ["python -m saeatlas", self.name, "--params", shlex.quote(params_file)]
        for w in self.wildcards:
            parts += [f"--{w}", (wildcard_values or {})[w]]
        return " ".join(parts + ["--log-file", log])


def gathered_wildcards(template: str, keep: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The wildcards of ``template`` a consumer with wildcards ``keep`` gathers over (every value)."""
    return tuple(w for w in WILDCARD_LISTS if "{%s}" % w in template and w not in keep)


def gather_dir(template: str, keep: tuple[str, ...] = ("layer",)) -> str:
    """The directory holding every copy of a gathered input: the path up to the first part that
    holds a wildcard the consumer (with wildcards ``keep``) ranges over. ``.../layer{layer}`` for a
    per-layer analysis gathering sizes; ``results/codes/{model}`` for the study-level report."""
    over = gathered_wildcards(template, keep)
    if not over:
        raise ValueError(f"gathered input {template!r} has no wildcard to gather over")
    parts = template.split("/")
    first = next(i for i, part in enumerate(parts) if any("{%s}" % w in part for w in over))
    return "/".join(parts[:first])


# --------------------------------------------------------------------------------------
# Code dependencies: the import closure of a stage's module
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _package_root() -> Path:
    spec = find_spec(PACKAGE)
    assert spec is not None and spec.origin is not None, f"{PACKAGE} is not importable"
    return Path(spec.origin).parent


def _module_file(name: str) -> Path | None:
    """The source file of project module ``name``, found on disk (nothing is imported: reading
    the graph must not load torch)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = _package_root().joinpath(*parts[1:])
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _is_module(name: str) -> bool:
    return _module_file(name) is not None


def _imports(path: Path, module: str) -> set[str]:
    """Project modules imported anywhere in ``path`` (top level or inside functions)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.split(".")[0] != PACKAGE:
                continue
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}"))
    return found


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@lru_cache(maxsize=None)
def import_closure(module: str) -> tuple[str, ...]:
    """Every project module that importing and running ``module`` may execute (sorted), the
    packages' ``__init__`` files included; modules in NOT_CODE_DEPS are neither listed nor followed."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        for mod in _with_parents(name):
            if mod in seen or mod in NOT_CODE_DEPS:
                continue
            seen.add(mod)
            path = _module_file(mod)
            if path is not None:
                todo.extend(_imports(path, mod))
    return tuple(sorted(seen))


def code_files(stage: Stage) -> tuple[str, ...]:
    """The source files (repository paths) and data folders a stage's outputs depend on."""
    root = _package_root()
    closure = sorted({m for module in (stage.module, *stage.modules) for m in import_closure(module)})
    files = [CODE + path.relative_to(root).as_posix() for path in map(_module_file, closure) if path is not None]
    return (*files, *(CODE + d for d in stage.data))
