"""Stage ``report``: the study as a reader sees it: ``results/report/index.html`` (every section,
in the study's order) and the feature browser under ``results/report/features/``, both opened
from disk with no network; headline numbers in ``results/report.metrics.json``
(``report/``)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from saeatlas.adapters import RESULTS, model_dir, path, sae_dir, sizes
from saeatlas.artifacts import provenance, replace_dir, write_metrics
from saeatlas.config import Params
from saeatlas.tracking import experiment_name, stage_run, study_run, tracking_uri

log = logging.getLogger(__name__)


def _run_facts(params: Params, study: Any) -> dict[str, Any]:
    """The Run section: provenance, machine, wall-clock per job, and where the MLflow runs are."""
    import yaml

    from saeatlas.report.core_sections import machine, stage_seconds

    prov = provenance(params.hash())
    uri = tracking_uri(RESULTS)
    command = (f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:")
               else f"open {uri} in a browser")
    study_url = (f"http://127.0.0.1:5000/#/experiments/{study.experiment_id}/runs/{study.run_id}"
                 if study.run_id else None)
    return {"git_commit": prov["git_commit"], "params_hash": prov["params_hash"], "versions": prov["versions"],
            "experiment": experiment_name(params), "tracking_uri": uri, "mlflow_command": command,
            "experiment_id": study.experiment_id, "study_run_id": study.run_id, "study_url": study_url,
            "stage_runs": study.stage_runs, "machine": machine(), "jobs": stage_seconds(RESULTS / "logs"),
            "params_yaml": yaml.safe_dump(dict(params.raw), sort_keys=False)}


@contextlib.contextmanager
def _removed_on_failure(partial: Path) -> Iterator[None]:
    """A fresh ``partial`` folder, removed again if the stage fails: a failed report leaves the
    last good one and nothing half-built beside it."""
    shutil.rmtree(partial, ignore_errors=True)
    try:
        yield
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _blocks(params: Params) -> list[tuple[int, str]]:
    """The report's blocks and the browser's datasets: every (layer, architecture), layer first."""
    return [(layer, arch) for layer in params.model.layers for arch in params.sae.architectures]


def _layer_metrics(metrics: dict[str, Any], layer: int) -> dict[str, Any]:
    """One layer's entries of the activations stage's metrics (keys ``layer<L>.<split>.<name>``)."""
    prefix = f"layer{layer}."
    return {key[len(prefix):]: value for key, value in metrics.items() if key.startswith(prefix)}


def _layer_block(params: Params, layer: int, scratch: Path, vocab: Any, busiest: dict[int, int]) -> dict[str, Any]:
    """One (layer, architecture) block: ``params`` is the architecture's (``for_architecture``)."""
    from saeatlas.pipeline import ANALYSES
    from saeatlas.report.assemble import (analysis_sections, block_key, joint_map_figure, joint_map_section,
                                          quality_table, top_tokens)
    from saeatlas.report.comparison import comparison_rows, comparison_section
    from saeatlas.report.core_sections import QUALITY_COLUMNS, quality_section, read_json
    from saeatlas.report.render import Placed

    ns = sizes(params, "report")
    key = block_key(layer, params.sae.architecture, params.sae.architectures)
    where = lambda stage, output, **w: path(stage, output, params, **w)  # noqa: E731
    training_dir = scratch / f"layer{key}" / "training"
    training_dir.mkdir(parents=True, exist_ok=True)
    quality, rows = quality_section(layer, ns, lambda n: sae_dir(params, layer, n),
                                    _layer_metrics(read_json(where("activations", "metrics")), layer), training_dir,
                                    params.sae.architecture)
    placed = [Placed(quality, training_dir, f"layer{key}/training", key)]
    placed += analysis_sections(layer, ns, ANALYSES, where, key)
    compared = comparison_rows(layer, ns, ANALYSES, where)
    if compared:  # the published figures that name our metrics, side by side
        compare_dir = scratch / f"layer{key}" / "comparison"
        compare_dir.mkdir(parents=True, exist_ok=True)
        placed.append(Placed(comparison_section(compared, compare_dir, layer), compare_dir, f"layer{key}/comparison",
                             key))
    map_dir = scratch / f"layer{key}" / "map"
    umap_csv = where("neighbours", "report", layer=layer) / "tables" / "umap_coordinates.csv"
    tokens = (lambda: {n: top_tokens(where("features", "contexts", layer=layer, size=n), vocab) for n in ns})
    if umap_csv.is_file() and joint_map_figure(umap_csv, key, ns, tokens(), map_dir):
        placed.append(Placed(joint_map_section(map_dir, sum(ns), layer), map_dir, f"layer{key}/map", key))
    placed.sort(key=lambda p: p.section.order)
    # Each size's row opens the browser at its most frequently firing feature.
    table = quality_table(rows, QUALITY_COLUMNS,
                          lambda n: f"features/feature.html?size={n}&id={busiest[n]}&layer={key}")
    return {"layer": key, "placed": placed, "sizes_table": table}


