"""MLproject and the Python command lines agree, for every entry point: every option of the parser the step really
uses is an MLproject parameter passed to it, and an entry point run with MLproject's defaults resolves to the same
arguments (and for main and train, the same configuration) as the Python defaults (the dataclass fields), so a
default is changed in one place."""

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml

from fairforget.pipelines import config as main_config
from fairforget.pipelines import train as train_step

MLPROJECT = yaml.safe_load((Path(__file__).resolve().parents[2] / "MLproject").read_text())
ENTRY_POINTS = sorted(MLPROJECT["entry_points"])
# parameters without a default, given the same value on both sides
REQUIRED = {"ids": "ids.txt", "version": "1"}


def render(entry_point: str, values: dict[str, str]) -> list[str]:
    """The entry point's command with ``values``, as MLflow renders it, without the leading ``python -m module``."""
    rendered = MLPROJECT["entry_points"][entry_point]["command"].format(
        **{name: shlex.quote(value) for name, value in values.items()})
    return shlex.split(rendered)[3:]


def command_with_defaults(entry_point: str) -> list[str]:
    """Every parameter at its MLproject default, rendered the way MLflow renders it (floats such as ``10`` arrive
    as ``10.0``)."""
    values = {}
    for name, parameter in MLPROJECT["entry_points"][entry_point]["parameters"].items():
        default = parameter.get("default", REQUIRED.get(name, ""))
        values[name] = str(float(default)) if parameter["type"] == "float" else str(default)
    return render(entry_point, values)


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


