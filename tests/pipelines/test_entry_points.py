"""MLproject and the Python command lines agree: an entry point run with MLproject's defaults resolves to the
same configuration as the Python defaults (the dataclass fields), so a default is changed in one place."""

import shlex
from pathlib import Path

import pytest
import yaml

from fairforget.pipelines import config as main_config
from fairforget.pipelines import train as train_step

MLPROJECT = yaml.safe_load((Path(__file__).resolve().parents[2] / "MLproject").read_text())


def command_with_defaults(entry_point: str) -> list[str]:
    """The entry point's command with every parameter at its MLproject default, rendered the way MLflow renders
    it (floats such as ``10`` arrive as ``10.0``), without the leading ``python -m module``."""
    spec = MLPROJECT["entry_points"][entry_point]
    values = {}
    for name, parameter in spec["parameters"].items():
        default = parameter.get("default", "")
        values[name] = str(float(default)) if parameter["type"] == "float" else str(default)
    rendered = spec["command"].format(**{name: shlex.quote(value) for name, value in values.items()})
    return shlex.split(rendered)[3:]


@pytest.mark.parametrize("entry_point, module", [("main", main_config), ("train", train_step)])
def test_mlproject_defaults_resolve_to_the_dataclass_defaults(entry_point, module):
    parser = module.build_parser()
    from_mlproject = module.config_from_args(parser.parse_args(command_with_defaults(entry_point)))
    from_python = module.config_from_args(parser.parse_args([]))
    assert from_mlproject.to_dict() == from_python.to_dict()
