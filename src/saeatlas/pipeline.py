"""The stage table: the one description of the study's graph.

Snakemake (``workflow/rules/*.smk``) builds its rules from this table, ``dvc.yaml`` is generated
from it (``python -m saeatlas dvc-yaml``; a test checks the committed file is current), and the
stages themselves take their output paths from it. So the two front-ends cannot drift apart:
same stages, same commands, same inputs (upstream outputs + the stage's own code), same outputs,
same params keys (Snakemake re-runs on them through ``params:``, DVC through ``params:``).

Paths are templates: ``{model}`` is ``model.name`` from params.yaml; ``{layer}`` is a wildcard
over ``model.layers`` and ``{size}`` one over ``sae.sizes`` (Snakemake wildcards, DVC ``matrix``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from saeatlas.config import SAEParams

PARAMS_FILE = "params.yaml"
# Each wildcard and the params.yaml list it ranges over.
WILDCARD_LISTS = {"layer": "model.layers", "size": "sae.sizes"}


@dataclass(frozen=True)
class Output:
    name: str
    path: str
    directory: bool = False
    metric: bool = False
    plot: dict[str, str] | None = None  # a CSV that `dvc plots` draws: {"x": column, "y": column}


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    params: tuple[str, ...]
    code: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    outputs: tuple[Output, ...] = ()
    wildcards: tuple[str, ...] = ()  # one job per combination, e.g. ("layer", "size")
    # Inputs gathered over every dictionary size (templates with "/n{size}" in them), for stages
    # that compare sizes. Snakemake lists one file per size; DVC, which has no gather, depends on
    # the directory above "/n{size}" (see ``gather_dir``).
    gathered: tuple[str, ...] = ()
    uses_device: bool = False  # heavy torch work: takes --device (CPU or CUDA)

    def out(self, name: str, **values: Any) -> Path:
        for o in self.outputs:
            if o.name == name:
                return Path(o.path.format(**values))
        raise KeyError(f"stage {self.name!r} has no output {name!r}")

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


def gather_dir(template: str) -> str:
    """The directory holding every size's copy of a gathered input: ``.../layer{layer}``."""
    head, sep, _ = (template + "/").partition("/n{size}/")
    if not sep:
        raise ValueError(f"gathered input {template!r} has no '/n{{size}}' part")
    return head


CODE = "src/saeatlas/"
SAE_DIR = "results/saes/{model}/layer{layer}/n{size}"
FEATURES_DIR = "results/features/{model}/layer{layer}/n{size}"
# The codes and dictionary directions the analyses read; apart from the browser tables, so that a
# change to how examples are shown does not re-run the analyses.
CODES_DIR = "results/codes/{model}/layer{layer}/n{size}"
# {name} is filled here, the rest per job: results/analysis/<name>/<model>/layer<L>/ (+ .metrics.json)
ANALYSIS_DIR = "results/analysis/{name}/{{model}}/layer{{layer}}"
SAE_CODE = (CODE + "sae/model.py", CODE + "sae/sparse.py", CODE + "sae/io.py")
SAE_TRAINING_PARAMS = tuple(f"sae.{f.name}" for f in fields(SAEParams) if f.name != "sizes")
# Code every stage runs through (parameter handling, stage wiring, output writing).
COMMON = (CODE + "config.py", CODE + "stages.py", CODE + "artifacts.py")
# ... and every analysis (its params reader, its output writer, the code store, MLflow).
ANALYSIS_CODE = (CODE + "analysis/config.py", CODE + "analysis/output.py", CODE + "codes.py", CODE + "tracking.py")
GEOMETRY_CODE = (*ANALYSIS_CODE, CODE + "analysis/inputs.py", CODE + "analysis/geometry/__init__.py")


