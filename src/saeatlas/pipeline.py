"""The stage table: the one description of the study's graph.

Snakemake (``workflow/rules/*.smk``) builds its rules from this table, ``dvc.yaml`` is generated
from it (``python -m saeatlas dvc-yaml``; a test checks the committed file is current), and the
stages themselves take their output paths from it. So the two front-ends cannot drift apart:
same stages, same commands, same inputs (upstream outputs + the stage's own code), same outputs,
same params keys (Snakemake re-runs on them through ``params:``, DVC through ``params:``).

Paths are templates: ``{model}`` is ``model.name`` from params.yaml; ``{layer}`` is a wildcard
over ``model.layers`` (Snakemake wildcard, DVC ``foreach``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class Output:
    name: str
    path: str
    directory: bool = False
    metric: bool = False


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    params: tuple[str, ...]
    code: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    outputs: tuple[Output, ...] = ()
    wildcard: str | None = None  # "layer": one job per entry of model.layers
    uses_device: bool = False  # runs the LM: takes --device (CPU or CUDA)

    def out(self, name: str, **values: Any) -> Path:
        for o in self.outputs:
            if o.name == name:
                return Path(o.path.format(**values))
        raise KeyError(f"stage {self.name!r} has no output {name!r}")

    def log_path(self) -> str:
        suffix = f"-{self.wildcard}{{{self.wildcard}}}" if self.wildcard else ""
        return f"results/logs/{self.name}{suffix}.log"

    def command(self, log: str, params_file: str = PARAMS_FILE, wildcard_value: str = "") -> str:
        """The CLI call both front-ends run (each passes its own spelling of the wildcard)."""
        parts = ["python -m saeatlas", self.name, "--params", shlex.quote(params_file)]
        if self.wildcard:
            parts += [f"--{self.wildcard}", wildcard_value]
        return " ".join(parts + ["--log-file", log])


CODE = "src/saeatlas/"
# Code every stage runs through (parameter handling, stage wiring, output writing).
COMMON = (CODE + "config.py", CODE + "stages.py", CODE + "artifacts.py")

STAGES: tuple[Stage, ...] = (
    Stage(
        name="model",
        help="Convert the language model once into a safetensors checkpoint (GGUF dequantised).",
        params=("model.name", "model.source"),
        code=(*COMMON, CODE + "lm.py", CODE + "packages.py"),
        outputs=(
            Output("checkpoint", "results/models/{model}", directory=True),
            Output("metrics", "results/models/{model}.metrics.json", metric=True),
        ),
    ),
    Stage(
        name="corpus",
        help="Read, mix, tokenise and pack the text sources into fixed-length contexts.",
        params=("corpus",),
        code=(*COMMON, CODE + "corpus.py", CODE + "sources.py", CODE + "packages.py"),
        inputs=("results/models/{model}",),
        outputs=(
            Output("train_contexts", "results/corpus/train_contexts.npy"),
            Output("train_doc_ids", "results/corpus/train_doc_ids.npy"),
            Output("eval_contexts", "results/corpus/eval_contexts.npy"),
            Output("eval_doc_ids", "results/corpus/eval_doc_ids.npy"),
            Output("documents", "results/corpus/documents.jsonl"),
            Output("manifest", "results/corpus/manifest.json"),
            Output("metrics", "results/corpus/metrics.json", metric=True),
        ),
    ),
    Stage(
        name="activations",
        help="Run the LM up to one layer over the corpus and store the residual stream (resumable).",
        params=("model.dtype", "activations"),
        code=(*COMMON, CODE + "activations.py", CODE + "lm.py", CODE + "corpus.py"),
        inputs=(
            "results/models/{model}",
            "results/corpus/train_contexts.npy",
            "results/corpus/train_doc_ids.npy",
            "results/corpus/eval_contexts.npy",
            "results/corpus/eval_doc_ids.npy",
            "results/corpus/manifest.json",
        ),
        outputs=(
            Output("store", "results/activations/{model}/layer{layer}", directory=True),
            Output("metrics", "results/activations/{model}/layer{layer}.metrics.json", metric=True),
        ),
        wildcard="layer",
        uses_device=True,
    ),
)

STAGE = {s.name: s for s in STAGES}


# --------------------------------------------------------------------------------------
# dvc.yaml, generated
# --------------------------------------------------------------------------------------


def _dvc_path(template: str, wildcard: str | None) -> str:
    out = template.replace("{model}", "${model.name}")
    if wildcard:
        out = out.replace("{%s}" % wildcard, "${item}")
    return out


def dvc_stage(stage: Stage) -> dict[str, Any]:
    log = _dvc_path(stage.log_path(), stage.wildcard)
    body: dict[str, Any] = {
        "cmd": stage.command(log=log, wildcard_value="${item}"),
        "deps": [*stage.code, *(_dvc_path(p, stage.wildcard) for p in stage.inputs)],
        "params": list(stage.params),
        "outs": [_dvc_path(o.path, stage.wildcard) for o in stage.outputs if not o.metric]
        + [{log: {"cache": False}}],
    }
    metrics = [{_dvc_path(o.path, stage.wildcard): {"cache": False}} for o in stage.outputs if o.metric]
    if metrics:
        body["metrics"] = metrics
    if stage.wildcard:
        return {"foreach": "${model.%ss}" % stage.wildcard, "do": body}
    return body


def dvc_yaml() -> str:
    header = (
        "# GENERATED by `python -m saeatlas dvc-yaml` from src/saeatlas/pipeline.py; do not edit.\n"
        "# The same graph as the Snakefile (tests/test_pipeline.py checks both).\n"
    )
    doc = {"stages": {s.name: dvc_stage(s) for s in STAGES}}
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)
