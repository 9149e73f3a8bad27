"""One reader for every analysis's params section, so each analysis config is just a frozen
dataclass whose field names are the section's keys and whose defaults document the choices.

Why one reader: a misspelt threshold must fail loudly (unknown keys are an error naming them), a
value of the wrong kind must fail with the key's dotted name, and lists in YAML must become
tuples so that the config stays hashable and frozen. Range checks stay in each config's
``__post_init__``, next to the thresholds they guard.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


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