def _analysis_outputs(name: str, per_size: bool = False) -> tuple[Output, ...]:
    """An analysis writes one directory and a metrics file beside it (DVC refuses a metrics file
    inside a tracked directory): per layer, or per layer and size."""
    path = ANALYSIS_DIR.format(name=name) + ("/n{size}" if per_size else "")
    return (Output("report", path, directory=True), Output("metrics", path + ".metrics.json", metric=True))

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
        wildcards=("layer",),
        uses_device=True,
    ),
    Stage(
        name="train_sae",
        help="Train one SAE (one dictionary size) on a layer's activation store (resumable).",
        # every sae.* key but the list of sizes: adding a size must not retrain the others
        params=SAE_TRAINING_PARAMS,
        code=(*COMMON, *SAE_CODE, CODE + "sae/train.py", CODE + "activations.py", CODE + "tracking.py"),
        inputs=("results/activations/{model}/layer{layer}",),
        outputs=(
            Output("weights", SAE_DIR + "/sae_weights.safetensors"),
            Output("cfg", SAE_DIR + "/cfg.json"),
            Output("curve", SAE_DIR + "/training_log.csv", plot={"x": "tokens", "y": "fvu"}),
            Output("metrics", SAE_DIR + "/train_metrics.json", metric=True),
        ),
        wildcards=("layer", "size"),
        uses_device=True,
    ),
    Stage(
        name="evaluate",
        help="Evaluate one SAE on held-out tokens: FVU, L0, dead/dense, density, spliced CE/KL.",
        params=("evaluate", "model.dtype"),
        code=(*COMMON, *SAE_CODE, CODE + "evaluate.py", CODE + "activations.py", CODE + "lm.py"),
        inputs=(
            SAE_DIR + "/sae_weights.safetensors",
            SAE_DIR + "/cfg.json",
            "results/activations/{model}/layer{layer}",
            "results/models/{model}",
            "results/corpus/eval_contexts.npy",
        ),
        outputs=(
            Output("metrics", SAE_DIR + "/metrics.json", metric=True),
            Output("density", SAE_DIR + "/density_histogram.csv", plot={"x": "log10_density", "y": "latents"}),
        ),
        wildcards=("layer", "size"),
        uses_device=True,
    ),
    Stage(
        name="features",
        help="Encode the held-out tokens once; per-feature density, top and sampled contexts, logit lens.",
        params=("features", "model.dtype"),
        code=(*COMMON, *SAE_CODE, CODE + "features.py", CODE + "codes.py", CODE + "activations.py",
              CODE + "lm.py", CODE + "tracking.py"),
        inputs=(
            SAE_DIR + "/sae_weights.safetensors",
            SAE_DIR + "/cfg.json",
            "results/activations/{model}/layer{layer}",
            "results/models/{model}",
        ),
        outputs=(
            Output("codes", CODES_DIR, directory=True),
            Output("features", FEATURES_DIR + "/features.parquet"),
            Output("contexts", FEATURES_DIR + "/contexts.parquet"),
            Output("metrics", FEATURES_DIR + "/metrics.json", metric=True),
        ),
        wildcards=("layer", "size"),
        uses_device=True,
    ),
    Stage(
        name="splitting",
        help="Match features across adjacent dictionary sizes; split families, identical/split/novel fractions vs nulls.",
        params=("splitting", "sae.sizes"),
        code=(*COMMON, *ANALYSIS_CODE, CODE + "analysis/splitting.py"),
        gathered=(CODES_DIR,),
        outputs=_analysis_outputs("splitting"),
        wildcards=("layer",),
    ),
    Stage(
        name="scaling",
        help="Alive/dead/density power laws in dictionary size; feature completeness of shipped concept lists.",
        params=("scaling", "sae.sizes"),
        code=(*COMMON, *ANALYSIS_CODE, CODE + "analysis/scaling.py", CODE + "data/concepts", CODE + "activations.py",
              CODE + "corpus.py", CODE + "lm.py"),
        inputs=(
            "results/activations/{model}/layer{layer}",
            "results/corpus/train_contexts.npy",
            "results/models/{model}",
        ),
        gathered=(CODES_DIR,),
        outputs=_analysis_outputs("scaling"),
        wildcards=("layer",),
    ),
    Stage(
        name="neighbours",
        help="Nearest decoder neighbours of every feature; UMAP maps per size and of all sizes jointly.",
        params=("neighbours", "sae.sizes"),
        # (it reuses splitting's decoder matching)
        code=(*COMMON, *GEOMETRY_CODE, CODE + "analysis/geometry/neighbours.py", CODE + "analysis/splitting.py"),
        gathered=(CODES_DIR,),
        outputs=_analysis_outputs("neighbours"),
        wildcards=("layer",),
    ),
    Stage(
        name="crystals",
        help="Word-pair parallelograms in activation and SAE-feature space, before and after LDA, vs shuffled pairs.",
        params=("crystals", "sae.sizes", "model.dtype", "corpus.prepend_bos"),
        code=(*COMMON, *GEOMETRY_CODE, *SAE_CODE, CODE + "analysis/geometry/crystals.py", CODE + "lm.py",
              CODE + "corpus.py", CODE + "data/word_pairs"),
        inputs=("results/models/{model}",),
        gathered=(SAE_DIR + "/sae_weights.safetensors", SAE_DIR + "/cfg.json"),
        outputs=_analysis_outputs("crystals"),
        wildcards=("layer",),
        uses_device=True,
    ),
    Stage(
        name="lobes",
        help="Co-occurrence lobes of one dictionary vs its geometric clusters (AMI, classifier, domains).",
        params=("lobes",),
        code=(*COMMON, *GEOMETRY_CODE, CODE + "analysis/geometry/lobes.py", CODE + "activations.py",
              CODE + "corpus.py"),
        inputs=(CODES_DIR, "results/activations/{model}/layer{layer}", "results/corpus/documents.jsonl"),
        outputs=_analysis_outputs("lobes", per_size=True),
        wildcards=("layer", "size"),
    ),
    Stage(
        name="galaxy",
        help="Eigenvalue spectrum (power-law slope) and clustering negentropy of the decoder cloud, vs nulls.",
        params=("galaxy", "sae.sizes"),
        # (its power-law fit and CI are scaling's)
        code=(*COMMON, *GEOMETRY_CODE, CODE + "analysis/geometry/galaxy.py", CODE + "analysis/scaling.py",
              CODE + "activations.py"),
        inputs=("results/activations/{model}/layer{layer}",),
        gathered=(CODES_DIR,),
        outputs=_analysis_outputs("galaxy"),
        wildcards=("layer",),
    ),
)

