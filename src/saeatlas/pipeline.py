"""The stage table: the one description of the study's graph. Adding a stage = one row here plus
its folder (``analysis/<name>/`` for an analysis: config, compute, figures, section, stage).

Everything else is derived from the rows (``graph.py``): the CLI's sub-commands, the Snakemake
rules (``workflow/rules/stages.smk`` loops over the table), ``dvc.yaml`` (generated,
``python -m saeatlas generate``; a test checks it is current), each stage's code dependencies
(the import closure of its module) and the jobs' resources. So the two front-ends cannot drift
apart: same stages, same commands, same inputs, outputs, params keys and code.

Paths are templates: ``{model}`` is ``model.name``; ``{layer}`` ranges over ``model.layers``,
``{arch}`` over ``sae.architectures`` and ``{size}`` over ``sae.sizes`` (Snakemake wildcards, DVC
``matrix``). Every SAE is one (layer, architecture, size); an analysis comparing sizes runs per
(layer, architecture).
"""

from __future__ import annotations

from dataclasses import fields

from saeatlas.config import SAEParams
from saeatlas.graph import Output, Ref, Resources, Shown, Stage, gather_dir

SAE_DIR = "results/saes/{model}/layer{layer}/{arch}/n{size}"
FEATURES_DIR = "results/features/{model}/layer{layer}/{arch}/n{size}"
# The codes and dictionary directions the analyses read; apart from the browser tables, so that a
# change to how examples are shown does not re-run the analyses.
CODES_DIR = "results/codes/{model}/layer{layer}/{arch}/n{size}"
# every sae.* key but the lists of sizes and architectures (adding one must not retrain the
# others) and the job's own architecture (its wildcard, not a key of params.yaml)
SAE_TRAINING_PARAMS = tuple(f"sae.{f.name}" for f in fields(SAEParams)
                            if f.name not in ("sizes", "architectures", "architecture"))
HEAVY = Resources(gpu=True, cpus=8, mem_mb=16000, runtime=60)
MODEL = Ref("model", "checkpoint")
STORE = Ref("activations", "store")
SAE = (Ref("train_sae", "weights"), Ref("train_sae", "cfg"))
CODES = Ref("features", "codes")


def analysis_outputs(name: str, per_size: bool = False) -> tuple[Output, ...]:
    """An analysis writes one directory and a metrics file beside it (DVC refuses a metrics file
    inside a tracked directory): per layer, or per layer and size."""
    path = f"results/analysis/{name}/{{model}}/layer{{layer}}/{{arch}}" + ("/n{size}" if per_size else "")
    shown = Shown(f"{name}.rst", "Analyses", patterns=("figures/{figure}.png",))
    return (Output("report", path, directory=True, shown=shown), Output("metrics", path + ".metrics.json", metric=True))


# The published figures every analysis writes beside its own (and the report's comparison table).
PUBLISHED = "analysis/published.yaml"


def analysis(name: str, help: str, params: tuple[str, ...], inputs: tuple[Ref, ...], per_size: bool = False,
             resources: Resources = Resources(), data: tuple[str, ...] = ()) -> Stage:
    """The row of an analysis: its code in ``analysis/<name>/``, its params in section ``<name>``."""
    return Stage(name=name, help=help, run=f"saeatlas.analysis.{name}.stage:run", params=(name, *params),
                 inputs=inputs, outputs=analysis_outputs(name, per_size),
                 wildcards=("layer", "arch", "size") if per_size else ("layer", "arch"), resources=resources,
                 data=(*data, PUBLISHED))


def core(name: str, help: str, params: tuple[str, ...], inputs: tuple[Ref, ...], outputs: tuple[Output, ...],
         wildcards: tuple[str, ...] = (), resources: Resources = Resources(), data: tuple[str, ...] = (),
         modules: tuple[str, ...] = ()) -> Stage:
    """The row of a core stage: its adapter is ``stages/<name>.py``."""
    return Stage(name=name, help=help, run=f"saeatlas.stages.{name}:run", params=params, inputs=inputs,
                 outputs=outputs, wildcards=wildcards, resources=resources, data=data, modules=modules)


