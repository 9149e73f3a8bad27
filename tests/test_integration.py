"""The smoke study end to end, with the real model, through Snakemake, DVC and an MLflow server."""

from __future__ import annotations

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
from saeatlas.sources import SkipCounter, iter_documents

from conftest import copy_project, tool

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
STORE = Path(f"results/activations/{MODEL}/layer15")


def run(cmd: list[str], cwd: Path, timeout: float = 1200) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def snakemake_project(tmp_path_factory) -> Path:
    """A fresh project on which `snakemake --configfile params/smoke.yaml` has run the whole graph."""
    proj = copy_project(tmp_path_factory.mktemp("snake"), params=None)
    run([tool("snakemake"), "--cores", "2", "--configfile", "params/smoke.yaml"], proj)
    return proj


def test_snakemake_smoke_study_writes_checked_content(snakemake_project: Path) -> None:
    proj = snakemake_project
    params = config.load(proj / "params/smoke.yaml")
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
    first = torch.from_numpy(np.asarray(train_ctx.contexts[:2], dtype=np.int64))
    expected = lm.residual(first, 15)[:, 1:, :].reshape(-1, 576).numpy()
    np.testing.assert_allclose(store.shard(0)[: 2 * positions], expected, rtol=1e-4, atol=1e-3)

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
    metrics = json.loads((proj / f"results/activations/{MODEL}/layer15.metrics.json").read_text())
    assert metrics["train.tokens"] == store.n_tokens and metrics["train.scale"] == pytest.approx(store.scale)
    corpus_metrics = json.loads((corpus_dir / "metrics.json").read_text())
    assert corpus_metrics["train.tokens"] == store.n_tokens
    assert 0.25 < corpus_metrics["train.domain_fraction.news"] < 0.26

    # One log per job; a second run has nothing to do.
    for log in ("model.log", "corpus.log", "activations-layer15.log"):
        assert "INFO" in (proj / "results/logs" / log).read_text()
    again = run([tool("snakemake"), "--cores", "2", "--configfile", "params/smoke.yaml"], proj)
    assert "Nothing to be done" in again.stdout + again.stderr


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
        assert run_["info"]["run_name"] == "activations[layer=15]" and run_["info"]["status"] == "FINISHED"
        metrics = {m["key"]: m["value"] for m in run_["data"]["metrics"]}
        store = ActivationStore.open(proj / STORE / "train")
        assert metrics["train.tokens"] == store.n_tokens
        assert metrics["tokens_per_second"] > 0
        params = {p["key"]: p["value"] for p in run_["data"]["params"]}
        assert params["corpus.context_length"] == "64" and params["wildcard.layer"] == "15"
        tags = {t["key"]: t["value"] for t in run_["data"]["tags"]}
        assert len(tags["git_commit"]) >= 7 and tags["layer"] == "15"
        stages = get_json(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
        stage_tags = {next(t["value"] for t in r["data"]["tags"] if t["key"] == "stage") for r in stages}
        assert stage_tags == {"model", "corpus", "activations"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_dvc_repro_and_exp_run_rerun_only_affected_stages(tmp_path: Path) -> None:
    proj = copy_project(tmp_path)  # params/smoke.yaml becomes params.yaml
    run(["git", "init", "-q"], proj)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], proj)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], proj)

    first = run([tool("dvc"), "repro"], proj)
    assert ran_stages(first.stdout) == {"model", "corpus", "activations@15"}
    ActivationStore.open(proj / STORE / "train", verify=True)
    shown = json.loads(run([tool("dvc"), "metrics", "show", "--json"], proj).stdout)
    assert "train.tokens" in json.dumps(shown)

    again = run([tool("dvc"), "repro"], proj)
    assert ran_stages(again.stdout) == set()

    # A knob of the activation stage re-runs it alone; the model and corpus are reused.
    changed = run([tool("dvc"), "exp", "run", "-S", "activations.batch_contexts=8"], proj)
    assert ran_stages(changed.stdout) == {"activations@15"}, changed.stdout
    assert "batch_contexts: 8" in (proj / "params.yaml").read_text()
    # A key no stage of this graph reads re-runs nothing.
    untouched = run([tool("dvc"), "exp", "run", "-S", "sae.k=8"], proj)
    assert ran_stages(untouched.stdout) == set(), untouched.stdout

    # The local default remote works offline.
    run([tool("dvc"), "push"], proj)
    assert any((proj / "dvc-storage").rglob("*"))