STAGE = {s.name: s for s in STAGES}


# --------------------------------------------------------------------------------------
# dvc.yaml, generated
# --------------------------------------------------------------------------------------


def _dvc_path(template: str, wildcards: tuple[str, ...]) -> str:
    out = template.replace("{model}", "${model.name}")
    for w in wildcards:
        out = out.replace("{%s}" % w, "${item.%s}" % w)
    return out


def dvc_stage(stage: Stage) -> dict[str, Any]:
    path = lambda template: _dvc_path(template, stage.wildcards)  # noqa: E731
    log = path(stage.log_path())
    body: dict[str, Any] = {
        "cmd": stage.command(log=log, wildcard_values={w: "${item.%s}" % w for w in stage.wildcards}),
        "deps": [*stage.code, *(path(p) for p in stage.inputs),
                 *dict.fromkeys(path(gather_dir(p)) for p in stage.gathered)],
        "params": list(stage.params),
        "outs": [path(o.path) for o in stage.outputs if not (o.metric or o.plot)] + [{log: {"cache": False}}],
    }
    metrics = [{path(o.path): {"cache": False}} for o in stage.outputs if o.metric]
    if metrics:
        body["metrics"] = metrics
    plots = [{path(o.path): {"cache": False, **o.plot}} for o in stage.outputs if o.plot]
    if plots:
        body["plots"] = plots
    if stage.wildcards:
        # DVC names each job <stage>@<value>-<value> (e.g. train_sae@15-1152)
        return {"matrix": {w: "${%s}" % WILDCARD_LISTS[w] for w in stage.wildcards}, **body}
    return body


def dvc_yaml() -> str:
    header = (
        "# GENERATED by `python -m saeatlas dvc-yaml` from src/saeatlas/pipeline.py; do not edit.\n"
        "# The same graph as the Snakefile (tests/test_pipeline.py checks both).\n"
    )
    doc = {"stages": {s.name: dvc_stage(s) for s in STAGES}}
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)