def report_row(analyses: tuple[str, ...]) -> Stage:
    """The study-level report, last: every stage's outputs, every layer and size (gathered), every
    params section but ``tracking`` (it prints them; tracking says how runs are recorded, not what
    they compute, so switching it re-runs nothing). The analyses come from the table: a new one
    needs no edit."""
    from saeatlas.config import load_core_schema

    gather = lambda stage, output: Ref(stage, output, gather=True)  # noqa: E731
    inputs = (MODEL, Ref("corpus", "metrics"), Ref("activations", "metrics"),
              *(gather("train_sae", o) for o in ("curve", "metrics")),
              *(gather("evaluate", o) for o in ("metrics", "density")),
              *(gather("features", o) for o in ("features", "contexts", "codes")),
              *(gather(a, o) for a in analyses for o in ("report", "metrics")))
    return core("report", "The study's HTML report and feature browser, opened from disk (results/report/).",
                (*(k for k in load_core_schema()["properties"] if k != "tracking"), *analyses), inputs,
                (Output("site", "results/report", directory=True),
                 Output("metrics", "results/report.metrics.json", metric=True)),
                resources=Resources(threads="all", cpus=4, mem_mb=16000, runtime=60),
                data=("report/templates", "report/assets", PUBLISHED),
                modules=tuple(f"saeatlas.analysis.{a}.section" for a in analyses))


CORPUS_FILES = ("train_contexts", "train_doc_ids", "eval_contexts", "eval_doc_ids")

ONE_THREAD = Resources(threads=1)

