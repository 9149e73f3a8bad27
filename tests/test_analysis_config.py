"""The one reader of analysis params sections: kinds enforced, lists to tuples, keys named."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

from saeatlas.analysis.config import config_from_section


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


def test_schema_defaults_are_the_configs_defaults() -> None:
    """params.schema.yaml fills missing keys with its defaults; each analysis's dataclass has its
    own. They must agree, or a section left out of params.yaml would not mean the documented
    defaults."""
    from saeatlas.analysis.geometry.crystals import CrystalsConfig
    from saeatlas.analysis.geometry.galaxy import GalaxyConfig
    from saeatlas.analysis.geometry.lobes import LobesConfig
    from saeatlas.analysis.geometry.neighbours import NeighboursConfig
    from saeatlas.analysis.scaling import ScalingConfig
    from saeatlas.analysis.splitting import SplittingConfig
    from saeatlas.config import load_schema

    schema = load_schema()["properties"]
    for section, cls in {"splitting": SplittingConfig, "scaling": ScalingConfig, "neighbours": NeighboursConfig,
                         "crystals": CrystalsConfig, "lobes": LobesConfig, "galaxy": GalaxyConfig}.items():
        props = schema[section]["properties"]
        assert set(props) == {f.name for f in fields(cls)}, section
        defaults = {key: spec["default"] for key, spec in props.items()}
        assert config_from_section(cls, defaults, section) == cls(), section