def real_parser(entry_point: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser the entry point's module builds in its ``main`` (captured at ``parse_args``), or the sub-command's."""
    words = shlex.split(MLPROJECT["entry_points"][entry_point]["command"])
    module, subcommand = words[2], (words[3] if not words[3].startswith("-") else None)

    def capture(self, args=None, namespace=None):
        raise _Captured(self)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        with pytest.raises(_Captured) as captured:
            importlib.import_module(module).main([])
    parser = captured.value.parser
    if subcommand:
        (choices,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = choices.choices[subcommand]
    return parser


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_every_python_option_is_an_mlproject_parameter_and_back(entry_point, monkeypatch):
    parser = real_parser(entry_point, monkeypatch)
    spec = MLPROJECT["entry_points"][entry_point]
    passed = dict(re.findall(r"(--[a-z0-9-]+)[ =]\{([a-z0-9_]+)\}", spec["command"]))
    options = {option for action in parser._actions if action.dest != "help" for option in action.option_strings}
    assert sorted(options - set(passed)) == [], "Python options missing from MLproject"
    assert sorted(set(passed) - options) == [], "MLproject passes options the Python parser does not know"
    assert sorted(set(spec["parameters"]) - set(passed.values())) == [], "MLproject parameters never passed"


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_mlproject_defaults_are_the_python_defaults(entry_point, monkeypatch):
    parser = real_parser(entry_point, monkeypatch)
    required = [word for name, value in REQUIRED.items() if name in MLPROJECT["entry_points"][entry_point]["parameters"]
                for word in (f"--{name.replace('_', '-')}", value)]
    command = command_with_defaults(entry_point)
    if command and not command[0].startswith("-"):
        command = command[1:]  # the sub-command (forget, promote, prepare, validate) selected the parser
    from_mlproject = vars(parser.parse_args(command))
    from_python = vars(parser.parse_args(required))
    differing = {k: (from_mlproject[k], from_python[k]) for k in from_python
                 if from_mlproject[k] != from_python[k] and not (from_mlproject[k] in ("", None)
                                                                 and from_python[k] in ("", None))}
    assert differing == {}, "MLproject default differs from the Python default (mlproject, python)"


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
    (["--autoencoder-perceptual-weight", "-1"], "autoencoder_perceptual_weight must be >= 0"),
    (["--public-pretrain-steps", "-1"], "public_pretrain_steps must be a non-negative integer"),
    (["--autoencoder-epochs", "0"], "generator autoencoder_epochs must be a positive integer"),
    (["--denoiser-dropout", "1.5"], "denoiser_dropout must lie in [0, 1)"),
])
def test_bad_generator_privacy_settings_fail_in_one_line_before_any_work(argv, message, tmp_path, capsys,
                                                                        tracking_uri):
    from fairforget.pipelines import main as main_step
    from fairforget.pipelines import train_generator as generator_step

    capsys.readouterr()  # the tracking fixture's own log lines
    assert generator_step.main([*argv, "--data-dir", str(tmp_path / "absent")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    main_argv = [{"--autoencoder-perceptual-weight": "--generator-autoencoder-perceptual-weight",
                  "--public-pretrain-steps": "--generator-public-pretrain-steps",
                  "--autoencoder-epochs": "--generator-autoencoder-epochs",
                  "--denoiser-dropout": "--generator-denoiser-dropout"}.get(a, a)
                 for a in argv if a not in ("--architecture", "pixel_unet")]
    if "pixel_unet" in argv:
        return  # the main entry point picks the architecture itself
    assert main_step.main([*main_argv, "--data-dir", str(tmp_path / "absent"),
                           "--outputs-dir", str(tmp_path / "outputs")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "absent").exists()


BAD_INPUTS = [
    ("main", ["--iterations", "inf"], "argument --iterations: expected a whole number"),
    ("main", ["--attacks", "mloss,bogus"], "unknown attacks ['bogus']"),
    ("main", ["--classifier", "nope"], "unknown classifier 'nope'"),
    ("main", ["--forget-rate", "1.5"], "forget_rate must lie in (0, 1]"),
    ("main", ["--shards", "5000"], "exceeds the 4040 training records"),
    ("main", ["--max-auc-excess", "-1"], "max_auc_excess must lie in [0, 1]"),
    ("train", ["--num-slices", "0"], "num_slices (R) must be >= 1"),
    ("audit", ["--attacks", "bogus"], "unknown attacks ['bogus']"),
    ("augment", ["--rho", "-1"], "rho must be > 0"),
    ("train_generator", ["--train-steps", "0"], "train_steps must be a positive integer"),
    ("train_generator", ["--autoencoder-channels", "64,x"], "channels must be positive integers separated by commas"),
    ("main", ["--generator-autoencoder-channels", "0,128"], "channels must be positive integers separated by commas"),
    ("main", ["--guidance-interval", "4.5,0"], "expected an interval lo,hi of noise levels with 0 <= lo < hi"),
    ("augment", ["--guidance-interval", "7"], "expected an interval lo,hi of noise levels"),
    ("train_generator", ["--precision", "fp16"], "argument --precision: invalid choice: 'fp16'"),
    ("forget", ["forget", "--ids", "absent.txt"], "does not exist"),
    ("promote", ["promote", "--version", "1", "--model-name", "never-registered"], "never-registered"),
    ("prepare", ["prepare", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    ("prepare", ["prepare", "--image-size", "200"], "image_size must be an integer from 4 to 128"),
    ("main", ["--image-size", "3"], "image_size must be an integer from 4 to 128"),
    ("validate", ["validate", "--rho", "0"], "rho must be positive"),
]


# values the argument parser itself refuses: it exits with code 2 (SystemExit) instead of returning it
REFUSED_BY_ARGPARSE = ("inf", "64,x", "0,128", "4.5,0", "7", "fp16")


@pytest.mark.parametrize("entry_point, argv, message", BAD_INPUTS, ids=[f"{e}:{a[-1]}" for e, a, _ in BAD_INPUTS])
def test_every_entry_point_turns_a_bad_input_into_one_line_and_exit_code_2(entry_point, argv, message, tmp_path,
                                                                           capsys, tracking_uri, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written by mistake would land here
    module = shlex.split(MLPROJECT["entry_points"][entry_point]["command"])[2]
    data = ["--data-dir", str(tmp_path / "data")] if entry_point not in ("forget", "promote") else []
    capsys.readouterr()
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) if argv[-1] in REFUSED_BY_ARGPARSE else _no_exit():
        code = importlib.import_module(module).main([*argv, *data])
        assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert _snapshot(tmp_path) == before, "a refused input wrote something (files or the tracking store)"


def _snapshot(folder: Path) -> dict[str, bytes]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).digest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_dp_command_line_starts_from_the_dp_preset_and_an_option_given_changes_it():
    """Each generator option is declared once (its field): left at "" it takes the chosen privacy mode's recipe,
    given it wins (under the mirrored recipe a DP run silently ignored --generator-latent-dim)."""
    from fairforget.components.generator.config import GeneratorConfig, dp_preset
    from fairforget.pipelines.config import build_parser, config_from_args

    def generator(*argv):
        return config_from_args(build_parser().parse_args(list(argv))).generator

    assert generator() == dp_preset()  # the default: DP (components.generator.config.DEFAULT_PRIVACY)
    assert generator("--generator-privacy", "none") == GeneratorConfig()
    assert generator("--generator-privacy", "dp") == dp_preset()
    assert generator("--generator-privacy", "dp", "--generator-latent-dim", "") == dp_preset()
    tuned = generator("--generator-privacy", "dp", "--generator-latent-dim", "16", "--seed", "3")
    assert (tuned.latent_dim, tuned.train_steps, tuned.seed) == (16, dp_preset().train_steps, 3)
    assert generator("--generator-steps", "10").train_steps == 10


def test_the_guidance_that_samples_replacements_is_the_recipes_unless_given():
    """Algorithms 1 and 2 sample with the generator's guidance: the DP recipe's 2 (chosen on public images,
    docs/generator.md), the plain recipe's 3, or the one given (a fixed 3 once ignored the recipe)."""
    from fairforget.components.generator.config import GeneratorConfig, dp_preset
    from fairforget.pipelines.config import build_parser, config_from_args

    def guidance(*argv):
        config = config_from_args(build_parser().parse_args(list(argv)))
        assert config.augment.guidance_scale == config.generator.guidance_scale
        return config.augment.guidance_scale

    assert dp_preset().guidance_scale != GeneratorConfig().guidance_scale
    assert guidance() == dp_preset().guidance_scale == 2.0
    assert guidance("--generator-privacy", "none") == GeneratorConfig().guidance_scale == 3.0
    assert guidance("--guidance-scale", "1.5") == guidance("--generator-privacy", "none", "--guidance-scale", "1.5") == 1.5
