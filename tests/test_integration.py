"""The smoke study end to end, with the real model, through Snakemake, DVC and an MLflow server."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from saeatlas import config
from saeatlas.activations import ActivationStore
from saeatlas.corpus import CorpusSplit, read_documents
from saeatlas.pipeline import ANALYSES, STAGES
from saeatlas.sources import SkipCounter, iter_documents

from conftest import clone_study, run_tool, tool

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
STORE = Path(f"results/activations/{MODEL}/layer15")


run = run_tool


@pytest.fixture(scope="module")
def snakemake_project(smoke_study: Path) -> Path:
    """The session's smoke study (built once by Snakemake, see conftest.smoke_study)."""
    return smoke_study


def test_snakemake_smoke_study_writes_checked_content(snakemake_project: Path) -> None:
    proj = snakemake_project
    params = config.load(proj / "params.yaml")
    positions = params.corpus.positions_per_context
    corpus_dir = proj / "results/corpus"

    # Corpus: exact budgets.
    train_ctx = CorpusSplit.open(corpus_dir, "train")
    assert train_ctx.contexts.shape == (params.corpus.train_tokens // positions, params.corpus.context_length)

    # Store: every checksum matches, shapes and dtypes as the manifest says.
    for split, data in (("train", train_ctx), ("eval", CorpusSplit.open(corpus_dir, "eval"))):
        store = ActivationStore.open(proj / STORE / split, verify=True)
        assert store.n_tokens == data.contexts.shape[0] * positions
        assert store.manifest["layer"] == 15 and store.manifest["bos_excluded"] is True
        norms = []
        for i in range(store.n_shards):
            shard = store.shard(i)
            assert shard.dtype == np.float32 and shard.shape[1] == 576
            norms.append(np.linalg.norm(shard.astype(np.float64), axis=1))
        norms = np.concatenate(norms)
        assert len(norms) == store.n_tokens
        # Normalisation, recomputed from the shards: E||scale * x||^2 = d within 1% over the
        # ordinary rows (norm <= outlier_factor x median), the rows the manifest says set the scale.
        ordinary = norms <= params.activations.outlier_factor * np.median(norms)
        np.testing.assert_array_equal(ordinary, store.ordinary_mask())
        assert ordinary.mean() > 0.98
        assert abs(store.scale ** 2 * np.mean(norms[ordinary] ** 2) / 576 - 1) < 0.01
        # tokens.npy is the corpus without its BOS column, row for row.
        np.testing.assert_array_equal(store.tokens(), np.asarray(data.contexts[:, 1:]).ravel())
        np.testing.assert_array_equal(store.doc_ids(), np.asarray(data.doc_ids[:, 1:]).ravel())

    # The stored vectors are the model's residual stream after block 15 for those tokens.
    from saeatlas.lm import load_model

    lm = load_model(proj / f"results/models/{MODEL}", device="cpu")
    store = ActivationStore.open(proj / STORE / "train")
    # Same batch and threads as the stage: float32 matmuls block differently by batch size and
    # thread count, and through 15 layers (and the massive activations) a differently batched
    # forward drifts by up to ~1e-2 on some elements; with the stage's batching it is exact.
    batch = store.manifest["batch_contexts"]
    first = torch.from_numpy(np.asarray(train_ctx.contexts[:batch], dtype=np.int64))
    threads = torch.get_num_threads()
    torch.set_num_threads(store.manifest["threads"])
    try:
        expected = lm.residual(first, 15)[:, 1:, :].reshape(-1, 576).numpy()
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(store.shard(0)[: batch * positions], expected, rtol=1e-4, atol=1e-3)

    # Token ids decode back to the corpus text, document by document.
    docs = read_documents(corpus_dir)
    sources = {s.name: s for s in params.corpus.sources}
    originals: dict[tuple[str, str], str] = {}
    for name in sources:
        for doc in iter_documents(sources[name], params.corpus.min_chars, SkipCounter()):
            originals[(name, doc.title)] = doc.text
    tokens, owners = store.tokens(), store.doc_ids()
    checked = 0
    for d in docs:
        ids = tokens[owners == d["doc_id"]]
        if d["split"] != "train" or d["truncated_from"] is not None or len(ids) != d["tokens"] + 1:
            continue
        assert lm.tokenizer.decode(ids[:-1].tolist()) == originals[(d["source"], d["title"])]
        checked += 1
    assert checked >= 10

    # Metrics JSON (what DVC reads) agrees with the store.
    metrics = json.loads((proj / f"results/activations/{MODEL}.metrics.json").read_text())
    assert metrics["layer15.train.tokens"] == store.n_tokens
    assert metrics["layer15.train.scale"] == pytest.approx(store.scale)
    # The MLP neurons of the held-out tokens, captured in the same pass, row for row.
    neurons, held_out = ActivationStore.open(proj / STORE / "eval_neurons"), ActivationStore.open(proj / STORE / "eval")
    assert neurons.d_model == metrics["layer15.neurons"] == 1536 and neurons.n_tokens == held_out.n_tokens
    assert np.array_equal(neurons.tokens(), held_out.tokens())
    corpus_metrics = json.loads((corpus_dir / "metrics.json").read_text())
    assert corpus_metrics["train.tokens"] == store.n_tokens
    assert 0.25 < corpus_metrics["train.domain_fraction.news"] < 0.26

    # One log per job of every stage in the table; a second run has nothing to do.
    for stage in STAGES:
        sizes = params.sae.sizes if "size" in stage.wildcards else [None]
        for n in sizes:
            log = stage.log_path().format(layer=15, arch="topk", size=n)
            assert "INFO" in (proj / log).read_text(), log
    again = run([tool("snakemake"), "--cores", "2", "--configfile", "params.yaml"], proj)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_smoke_saes_load_in_sae_lens_and_their_metrics_are_sane(snakemake_project: Path) -> None:
    """Per size: SAELens loads the files, and the metrics hold by value, not only by presence."""
    import csv

    from saeatlas.sae.io import load_sae

    proj = snakemake_project
    params = config.load(proj / "params.yaml")
    store = ActivationStore.open(proj / STORE / "eval")
    x = torch.from_numpy(np.array(store.shard(0)[:256], dtype=np.float32))
    x = x[torch.from_numpy(store.ordinary_mask(0, 256))]
    for n in params.sae.sizes:
        folder = proj / f"results/saes/{MODEL}/layer15/topk/n{n}"
        assert not (folder / "checkpoint.pt").exists()  # removed once the SAE is exported
        cfg = json.loads((folder / "cfg.json").read_text())
        assert (cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg["k"]) == ("topk", 576, n, params.sae.k)
        assert cfg["metadata"]["hook_name"] == "blocks.15.hook_resid_post"
        assert cfg["metadata"]["context_size"] == params.corpus.context_length
        ours, _ = load_sae(folder)
        sae_lens = pytest.importorskip("sae_lens")
        theirs = sae_lens.SAE.load_from_disk(str(folder))
        with torch.no_grad():
            torch.testing.assert_close(theirs.decode(theirs.encode(x)), ours(x), rtol=1e-4, atol=1e-2)

        m = json.loads((folder / "metrics.json").read_text())
        # FVU recomputed here on the first rows agrees in kind with the stage's number.
        with torch.no_grad():
            local = float((x - ours(x)).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
        assert 0.0 < m["fvu"] < 1.0 and abs(local - m["fvu"]) < 0.25
        assert m["explained_variance"] == pytest.approx(1 - m["fvu"])
        assert m["l0"] == pytest.approx(params.sae.k, abs=0.5)  # TopK: k active unless a value is 0
        assert 0.0 <= m["dead_fraction"] < 0.5 and 0.0 <= m["dense_fraction"] < 0.5
        assert m["eval_tokens"] + m["outlier_tokens_excluded"] == store.n_tokens
        assert m["ce_clean"] < m["ce_sae"] < m["ce_zero_ablation"]
        assert 0.3 < m["ce_loss_recovered"] <= 1.0 and m["kl_sae"] < m["kl_zero_ablation"]
        assert 0.9 < m["spliced_position_fraction"] <= 1.0

        train = json.loads((folder / "train_metrics.json").read_text())
        rows = list(csv.DictReader(open(folder / "training_log.csv")))
        assert int(rows[-1]["step"]) == train["steps"] and int(rows[-1]["tokens"]) == train["tokens"]
        assert float(rows[-1]["fvu"]) < float(rows[0]["fvu"])  # it learned
        hist = list(csv.DictReader(open(folder / "density_histogram.csv")))
        alive = sum(int(r["latents"]) for r in hist)
        assert alive == round((1 - m["dead_fraction"]) * n) == m["alive_latents"]
    # (FVU falling with size is a claim about the default study, checked there: 22 smoke steps
    # at the width-scaled learning rate are too few for it to hold reliably.)


def test_smoke_feature_tables_and_analyses_hold_by_value(snakemake_project: Path) -> None:
    """The features stage's tables agree with the store and the codes; the analyses' numbers lie
    where they must (fractions sum to one, real above null, alive counts as measured)."""
    import pyarrow.parquet as pq

    from saeatlas.codes import SparseCodes

    proj = snakemake_project
    params = config.load(proj / "params.yaml")
    store = ActivationStore.open(proj / STORE / "eval")
    tokens = np.asarray(store.tokens())
    alive = {}
    for n in params.sae.sizes:
        folder = proj / f"results/features/{MODEL}/layer15/topk/n{n}"
        codes = SparseCodes.open(proj / f"results/codes/{MODEL}/layer15/topk/n{n}")
        dense_counts = np.bincount(codes.indices[codes.values > 0], minlength=n)
        feats = pq.read_table(folder / "features.parquet").to_pandas()
        assert len(feats) == n and np.array_equal(feats["count"].to_numpy(), dense_counts)
        m = json.loads((folder / "metrics.json").read_text())
        evaluated = json.loads((proj / f"results/saes/{MODEL}/layer15/topk/n{n}/metrics.json").read_text())
        assert m["alive_latents"] == evaluated["alive_latents"] and m["eval_tokens"] == evaluated["eval_tokens"]
        assert m["l0"] == pytest.approx(evaluated["l0"], rel=1e-6)
        assert len(feats["logit_top_tokens"][0]) == params.features.logit_lens_k
        assert (feats["logit_top_values"].map(lambda v: v[0]) > feats["logit_bottom_values"].map(lambda v: v[0])).all()
        ctx = pq.read_table(folder / "contexts.parquet").to_pandas()
        top0 = ctx[(ctx["kind"] == "top") & (ctx["rank"] == 0)].set_index("feature")["activation"]
        np.testing.assert_allclose(top0.to_numpy(), feats.loc[top0.index, "max_activation"].to_numpy(), rtol=1e-6)
        for _, row in ctx.sample(50, random_state=0).iterrows():
            assert row["token_ids"][row["centre"]] == tokens[row["row"]]
            assert row["token_activations"][row["centre"]] == pytest.approx(row["activation"])
        assert ((ctx["kind"] == "quantile") <= (ctx["activation"] > 0)).all()
        alive[n] = m["alive_latents"]

    split = json.loads((proj / f"results/analysis/splitting/{MODEL}/layer15/topk.metrics.json").read_text())
    pair = "pair_256_512."
    fractions = [split[pair + k] for k in ("identical_fraction", "split_child_fraction", "other_similar_fraction",
                                            "novel_fraction")]
    assert sum(fractions) == pytest.approx(1.0) and all(0 <= f <= 1 for f in fractions)
    assert split[pair + "best_cos_mean"] > split[pair + "best_cos_mean_null"] + 0.1
    assert split[pair + "novel_fraction"] < split[pair + "novel_fraction_null"]
    assert split[pair + "families_null"] <= split[pair + "families"]
    tree = json.loads((proj / f"results/analysis/splitting/{MODEL}/layer15/topk/split_tree.json").read_text())
    assert {node["size"] for node in tree["nodes"]} <= set(params.sae.sizes)
    assert (proj / f"results/analysis/splitting/{MODEL}/layer15/topk/figures/splitting_classes.png").stat().st_size > 1000

    scaling = json.loads((proj / f"results/analysis/scaling/{MODEL}/layer15/topk.metrics.json").read_text())
    for n in params.sae.sizes:
        assert scaling[f"n{n}.alive"] == alive[n]
    assert scaling["alive_power_law.estimated"] == 1
    assert scaling["alive_power_law.exponent_ci_low"] <= scaling["alive_power_law.exponent"] <= scaling["alive_power_law.exponent_ci_high"]
    judged = scaling["completeness.concepts_judged"]
    assert judged + scaling["completeness.concepts_excluded"] == scaling["completeness.concepts_total"] > 700
    if not scaling["completeness.x50_estimated"]:  # the smoke corpus is small: say so, invent nothing
        assert "completeness.x50" not in scaling


def test_smoke_neurons_probing_and_absorption_hold_by_value(snakemake_project: Path) -> None:
    """Features vs neurons, sparse probing and absorption on the real smoke study: the alive
    features' shares add up with the dead ones, the top-neuron table covers every feature, the
    residual-stream probe beats random latents, and absorption is measured only past the gate."""
    import csv

    proj = snakemake_project
    params = config.load(proj / "params.yaml")
    out = lambda name: proj / f"results/analysis/{name}/{MODEL}/layer15/topk"  # noqa: E731
    nm = json.loads((proj / f"results/analysis/neurons/{MODEL}/layer15/topk.metrics.json").read_text())
    for n in params.sae.sizes:
        assert nm[f"n{n}.alive"] + nm[f"n{n}.dead"] == n
        assert nm[f"n{n}.frac_le_threshold_ci_low"] <= nm[f"n{n}.frac_le_threshold"] <= nm[f"n{n}.frac_le_threshold_ci_high"]
        with open(out("neurons") / "tables" / f"top_neurons_n{n}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == n
    assert nm["reference.templeton2024_frac_max_neuron_corr_le_0_3"] == 0.82
    for null in ("random", "rotation"):  # dense nulls: every direction is defined, most below 0.3
        assert nm[f"{null}.dead"] == 0 and nm[f"{null}.frac_le_threshold"] > 0.5

    pm = json.loads((proj / f"results/analysis/probing/{MODEL}/layer15/topk.metrics.json").read_text())
    assert pm["residual.mean_accuracy"] > 0.7
    largest = max(params.sae.sizes)
    kmax = max(params.section("probing.k_values"))
    assert pm[f"n{largest}.k{kmax}.mean_accuracy"] > pm[f"n{largest}.k1.mean_random"]
    assert pm["first_letter.accuracy"] > pm["first_letter.majority"]

    am = json.loads((proj / f"results/analysis/absorption/{MODEL}/layer15/topk.metrics.json").read_text())
    assert 0 < am["gate.accuracy"] <= 1 and 0 <= am["gate.majority"] < 1
    if am["gate.passes"]:
        assert all(0 <= am[f"n{n}.absorption_rate"] <= 1 for n in params.sae.sizes)
    else:
        assert not any(k.endswith("absorption_rate") for k in am)


def test_smoke_geometry_holds_by_value(snakemake_project: Path) -> None:
    """Each geometry stage's numbers lie where they must: above their nulls where the structure is
    the model's own (activation-space crystals, the activations' spectrum), inside [0, 1] where
    they are scores, and counted on the tokens the codes hold."""
    proj = snakemake_project
    params = config.load(proj / "params.yaml")
    sizes = params.sae.sizes
    out = lambda name, suffix="": json.loads(  # noqa: E731
        (proj / f"results/analysis/{name}/{MODEL}/layer15/topk{suffix}.metrics.json").read_text())

    nb = out("neighbours")
    for n in sizes:
        # (the smoke SAEs are barely trained: their nearest-neighbour cosines sit near the isotropic
        # null, which is what the default study's SAEs must beat; here only the ranges hold)
        assert 0 < nb[f"n{n}.nn_cos_mean"] <= 1 and 0 < nb[f"n{n}.nn_cos_mean_null"] < 0.5
        assert nb[f"n{n}.umap_trustworthiness"] > nb[f"n{n}.umap_trustworthiness_null"]
    coords = (proj / f"results/analysis/neighbours/{MODEL}/layer15/topk/tables/umap_coordinates.csv").read_text()
    assert len(coords.strip().splitlines()) == 1 + sum(sizes)

    cr = out("crystals")
    # The LM's own activations hold the word-pair offsets (plural, past tense, ...) well above
    # shuffled pairs; every p-value is a probability.
    assert cr["mean.act.cos_mean"] > cr["mean.act.cos_mean_null"] + 0.1
    assert cr["singular_plural.act.cos_mean_p"] < 0.05
    assert all(0 < v <= 1 for k, v in cr.items() if k.endswith("_p"))
    assert {f"mean.sae_{n}.cos_mean" for n in sizes} <= set(cr)

    eval_tokens = ActivationStore.open(proj / STORE / "eval").n_tokens
    corpus_domains = {d["domain"] for d in read_documents(proj / "results/corpus")}
    for n in sizes:
        lb = out("lobes", f"/n{n}")
        assert lb["n_tokens"] == eval_tokens and lb["n_latents"] == n
        assert -0.1 <= lb["k2.ami"] <= 1 and lb["k2.ami_null_sd"] > 0
        # the decoder row predicts the co-occurrence lobe better than a random vector does
        assert lb["k2.balanced_accuracy"] > lb["k2.balanced_accuracy_random"] + 0.1
        # lobes differ in the domains they fire on more than shuffled lobes do (domains wired per row)
        assert lb["k2.domain_enrichment_max"] > lb["k2.domain_enrichment_max_null_mean"]
        table = (proj / f"results/analysis/lobes/{MODEL}/layer15/topk/n{n}/tables/lobe_domain_enrichment.csv").read_text()
        assert {line.split(",")[3] for line in table.strip().splitlines()[1:]} <= corpus_domains

    gx = out("galaxy")
    assert gx["layer"] == 15
    for key in [f"n{n}" for n in sizes] + ["activations"]:
        assert gx[f"{key}.slope_estimated"] == 1 and gx[f"{key}.slope_ci_high"] > gx[f"{key}.slope_ci_low"]
    # Residual-stream activations are far from isotropic: a steeper spectrum than a Gaussian's,
    # with the intervals apart.
    assert gx["activations.slope"] > gx["activations.slope_gaussian"] + 0.1
    assert gx["activations.slope_ci_low"] > gx["activations.slope_gaussian_ci_high"]


def test_every_analysis_section_reads_its_real_outputs(snakemake_project: Path) -> None:
    """The report-section interface, iterated over the table's analyses without naming one: each
    section, built from the smoke study's written metrics and files, names only files that exist
    and shows finite numbers (or says it has none)."""
    from importlib import import_module

    from saeatlas.pipeline import ANALYSES

    proj = snakemake_project
    params = config.load(proj / "params.yaml")
    for stage in ANALYSES:
        section = import_module(stage.module.rpartition(".")[0] + ".section").section
        sizes = params.sae.sizes if "size" in stage.wildcards else [None]
        for n in sizes:
            where = dict(model=MODEL, layer=15, arch="topk", size=n)
            metrics = json.loads((proj / stage.out("metrics", **where)).read_text())
            out_dir = proj / stage.out("report", **where)
            sec = section(metrics, out_dir)
            assert sec.title and sec.summary and sec.figures, stage.name
            assert sec.missing_files(out_dir) == [], (stage.name, sec.missing_files(out_dir))
            for number in sec.numbers:
                assert number.value is None or np.isfinite(number.value), (stage.name, number)
                assert number.text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, payload: dict | None = None) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_mlflow_server_serves_the_stage_runs(snakemake_project: Path) -> None:
    proj = snakemake_project
    port = free_port()
    db = (proj / "results/mlflow.db").resolve()
    server = subprocess.Popen(
        [tool("mlflow"), "server", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--default-artifact-root", (proj / "results/mlartifacts").resolve().as_uri()],
        cwd=proj, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                out = server.stdout.read().decode() if server.poll() is not None else ""
                pytest.fail(f"mlflow server did not come up on {base}\n{out[-3000:]}")
            time.sleep(0.5)
        name = urllib.parse.quote("saeatlas-smoke")
        exp = get_json(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}")["experiment"]
        runs = get_json(f"{base}/api/2.0/mlflow/runs/search",
                        {"experiment_ids": [exp["experiment_id"]], "filter": "tags.stage = 'activations'"})["runs"]
        assert len(runs) == 1
        run_ = runs[0]
        assert run_["info"]["run_name"] == "activations" and run_["info"]["status"] == "FINISHED"
        metrics = {m["key"]: m["value"] for m in run_["data"]["metrics"]}
        store = ActivationStore.open(proj / STORE / "train")
        assert metrics["layer15.train.tokens"] == store.n_tokens
        assert metrics["tokens_per_second"] > 0
        params = {p["key"]: p["value"] for p in run_["data"]["params"]}
        assert params["corpus.context_length"] == "64"
        tags = {t["key"]: t["value"] for t in run_["data"]["tags"]}
        assert len(tags["git_commit"]) >= 7
        galaxy = get_json(f"{base}/api/2.0/mlflow/runs/search",
                          {"experiment_ids": [exp["experiment_id"]], "filter": "tags.stage = 'galaxy'"})["runs"]
        assert len(galaxy) == 1 and galaxy[0]["info"]["run_name"] == "galaxy[arch=topk,layer=15]"
        assert {p["key"]: p["value"] for p in galaxy[0]["data"]["params"]}["wildcard.layer"] == "15"
        assert {t["key"]: t["value"] for t in galaxy[0]["data"]["tags"]}["layer"] == "15"
        stages = get_json(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
        stage_tags = {next(t["value"] for t in r["data"]["tags"] if t["key"] == "stage") for r in stages}
        assert stage_tags == {s.name for s in STAGES} | {"study"}
        check_study_run(base, exp, stages, proj)

        # Training: one parent run per layer and architecture, one child per size, each with its curve over tokens.
        found = get_json(f"{base}/api/2.0/mlflow/runs/search",
                         {"experiment_ids": [exp["experiment_id"]], "filter": "tags.stage = 'train_sae'"})["runs"]
        by_name = {r["info"]["run_name"]: r for r in found}
        assert set(by_name) == {"train_sae[arch=topk,layer=15]", "train_sae[arch=topk,layer=15,size=256]",
                                "train_sae[arch=topk,layer=15,size=512]"}
        parent_id = by_name["train_sae[arch=topk,layer=15]"]["info"]["run_id"]
        for n in (256, 512):
            child = by_name[f"train_sae[arch=topk,layer=15,size={n}]"]
            tags = {t["key"]: t["value"] for t in child["data"]["tags"]}
            assert tags["mlflow.parentRunId"] == parent_id and child["info"]["status"] == "FINISHED"
            history = get_json(f"{base}/api/2.0/mlflow/metrics/get-history?run_id={child['info']['run_id']}"
                               "&metric_key=train.fvu")["metrics"]
            curve = json.loads((proj / f"results/saes/{MODEL}/layer15/topk/n{n}/train_metrics.json").read_text())
            assert len(history) >= 2 and max(h["step"] for h in history) == curve["tokens"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def test_snakemakes_own_report_shows_the_main_outputs_with_their_captions(snakemake_project: Path,
                                                                           tmp_path: Path) -> None:
    """`snakemake --report` works on the built study: the outputs the stage table marks ``shown``
    appear with their captions from workflow/report/*.rst."""
    target = tmp_path / "snakemake-report.html"
    run_tool([tool("snakemake"), "--configfile", "params.yaml", "--report", str(target)], snakemake_project)
    html = target.read_text(encoding="utf-8", errors="replace")
    assert len(html) > 100_000
    for caption in ("Training curve of the SAE with", "Firing-density histogram", "Feature splitting across",
                    "Functional lobes of the", "Features vs MLP neurons", "Sparse probing (layer",
                    "Feature absorption of first letters"):
        assert caption in html, caption


def check_study_run(base: str, exp: dict, runs: list[dict], proj: Path) -> None:
    """The report's study-level run: the experiment opens on training runs; one study run per study
    execution with every parameter, the headline metrics of the report, its tags, the report as
    artifacts, and every stage run of the same params linked to it."""
    from saeatlas import config

    exp_tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
    assert exp_tags.get("mlflow.experimentKind") == "custom_model_development"
    study = [r for r in runs if any(t["key"] == "saeatlas.kind" and t["value"] == "study" for t in r["data"]["tags"])]
    assert len(study) == 1
    run_ = study[0]
    tags = {t["key"]: t["value"] for t in run_["data"]["tags"]}
    params = config.load(proj / "params.yaml")
    assert tags["params_hash"] == params.hash() and tags["host"] and tags["device"] == "cpu"
    logged = {p["key"]: p["value"] for p in run_["data"]["params"]}
    assert len(logged) == len(config.flatten(params.raw)) and logged["sae.k"] == str(params.sae.k)
    metrics = {m["key"]: m["value"] for m in run_["data"]["metrics"]}
    headline = json.loads((proj / "results/report.metrics.json").read_text())
    assert metrics == pytest.approx(headline) and "layer15.training.held_out_fvu_n_256" in metrics
    files = get_json(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run_['info']['run_id']}")["files"]
    assert {f["path"] for f in files} == {"index.html", "report.zip"}
    linked = [r for r in runs if r is not run_]
    assert linked and all({t["key"]: t["value"] for t in r["data"]["tags"]}.get("saeatlas.study_run")
                          == run_["info"]["run_id"] for r in linked)


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def jobs_of(names: set[str], layer: int = 15, arch: str = "topk", sizes: tuple[int, ...] = (256, 512)) -> set[str]:
    """DVC's job names of the given stages (``stage@<layer>-<arch>[-<size>]``), from the table."""
    values = {"layer": [layer], "arch": [arch], "size": list(sizes)}
    return {stage.job_name(dict(zip(stage.wildcards, combo)))
            for stage in STAGES if stage.name in names
            for combo in itertools.product(*(values[w] for w in stage.wildcards))}


def downstream(names: set[str]) -> set[str]:
    """The stages that read, directly or not, an output of the given ones (from the table)."""
    found = set(names)
    for stage in STAGES:  # the table is in dependency order
        if any(ref.stage in found for ref in stage.inputs):
            found.add(stage.name)
    return found


def test_dvc_continues_from_the_snakemake_study_and_reruns_only_affected_stages(smoke_study: Path,
                                                                                  tmp_path: Path) -> None:
    """`make study`, then `dvc status` / `dvc exp run -S`: DVC knows what Snakemake built (the
    Snakefile's success hook recorded it), so a changed key re-runs only what depends on it."""
    proj = clone_study(smoke_study, tmp_path / "study")
    status = run([tool("dvc"), "status"], proj)
    assert "up to date" in status.stdout, status.stdout
    assert ran_stages(run([tool("dvc"), "repro"], proj).stdout) == set()
    shown = json.loads(run([tool("dvc"), "metrics", "show", "--json"], proj).stdout)
    assert "train.tokens" in json.dumps(shown) and "ce_loss_recovered" in json.dumps(shown)
    plots = run([tool("dvc"), "plots", "show", "--json"], proj).stdout
    assert "training_log.csv" in plots and "density_histogram.csv" in plots

    # DVC runs the LM stages' commands too, to the same bytes: forced, one job at a time, they
    # rewrite the model, corpus and store, and the rest of the study stays up to date.
    forced = run([tool("dvc"), "repro", "--force", "--single-item", "model", "corpus", "activations"], proj)
    assert ran_stages(forced.stdout) == {"model", "corpus", "activations"}, forced.stdout
    ActivationStore.open(proj / STORE / "train", verify=True)
    assert "up to date" in run([tool("dvc"), "status"], proj).stdout

    # One published-protocol key of one analysis: that analysis, the seed spread (which re-runs the
    # analysis on its replicas; their trained SAEs are reused, not retrained) and the report.
    one = run([tool("dvc"), "exp", "run", "-S", "splitting.leask_cos=0.6"], proj)
    assert ran_stages(one.stdout) == jobs_of(downstream({"splitting", "seeds"})) == {
        "splitting@15-topk", "seeds@15-topk", "report"}, one.stdout
    seeds_log = (proj / "results/logs/seeds-layer15-archtopk.log").read_text()  # this run's (the log is rewritten)
    assert "trained replica reused" in seeds_log and "training the replica" not in seeds_log, seeds_log
    # How examples are shown changes the browser tables, not the codes, so no analysis that reads
    # the codes re-runs; an evaluation knob re-runs the evaluations, never training. (One
    # experiment sets both: a DVC run fewer; it cannot tell which key re-ran which stage, but shows
    # that neither reaches further.) crystals and seeds re-run too: DVC has no gather, so both depend
    # on the SAE layer directory, which evaluate writes into (pipeline.dvc_inputs).
    shown_only = run([tool("dvc"), "exp", "run", "-S", "features.top_n=3", "-S", "evaluate.ce_contexts=4"], proj)
    assert ran_stages(shown_only.stdout) == jobs_of({"features", "evaluate", "crystals", "seeds", "report"}), \
        shown_only.stdout
    assert "ce_contexts: 4" in (proj / "params.yaml").read_text()
    # A key no stage reads re-runs nothing (tracking is how runs are recorded, not what they compute).
    untouched = run([tool("dvc"), "exp", "run", "-S", "tracking.enabled=false"], proj)
    assert ran_stages(untouched.stdout) == set(), untouched.stdout
    # An SAE knob reaches training (and the stages that read the training params: the seed
    # replicas and the report), never the LM stages. Read from `dvc status`, not a re-run: a
    # re-run would rebuild everything after training (minutes), and what follows a changed
    # output is DVC's own content hashing, which the experiments above already exercise.
    params_file = proj / "params.yaml"
    params_file.write_text(re.sub(r"(?m)^  k: 16$", "  k: 8", params_file.read_text(), count=1))
    changed = set(json.loads(run([tool("dvc"), "status", "--json"], proj).stdout))
    assert changed == jobs_of({s.name for s in STAGES if {"sae", "sae.k"} & set(s.params)}) \
        == {"train_sae@15-topk-256", "train_sae@15-topk-512", "seeds@15-topk", "report"}, changed
    per_size = {f"{stage}@15-topk-{n}" for stage in ("train_sae", "evaluate", "features", "lobes") for n in (256, 512)}
    per_layer = {f"{a.name}@15-topk" for a in ANALYSES if a.wildcards == ("layer", "arch")}
    assert {f"{a}@15-topk" for a in ("splitting", "galaxy", "neurons", "probing", "absorption", "seeds")} <= per_layer
    assert jobs_of(downstream({"train_sae"})) == per_size | per_layer | {"report"}
    assert not {"model", "corpus", "activations"} & changed

    # The local default remote works offline.
    run([tool("dvc"), "push"], proj)
    assert any((proj / "dvc-storage").rglob("*"))
