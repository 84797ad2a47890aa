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


@pytest.mark.parametrize("argv, message", [
    (["--generator-privacy", "dp", "--dp-epsilon", "0"], "dp_epsilon must be a positive number"),
    (["--generator-privacy", "dp", "--dp-delta", "1.5"], "dp_delta must lie in (0, 1)"),
    (["--generator-privacy", "dp", "--architecture", "pixel_unet"], "privacy=dp needs architecture=latent_mlp"),
])
def test_bad_generator_privacy_settings_fail_in_one_line_before_any_work(argv, message, tmp_path, capsys,
                                                                        tracking_uri):
    from fairforget.pipelines import main as main_step
    from fairforget.pipelines import train_generator as generator_step

    capsys.readouterr()  # the tracking fixture's own log lines
    assert generator_step.main([*argv, "--data-dir", str(tmp_path / "absent")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    main_argv = [a for a in argv if a not in ("--architecture", "pixel_unet")]
    if main_argv != argv:
        return  # the main entry point picks the architecture itself
    assert main_step.main([*main_argv, "--data-dir", str(tmp_path / "absent"),
                           "--outputs-dir", str(tmp_path / "outputs")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "absent").exists()