def run(params: Params) -> dict[str, Any]:
    from saeatlas.lm import load_tokenizer
    from saeatlas.report.assemble import block_key, headline_metrics, slug_anchor
    from saeatlas.report.core_sections import ARCHITECTURE_NAMES, machine
    from saeatlas.report.render import copy_static, place_files, render

    out = path("report", "site", params)
    partial = out.with_name(out.name + ".partial")
    with stage_run("report", params, RESULTS) as job, study_run(params, RESULTS, machine()["device"]) as study, \
            _removed_on_failure(partial):
        scratch = partial / "_sources"
        tokenizer = load_tokenizer(model_dir(params))
        vocab = lambda i: tokenizer.decode([i])  # noqa: E731
        browser = _browser(params, partial / "features", tokenizer)
        blocks = []
        for layer, arch in _blocks(params):
            key = block_key(layer, arch, params.sae.architectures)
            busiest = {s["size"]: s["busiest"] for entry in browser["layers"] if entry["layer"] == key
                       for s in entry["sizes"]}
            block = _layer_block(params.for_architecture(arch), layer, scratch, vocab, busiest)
            sections = []
            for placed in block["placed"]:
                sections.append({"section": placed.section, "slug": placed.slug, "anchor": slug_anchor(placed.slug),
                                 "files": place_files(placed, partial),
                                 "sizes_table": block["sizes_table"] if placed.slug.endswith("/training") else None})
            label = str(layer) if len(params.sae.architectures) == 1 else f"{layer}, {ARCHITECTURE_NAMES[arch]}"
            blocks.append({"layer": key, "label": label, "sections": sections})
        if len(params.sae.architectures) > 1:  # the architectures side by side, before the layers
            blocks[:0] = [_architectures_block(params, layer, scratch, partial) for layer in params.model.layers]
        if len(params.model.layers) > 1:  # the galaxy and lobes against depth, before the layers
            blocks.insert(0, _depth_block(params, scratch, partial))
        copy_static(partial)
        render(partial, {"study": params.study.name, "model": params.model.name, "layers": list(params.model.layers),
                         "architectures": list(params.sae.architectures),
                         "sizes": list(sizes(params, "report")), "run": _run_facts(params, study),
                         "layer_blocks": blocks})
        shutil.rmtree(scratch)
        metrics = headline_metrics(blocks)
        job.log_metrics(metrics)
        if study.run_id is not None:  # before publishing: a failed upload leaves the last good report
            with tempfile.TemporaryDirectory() as tmp:  # the whole report, browser included, zipped
                archive = shutil.make_archive(str(Path(tmp) / "report"), "zip", root_dir=partial)
                study.finish(metrics, [partial / "index.html", Path(archive)])
        replace_dir(partial, out)
        write_metrics(path("report", "metrics", params), metrics)
        log.info("report: %s (%d sections)", out / "index.html", sum(len(b["sections"]) for b in blocks))
    return metrics


def _study_block(section: Any, folder: Path, slug: str, partial: Path, label: str) -> dict[str, Any]:
    """A study-level section (not one layer's sizes), placed like a layer's block."""
    from saeatlas.report.assemble import slug_anchor
    from saeatlas.report.render import Placed, place_files

    placed = Placed(section, folder, slug, None)
    return {"layer": label, "label": label, "sections": [{"section": placed.section, "slug": placed.slug,
                                          "anchor": slug_anchor(placed.slug), "files": place_files(placed, partial),
                                          "sizes_table": None}]}


def _depth_block(params: Params, scratch: Path, partial: Path) -> dict[str, Any]:
    """The study-level "Across depth" section (``report/depth.py``)."""
    from saeatlas.report.depth import build

    return _study_block(build(params, scratch / "depth"), scratch / "depth", "depth", partial, "all")


def _architectures_block(params: Params, layer: int, scratch: Path, partial: Path) -> dict[str, Any]:
    """One layer's "Across architectures" section (``report/architectures.py``)."""
    from saeatlas.report.architectures import build

    folder = scratch / f"architectures-layer{layer}"
    return _study_block(build(params, layer, folder), folder, f"architectures/layer{layer}", partial,
                        f"{layer}, every architecture")


def _browser(params: Params, out: Path, tokenizer: Any) -> dict[str, Any]:
    """The feature browser (``report/browser.py``): every layer, every size."""
    from saeatlas.report.browser import LayerInputs, SizeInputs, build_browser
    from saeatlas.tokenise import token_bytes

    # The lobe partition a page names: k = 8 (a handful of lobes, as in GoC) or the nearest k run.
    lobe_k = min(params.section("lobes.k_values"), key=lambda k: (abs(k - 8), k))
    from saeatlas.report.assemble import block_key

    layers = []
    for layer, arch in _blocks(params):
        job_params = params.for_architecture(arch)
        where = lambda stage, output, **w: path(stage, output, job_params, layer=layer, **w)  # noqa: E731
        tables = lambda stage: where(stage, "report") / "tables"  # noqa: E731
        size_inputs = tuple(SizeInputs(size=n, features=where("features", "features", size=n),
                                       contexts=where("features", "contexts", size=n),
                                       codes=where("features", "codes", size=n),
                                       lobes=where("lobes", "report", size=n) / "tables" / "lobe_assignments.csv",
                                       neurons=tables("neurons") / f"top_neurons_n{n}.csv")
                            for n in sizes(params, "report"))
        layers.append(LayerInputs(layer=block_key(layer, arch, params.sae.architectures), sizes=size_inputs, matches=tables("splitting") / "matches.csv",
                                  neighbours=tables("neighbours") / "neighbours.csv",
                                  umap=tables("neighbours") / "umap_coordinates.csv", lobe_k=lobe_k))
    return build_browser(out, tuple(layers), token_bytes(tokenizer))