ROWS: tuple[Stage, ...] = (
    core("model", "Convert the language model once into a safetensors checkpoint (GGUF dequantised).",
         ("model.name", "model.source"), (),
         (Output("checkpoint", "results/models/{model}", directory=True),
          Output("metrics", "results/models/{model}.metrics.json", metric=True)), resources=ONE_THREAD),
    core("corpus", "Read, mix, tokenise and pack the text sources into fixed-length contexts.", ("corpus",), (MODEL,),
         (*(Output(name, f"results/corpus/{name}.npy") for name in CORPUS_FILES),
          Output("documents", "results/corpus/documents.jsonl"), Output("manifest", "results/corpus/manifest.json"),
          Output("metrics", "results/corpus/metrics.json", metric=True)), resources=ONE_THREAD),
    # One job for every layer (one forward to the deepest): its store output has {layer} but the
    # stage has no layer wildcard, so each front-end lists every layer's copy as its output.
    core("activations", "Run the LM once over the corpus and store every listed layer's residual stream "
         "(and MLP neurons on held-out tokens); resumable.",
         ("model.dtype", "model.layers", "activations"),
         (MODEL, *(Ref("corpus", name) for name in CORPUS_FILES), Ref("corpus", "manifest")),
         (Output("store", "results/activations/{model}/layer{layer}", directory=True),
          Output("metrics", "results/activations/{model}.metrics.json", metric=True)),
         (), Resources(gpu=True, cpus=8, mem_mb=32000, runtime=240)),
    core("train_sae", "Train one SAE (one dictionary size) on a layer's activation store (resumable).",
         SAE_TRAINING_PARAMS, (STORE,),
         (Output("weights", SAE_DIR + "/sae_weights.safetensors"), Output("cfg", SAE_DIR + "/cfg.json"),
          Output("curve", SAE_DIR + "/training_log.csv", plot={"x": "tokens", "y": "fvu"},
                 shown=Shown("training_log.rst", "Training")),
          Output("metrics", SAE_DIR + "/train_metrics.json", metric=True)),
         ("layer", "arch", "size"), Resources(gpu=True, cpus=8, mem_mb=32000, runtime=240)),
    core("evaluate", "Evaluate one SAE on held-out tokens: FVU, L0, dead/dense, density, spliced CE/KL.",
         ("evaluate", "model.dtype"), (*SAE, STORE, MODEL, Ref("corpus", "eval_contexts")),
         (Output("metrics", SAE_DIR + "/metrics.json", metric=True),
          Output("density", SAE_DIR + "/density_histogram.csv", plot={"x": "log10_density", "y": "latents"},
                 shown=Shown("density.rst", "Quality"))),
         ("layer", "arch", "size"), HEAVY),
    core("features", "Encode the held-out tokens once; per-feature density, top and sampled contexts, logit lens.",
         ("features", "model.dtype"), (*SAE, STORE, MODEL),
         (Output("codes", CODES_DIR, directory=True), Output("features", FEATURES_DIR + "/features.parquet"),
          Output("contexts", FEATURES_DIR + "/contexts.parquet"),
          Output("metrics", FEATURES_DIR + "/metrics.json", metric=True)),
         ("layer", "arch", "size"), HEAVY),
    analysis("splitting", "Match features across adjacent dictionary sizes; split families, "
             "identical/split/novel fractions vs nulls; inside a Matryoshka SAE, across its nested prefixes.",
             ("sae.sizes", "sae.matryoshka_fractions"), (Ref("features", "codes", gather=True),)),
    analysis("scaling", "Alive/dead/density power laws in dictionary size; feature completeness of shipped "
             "concept lists.", ("sae.sizes",),
             (STORE, Ref("corpus", "train_contexts"), MODEL, Ref("features", "codes", gather=True)),
             data=("data/concepts",)),
    analysis("neighbours", "Nearest decoder neighbours of every feature; UMAP maps per size and of all "
             "sizes jointly.", ("sae.sizes",), (Ref("features", "codes", gather=True),)),
    analysis("crystals", "Word-pair parallelograms in activation and SAE-feature space, before and after "
             "LDA, vs shuffled pairs.", ("sae.sizes", "model.dtype", "corpus.prepend_bos"),
             (MODEL, Ref("train_sae", "weights", gather=True), Ref("train_sae", "cfg", gather=True)),
             resources=HEAVY, data=("data/word_pairs",)),
    # lobes holds a few dense n x n float32 matrices: ~1.4 GB each at n = 18432, ~22 GB at 73728
    analysis("lobes", "Co-occurrence lobes of one dictionary vs its geometric clusters (AMI, classifier, "
             "domains).", (), (CODES, STORE, Ref("corpus", "documents")), per_size=True,
             resources=Resources(mem_mb=96000, runtime=240)),
    analysis("galaxy", "Eigenvalue spectrum (power-law slope) and clustering negentropy of the decoder "
             "cloud, vs nulls.", ("sae.sizes",), (STORE, Ref("features", "codes", gather=True))),
    analysis("neurons", "Features vs MLP neurons: each feature's largest Pearson |r| with any neuron, vs random "
             "residual directions and rotated neurons.", ("sae.sizes",), (STORE, Ref("features", "codes", gather=True))),
    analysis("probing", "Sparse probing (top-k latents by class-mean difference) on domain and token tasks vs "
             "residual and random latents; the first-letter gate of absorption.", ("sae.sizes",),
             (STORE, MODEL, Ref("corpus", "documents"), Ref("features", "codes", gather=True))),
    analysis("absorption", "Feature absorption on the first-letter task (Chanin et al. 2024): main latents by "
             "k-sparse probing, absorbed probe true positives vs a random-direction null.", ("sae.sizes",),
             (STORE, MODEL, Ref("features", "codes", gather=True))),
    # Retrains the sizes up to seeds.max_size with other seeds (training work: HEAVY-like) and runs
    # splitting, galaxy, lobes and scaling on each replica with their own code (their params are read here).
    analysis("seeds", "Headline numbers over extra training seeds: mean and spread beside the within-seed "
             "intervals.", (*SAE_TRAINING_PARAMS, "sae.sizes", "evaluate.batch_size", "evaluate.dense_threshold",
                           "features.batch_size", "features.max_active", "splitting", "galaxy", "lobes", "scaling"),
             (STORE, MODEL, Ref("corpus", "documents"), Ref("corpus", "train_contexts"),
              *(Ref("train_sae", o, gather=True) for o in ("weights", "cfg")), Ref("features", "codes", gather=True)),
             resources=Resources(gpu=True, cpus=8, mem_mb=32000, runtime=240), data=("data/concepts",)),
)  # end of STAGES

ANALYSES = tuple(s for s in ROWS if s.run.startswith("saeatlas.analysis."))
STAGES: tuple[Stage, ...] = (*ROWS, report_row(tuple(s.name for s in ANALYSES)))
STAGE = {s.name: s for s in STAGES}


def input_templates(stage: Stage) -> tuple[list[str], list[str]]:
    """The path templates a stage reads: (per job, gathered over every size)."""
    plain = [STAGE[r.stage].output(r.output).path for r in stage.inputs if not r.gather]
    gathered = [STAGE[r.stage].output(r.output).path for r in stage.inputs if r.gather]
    return plain, gathered


def dvc_inputs(stage: Stage) -> list[str]:
    """DVC's view of the inputs: DVC has no gather, so a gathered input is the directory above its
    copies (``gather_dir``)."""
    plain, gathered = input_templates(stage)
    return [*plain, *dict.fromkeys(gather_dir(p, stage.wildcards) for p in gathered)]
