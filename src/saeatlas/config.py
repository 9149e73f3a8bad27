"""Load and validate ``params.yaml`` once, into frozen, typed objects.

Why one module: every stage, Snakemake and DVC read the same file; if each validated it
its own way they would disagree. The JSON Schema in ``workflow/schemas/params.schema.yaml``
is the single description of every key (type, allowed values, default, meaning), generated
from ``params.core.schema.yaml`` and the analyses' config dataclasses. This module applies it,
adds the few checks a schema cannot express (cross-key rules), and reports every problem with
the key path that holds it, e.g. ``sae.sizes[2]: must be >= 64, got -5``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from saeatlas.errors import ParamsError

SCHEMA_PATH = Path(__file__).resolve().parent / "params.schema.yaml"

BUILTIN_SOURCES = {
    # name -> default domain label
    "wiki": "wiki",
    "shakespeare": "literature",
    "bbc_news": "news",
    "chatterbot": "dialogue",
    "python_stdlib": "code",
    "pydoc_topics": "docs",
}
FILE_SOURCE_KINDS = ("text", "jsonl", "parquet")


# --------------------------------------------------------------------------------------
# Typed, frozen views of each section
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyParams:
    """Names the parameter set (and its MLflow experiment, ``saeatlas-<name>``)."""
    name: str


@dataclass(frozen=True)
class ModelParams:
    name: str
    source: str
    layers: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class SourceParams:
    kind: str
    weight: float
    name: str
    domain: str
    path: str | None = None
    text_field: str = "text"
    title_field: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    split: str = "train"
    key: str = ""  # the key path in params.yaml, for error messages ("corpus.sources[3]")


@dataclass(frozen=True)
class CorpusParams:
    sources: tuple[SourceParams, ...]
    train_tokens: int
    eval_tokens: int
    context_length: int
    prepend_bos: bool
    separator_token: str | None
    min_chars: int
    seed: int

    @property
    def positions_per_context(self) -> int:
        """Token positions per context that carry text (and are stored): BOS excluded."""
        return self.context_length - (1 if self.prepend_bos else 0)


@dataclass(frozen=True)
class ActivationParams:
    batch_contexts: int
    shard_contexts: int
    dtype: str
    outlier_factor: float
    neurons: bool


@dataclass(frozen=True)
class SAEParams:
    architectures: tuple[str, ...]
    sizes: tuple[int, ...]
    k: int
    lr: float
    batch_size: int
    seed: int
    lr_reference_size: int
    epochs: int
    warmup_steps: int
    decay_fraction: float
    auxk_k: int
    auxk_alpha: float
    dead_after_tokens: int
    l1_coefficient: float
    matryoshka_fractions: tuple[float, ...]
    b_dec_init: str
    checkpoint_every: int
    exclude_outliers: bool
    # Not a key of params.yaml: the architecture one job works on (``Params.for_architecture``,
    # from its --arch wildcard); the first of ``architectures`` until a job picks one.
    architecture: str = ""

    def __post_init__(self) -> None:
        if not self.architecture:
            object.__setattr__(self, "architecture", self.architectures[0])


@dataclass(frozen=True)
class EvaluateParams:
    ce_contexts: int
    batch_contexts: int
    batch_size: int
    dense_threshold: float


@dataclass(frozen=True)
class FeaturesParams:
    batch_size: int
    max_active: int
    top_n: int
    quantile_bins: int
    per_bin: int
    window_before: int
    window_after: int
    logit_lens_k: int
    seed: int


@dataclass(frozen=True)
class TrackingParams:
    """Whether stages log to MLflow (outputs are the same either way)."""
    enabled: bool


@dataclass(frozen=True)
class Params:
    """The whole validated parameter set: typed views of the core sections, and ``raw`` (defaults
    filled) for the analyses' sections, which their own configs read (``section``)."""

    study: StudyParams
    model: ModelParams
    corpus: CorpusParams
    activations: ActivationParams
    sae: SAEParams
    evaluate: EvaluateParams
    features: FeaturesParams
    tracking: TrackingParams
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)
    path: str = ""

    def section(self, key: str) -> Any:
        """The raw (validated, defaults filled) value at a dotted key, e.g. ``model.layers``."""
        node: Any = self.raw
        for part in key.split("."):
            node = node[part]
        return node

    def for_architecture(self, architecture: str) -> "Params":
        """This parameter set as one job of the ``arch`` wildcard sees it: ``sae.architecture`` is
        ``architecture`` (which must be listed in ``sae.architectures``). Nothing else changes, the
        hash included: the architecture is a wildcard, like the layer, not a parameter."""
        if architecture not in self.sae.architectures:
            raise ParamsError(f"--arch: {architecture!r} is not listed in sae.architectures "
                              f"{list(self.sae.architectures)}")
        return dataclasses.replace(self, sae=dataclasses.replace(self.sae, architecture=architecture))

    def hash(self, keys: Iterable[str] | None = None) -> str:
        """Stable short hash of the whole parameter set, or of the given dotted keys."""
        payload = self.raw if keys is None else {k: self.section(k) for k in sorted(keys)}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------
