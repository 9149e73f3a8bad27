"""The one config mechanism of the analyses: kinds enforced, lists to tuples, keys named; the
dataclass is the only home of defaults and bounds, and the params schema is generated from it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from saeatlas.analysis.common.config import AnalysisConfig, config_from_section, param


@dataclass(frozen=True)
class Example:
    k_values: tuple[int, ...] = (2, 4)
    affinity: str = "phi"
    joint: bool = True
    cut: float = 0.5
    seed: int = 0


def test_values_take_their_defaults_kind() -> None:
    cfg = config_from_section(Example, {"k_values": [3, 5.0], "affinity": "dice", "joint": False, "cut": 1,
                                        "seed": 7.0}, "ex")
    assert cfg == Example((3, 5), "dice", False, 1.0, 7)
    assert isinstance(cfg.k_values[1], int) and isinstance(cfg.cut, float) and isinstance(cfg.seed, int)
    assert config_from_section(Example, {}, "ex") == Example()


@pytest.mark.parametrize("section, message", [
    ({"k_value": [2]}, r"ex: unknown key\(s\) \['k_value'\]"),
    ({"k_values": [2, 2.5]}, r"ex\.k_values\[1\]: expected an integer"),
    ({"k_values": 3}, r"ex\.k_values: expected a list"),
    ({"affinity": 1}, r"ex\.affinity: expected a string"),
    ({"joint": "yes"}, r"ex\.joint: expected true or false"),
    ({"cut": True}, r"ex\.cut: expected a number"),
    ({"seed": False}, r"ex\.seed: expected an integer"),
])
def test_errors_name_the_key(section: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_section(Example, section, "ex")


@dataclass(frozen=True)
class Bounded(AnalysisConfig, section="bounded", summary="A test section."):
    cut: float = param(0.5, "A share.", exclusiveMinimum=0, maximum=1)
    k_values: tuple[int, ...] = param((2, 4), "Cluster counts.", minItems=1, items={"minimum": 2})
    affinity: str = param("phi", "Affinity.", enum=["phi", "dice"])
    low: int = param(1, "Lower.", minimum=0)
    high: int = param(3, "Upper.", minimum=0)

    def check(self) -> None:
        if self.low > self.high:
            raise ValueError(f"bounded.low must be <= bounded.high, got {self.low} > {self.high}")


def test_schema_is_generated_from_the_fields() -> None:
    schema = Bounded.schema_section()
    assert schema["description"] == "A test section." and schema["additionalProperties"] is False
    cut = schema["properties"]["cut"]
    assert cut == {"type": "number", "default": 0.5, "exclusiveMinimum": 0, "maximum": 1, "description": "A share."}
    assert schema["properties"]["k_values"]["items"] == {"type": "integer", "minimum": 2}
    assert schema["properties"]["k_values"]["default"] == [2, 4]


@pytest.mark.parametrize("values, message", [
    ({"cut": 0.0}, r"bounded\.cut: must be > 0"),
    ({"cut": 1.5}, r"bounded\.cut: must be <= 1"),
    ({"k_values": (2, 1)}, r"bounded\.k_values\[1\]: must be >= 2"),
    ({"k_values": ()}, r"bounded\.k_values: must have at least 1"),
    ({"affinity": "cos"}, r"bounded\.affinity: must be one of 'phi', 'dice'"),
    ({"low": 5}, r"bounded\.low must be <= bounded\.high"),
])
def test_construction_enforces_the_schema_bounds_and_the_cross_checks(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Bounded(**values)
    with pytest.raises(ValueError, match=message):
        Bounded.from_params({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()})


def test_every_analysis_config_is_the_schema_section() -> None:
    """params.schema.yaml holds each analysis's generated section: its defaults are the
    dataclass's, and a section left out of params.yaml means exactly the dataclass's defaults."""
    from saeatlas.config import load_schema, validate
    from saeatlas.generate import analysis_config
    from saeatlas.pipeline import ANALYSES

    schema = load_schema()["properties"]
    for stage in ANALYSES:
        cls = analysis_config(stage.name)
        assert schema[stage.name] == cls.schema_section(), stage.name
        defaults = {key: spec["default"] for key, spec in schema[stage.name]["properties"].items()}
        assert config_from_section(cls, defaults, stage.name) == cls() == cls.from_params({}), stage.name
    import yaml

    from conftest import REPO

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.pop("lobes")
    assert validate(raw)["lobes"] == defaults_of("lobes")


def defaults_of(section: str) -> dict:
    from saeatlas.generate import analysis_config

    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(analysis_config(section)()).items()}
