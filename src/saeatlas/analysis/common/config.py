"""Every analysis's settings: one frozen dataclass, the only home of its defaults and bounds.

Why here and nowhere else: the JSON Schema section that validates ``params.yaml`` (and that
Snakemake checks) is *generated* from the dataclass (``schema_section``), and a config built in a
test runs the same schema checks (``AnalysisConfig.__post_init__``), so the file, the workflow
and the code cannot disagree about a default or a bound.

A field is declared with ``param(default, description, **json_schema_keywords)``, e.g.
``child_cos: float = param(0.5, "Minimum decoder cosine ...", exclusiveMinimum=0, maximum=1)``.
The JSON type comes from the default (bool, int, float, str, tuple); cross-field rules a schema
cannot say live in the config's ``check()``.

The reader (``config_from_section``) fails loudly on a misspelt key, names the key's dotted path
on a value of the wrong kind, and turns YAML lists into tuples so the config stays hashable.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, asdict, field, fields
from typing import Any, ClassVar, Mapping, TypeVar

T = TypeVar("T")

_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (tuple, "array"))


def param(default: Any, description: str, **schema: Any) -> Any:
    """A config field: its default, one line for the schema, and JSON Schema keywords
    (``minimum``, ``exclusiveMaximum``, ``enum``, ``pattern``, ``minItems``, ``items``, ...)."""
    return field(default=default, metadata={"description": description, "schema": schema})


def count(default: int, description: str) -> Any:
    """A positive integer setting (sizes, chunks, replicates, iterations): ``minimum=1``."""
    return param(default, description, minimum=1)


def seed(default: int, description: str) -> Any:
    """A random seed: a non-negative integer."""
    return param(default, description, minimum=0)


def _json_type(value: Any) -> str:
    for kind, name in _JSON_TYPES:
        if isinstance(value, kind):
            return name
    raise TypeError(f"no JSON type for a default of type {type(value).__name__}")


def _field_schema(f: Field) -> dict[str, Any]:
    default = f.default
    extra = dict(f.metadata.get("schema", {}))
    out: dict[str, Any] = {"type": _json_type(default)}
    if out["type"] == "array":
        items = dict(extra.pop("items", {}))
        if default and "type" not in items:
            items = {"type": _json_type(default[0]), **items}
        out["items"] = items
        out["default"] = list(default)
    else:
        out["default"] = default
    out.update(extra)
    out["description"] = f.metadata.get("description", "")
    return out


class AnalysisConfig:
    """Base of every analysis config (a frozen dataclass subclasses it).

    ``section`` (a class keyword) names the params.yaml section; ``summary`` is the schema's
    one-line description of it.
    Construction validates every field against the generated schema, then ``check()``.
    """

    section: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def __init_subclass__(cls, section: str = "", summary: str = "", **kwargs: Any) -> None:
        """``class SplittingConfig(AnalysisConfig, section="splitting", summary="...")``."""
        super().__init_subclass__(**kwargs)
        cls.section = section or cls.section
        cls.summary = summary or cls.summary

    def __post_init__(self) -> None:
        from saeatlas.config import schema_errors  # the same key-naming messages as params.yaml's

        errors = schema_errors(_as_json(self), self.schema_section())
        if errors:
            raise ValueError("; ".join(f"{self.section}.{e}" for e in errors))
        self.check()

    def check(self) -> None:
        """Cross-field rules (raise ValueError naming the keys); none by default."""

    @classmethod
    def from_params(cls: type[T], section: Mapping[str, Any]) -> T:
        """From params.yaml's section (missing keys take the defaults)."""
        return config_from_section(cls, section, cls.section)  # type: ignore[attr-defined]

    @classmethod
    def schema_section(cls) -> dict[str, Any]:
        """The JSON Schema of this section, generated from the fields."""
        return {
            "type": "object",
            "description": cls.summary,
            "additionalProperties": False,
            "default": {},
            "properties": {f.name: _field_schema(f) for f in fields(cls)},  # type: ignore[arg-type]
        }


def _as_json(cfg: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def _coerce(section_name: str, key: str, value: Any, default: Any) -> Any:
    where = f"{section_name}.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if default:  # elements take the kind of the default's first element
            return tuple(_coerce(section_name, f"{key}[{i}]", v, default[0]) for i, v in enumerate(value))
        return tuple(value)
    return value


def config_from_section(cls: type[T], section: Mapping[str, Any], section_name: str) -> T:
    """``cls(**section)`` with every key known, every value of its default's kind (ints stay
    ints, lists become tuples), and errors that name ``section_name.key``."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ValueError(f"{section_name}: unknown key(s) {unknown}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, value in section.items():
        f = known[key]
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)  # type: ignore[misc]
        values[key] = _coerce(section_name, key, value, default)
    return cls(**values)