# Schema validation with messages that name the key
# --------------------------------------------------------------------------------------


def load_schema() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_core_schema() -> dict[str, Any]:
    """The hand-written core sections (model, corpus, ...) without the analyses' generated ones."""
    with open(SCHEMA_PATH.with_name("params.core.schema.yaml"), encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def schema_defaults(section: str) -> dict[str, Any]:
    """The documented default of every key of a params.yaml section (from the schema), so code
    that needs a default (e.g. ``sae.train.TrainConfig``) takes it from the one place it lives."""
    props = load_schema()["properties"][section]["properties"]
    return {key: copy.deepcopy(spec["default"]) for key, spec in props.items() if "default" in spec}


def key_path(parts: Iterable[Any]) -> str:
    """``['sae', 'sizes', 2]`` -> ``sae.sizes[2]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"


# How each JSON Schema keyword's failure reads, after "key.path: ".
_MESSAGES: dict[str, Any] = {
    "enum": lambda val, inst: f"must be one of {', '.join(map(repr, val))}, got {inst!r}",
    "type": lambda val, inst: (f"must be of type {' or '.join(val if isinstance(val, list) else [val])}, "
                               f"got {type(inst).__name__} {inst!r}"),
    "minimum": lambda val, inst: f"must be >= {val}, got {inst!r}",
    "exclusiveMinimum": lambda val, inst: f"must be > {val}, got {inst!r}",
    "maximum": lambda val, inst: f"must be <= {val}, got {inst!r}",
    "exclusiveMaximum": lambda val, inst: f"must be < {val}, got {inst!r}",
    "multipleOf": lambda val, inst: f"must be a multiple of {val}, got {inst!r}",
    "pattern": lambda val, inst: f"must match {val!r}, got {inst!r}",
    "minItems": lambda val, inst: f"must have at least {val} item(s), got {len(inst)}",
    "uniqueItems": lambda val, inst: f"items must be unique, got {inst!r}",
    "minLength": lambda val, inst: f"must not be empty, got {inst!r}",
}


def _describe(error: Any) -> list[str]:
    """Key-first explanations (one per offending key) of a jsonschema ValidationError."""
    v = error.validator
    val = error.validator_value
    inst = error.instance
    where = key_path(error.absolute_path)
    schema_desc = error.schema.get("description") if isinstance(error.schema, dict) else None
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(inst) - set(allowed)) if isinstance(inst, dict) else []
        prefix = f"{where}." if error.absolute_path else ""
        return [f"{prefix}{k}: unknown key (allowed: {', '.join(allowed)})" for k in extra]
    if v == "required":
        missing = [k for k in val if k not in (inst or {})]
        prefix = f"{where}." if error.absolute_path else ""
        return [f"{prefix}{k}: required key is missing" for k in missing]
    template = _MESSAGES.get(v)
    msg = template(val, inst) if template else error.message
    if schema_desc:
        msg += f" ({schema_desc.strip().rstrip('.')})"
    return [f"{where}: {msg}"]


def _fill_defaults(node: Any, schema: Mapping[str, Any]) -> Any:
    """Fill schema defaults into ``node`` (a copy), recursing into objects and arrays."""
    if schema.get("type") == "object" and isinstance(node, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in node and "default" in sub:
                node[key] = copy.deepcopy(sub["default"])
            if key in node:
                node[key] = _fill_defaults(node[key], sub)
    elif schema.get("type") == "array" and isinstance(node, list) and "items" in schema:
        node = [_fill_defaults(item, schema["items"]) for item in node]
    return node


def non_finite_errors(node: Any, parts: tuple[Any, ...] = ()) -> list[str]:
    """``key: must be a finite number`` for every inf or NaN in ``node``. JSON Schema's ``number``
    admits YAML's ``.inf`` and ``.nan``, and neither makes sense for any parameter: ``sae.lr: .inf``
    would train to all-NaN weights and exit 0."""
    if isinstance(node, float) and not math.isfinite(node):
        return [f"{key_path(parts)}: must be a finite number, got {node!r}"]
    if isinstance(node, dict):
        return [e for key, value in node.items() for e in non_finite_errors(value, (*parts, key))]
    if isinstance(node, list):
        return [e for i, value in enumerate(node) for e in non_finite_errors(value, (*parts, i))]
    return []


def schema_errors(raw: Any, schema: Mapping[str, Any] | None = None) -> list[str]:
    """Every schema violation in ``raw`` as ``key.path: explanation`` lines (non-finite numbers
    included)."""
    from jsonschema import Draft202012Validator

    schema = schema or load_schema()
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(raw), key=lambda e: key_path(e.absolute_path))
    return non_finite_errors(raw) + [line for e in errors for line in _describe(e)]


def _semantic_errors(raw: Mapping[str, Any]) -> list[str]:
    """Cross-key rules the schema cannot express."""
    errs: list[str] = []
    for i, src in enumerate(raw["corpus"]["sources"]):
        key = f"corpus.sources[{i}]"
        kind = src["kind"]
        if kind == "builtin":
            name = src.get("name")
            if name not in BUILTIN_SOURCES:
                errs.append(
                    f"{key}.name: must be one of {', '.join(map(repr, BUILTIN_SOURCES))} "
                    f"for kind 'builtin', got {name!r}"
                )
        elif kind in FILE_SOURCE_KINDS:
            if not src.get("path"):
                errs.append(f"{key}.path: required for kind {kind!r}")
        elif kind == "huggingface" and not src.get("dataset"):
            errs.append(f"{key}.dataset: required for kind 'huggingface'")
        if kind != "builtin" and not src.get("domain"):
            errs.append(f"{key}.domain: required for kind {kind!r} (e.g. wiki, news, code)")
    sizes = raw["sae"]["sizes"]
    k = raw["sae"]["k"]
    if sizes and k >= min(sizes):
        errs.append(f"sae.k: must be smaller than the smallest dictionary size {min(sizes)}, got {k}")
    architectures = raw["sae"]["architectures"]
    if "matryoshka" in architectures:
        for n in sizes:
            try:
                matryoshka_prefixes(raw["sae"]["matryoshka_fractions"], n)
            except ValueError as exc:
                errs.append(f"sae.matryoshka_fractions: {exc}")
                break
    if sizes and {"topk", "batchtopk", "matryoshka"} & set(architectures) and raw["sae"]["auxk_k"] > min(sizes):
        errs.append(f"sae.auxk_k: must be at most the smallest dictionary size {min(sizes)} (AuxK picks "
                    f"that many dead latents), got {raw['sae']['auxk_k']}")
    if raw["sae"]["batch_size"] > raw["corpus"]["train_tokens"]:
        errs.append(f"sae.batch_size: one batch would need more rows than corpus.train_tokens "
                    f"({raw['corpus']['train_tokens']}), got {raw['sae']['batch_size']}")
    n_eval = raw["corpus"]["eval_tokens"] // raw["corpus"]["context_length"]
    if raw["evaluate"]["ce_contexts"] > n_eval:
        errs.append(f"evaluate.ce_contexts: the evaluation split has only {n_eval} contexts "
                    f"(corpus.eval_tokens / corpus.context_length), got {raw['evaluate']['ce_contexts']}")
    return errs


def valid_prefix_ends(ends: list[int], n_latents: int) -> bool:
    """Matryoshka's inner prefix ends: strictly increasing, each in ``1..n_latents - 1`` (the
    whole dictionary is always the last prefix). One rule for the params, the model and the import."""
    return all(0 < m < n_latents for m in ends) and ends == sorted(set(ends))


def matryoshka_prefixes(fractions: Any, n_latents: int) -> list[int]:
    """The inner prefix ends of a Matryoshka SAE of ``n_latents``: each fraction of ``n``, rounded
    to whole latents. Raises ValueError (naming ``n``) when rounding merges two prefixes or leaves
    one empty or whole, since a prefix the loss counts twice is not what the user asked for."""
    ends = [round(float(f) * n_latents) for f in fractions]
    if not valid_prefix_ends(ends, n_latents):
        raise ValueError(f"at n={n_latents} the fractions {list(fractions)} give prefix ends {ends}; "
                         f"they must be strictly increasing, each in 1..{n_latents - 1}")
    return ends


def validate(raw: Any, origin: str = "params") -> dict[str, Any]:
    """Validate a raw parameter mapping; return a copy with defaults filled.

    Raises ParamsError listing every problem, one ``key: reason`` per line.
    """
    if not isinstance(raw, dict):
        raise ParamsError(f"{origin}: must be a YAML mapping of sections, got {type(raw).__name__}")
    schema = load_schema()
    errs = schema_errors(raw, schema)
    sae = raw.get("sae")
    if isinstance(sae, dict) and "architecture" in sae:  # the key before architectures were a wildcard
        errs = [e for e in errs if not e.startswith("sae.architecture:")]
        errs.append(f"sae.architecture: replaced by sae.architectures, a list (e.g. [{sae['architecture']}])")
    if errs:
        raise ParamsError(_format(origin, errs))
    filled = _fill_defaults(copy.deepcopy(raw), schema)
    errs = _semantic_errors(filled)
    if errs:
        raise ParamsError(_format(origin, errs))
    return filled


def _format(origin: str, errs: list[str]) -> str:
    """All problems on one line (the CLI prints one line), messages for one key merged."""
    merged: dict[str, list[str]] = {}
    for err in errs:
        key, _, msg = err.partition(": ")
        if msg not in merged.setdefault(key, []):
            merged[key].append(msg)
    parts = [f"{key}: {' and '.join(msgs)}" for key, msgs in merged.items()]
    if len(parts) == 1:
        return f"{origin}: {parts[0]}"
    return f"{origin}: {len(parts)} problems: " + "; ".join(parts)


def from_mapping(raw: Any, origin: str = "params") -> Params:
    """Validated, typed Params from an already-parsed mapping."""
    data = validate(raw, origin)
    corpus = dict(data["corpus"])
    sources = []
    for i, src in enumerate(corpus.pop("sources")):
        src = dict(src)
        name = src.get("name") or (src.get("path") or src.get("dataset") or src["kind"])
        domain = src.get("domain") or BUILTIN_SOURCES.get(name, "")
        sources.append(
            SourceParams(
                **{**src, "name": name, "domain": domain, "weight": float(src["weight"])},
                key=f"corpus.sources[{i}]",
            )
        )
    model = dict(data["model"])
    model["layers"] = tuple(model["layers"])
    sae = dict(data["sae"])
    sae["sizes"] = tuple(sae["sizes"])
    sae["architectures"] = tuple(sae["architectures"])
    sae["matryoshka_fractions"] = tuple(float(f) for f in sae["matryoshka_fractions"])
    for key in ("lr", "decay_fraction", "auxk_alpha", "l1_coefficient"):
        sae[key] = float(sae[key])
    evaluate = dict(data["evaluate"])
    evaluate["dense_threshold"] = float(evaluate["dense_threshold"])
    return Params(
        study=StudyParams(**data["study"]),
        model=ModelParams(**model),
        corpus=CorpusParams(sources=tuple(sources), **corpus),
        activations=ActivationParams(**data["activations"]),
        sae=SAEParams(**sae),
        evaluate=EvaluateParams(**evaluate),
        features=FeaturesParams(**data["features"]),
        tracking=TrackingParams(**data["tracking"]),
        raw=data,
        path=origin,
    )


def load(path: str | Path) -> Params:
    """Read, validate and type a parameter file. Fails before any work, naming the key."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: parameter file not found")
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from exc
    return from_mapping(raw, origin=str(path))


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}, 'c': [1, 2]}`` -> ``{'a.b': 1, 'c': '[1, 2]'}`` (for MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    out.update(flatten(item, f"{name}[{i}]"))
                else:
                    out[f"{name}[{i}]"] = item
        else:
            out[name] = value
    return out

