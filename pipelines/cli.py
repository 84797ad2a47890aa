"""Argument types shared by every entry point's command line (MLflow passes numbers as strings, integers often
rendered as floats: ``"4000.0"``). Each raises ``argparse.ArgumentTypeError`` with the bad value, which argparse
turns into one usage line and exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import typing


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (``error: argument --x: ...; see --help``) and exit
    code 2, like every other user error of the entry points."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def int_arg(text: str) -> int:
    """A whole number, also in MLflow's float rendering (``"4000.0"``); NaN, infinities and fractions refused."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not math.isfinite(value) or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def optional_int_arg(text: str) -> int | None:
    """``int_arg``, or None for an empty string (an MLflow parameter left at its default ``""``)."""
    return None if str(text).strip() == "" else int_arg(text)


def float_arg(text: str) -> float:
    """A finite number (NaN and infinities refused)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def str2bool(text: str | bool) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off)."""
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def auto_or(parse):
    """An argument type that maps ``auto`` to None and parses anything else with ``parse``."""
    def parse_or_auto(text: str):
        return None if str(text).strip().lower() == "auto" else parse(text)
    parse_or_auto.__name__ = getattr(parse, "__name__", "value")
    return parse_or_auto


def channels_arg(text: str) -> tuple[int, ...]:
    """``64,128`` or ``64-128`` -> (64, 128): positive integers, one per resolution."""
    try:
        channels = tuple(int(float(part)) for part in str(text).replace("-", ",").split(",") if part.strip())
    except ValueError:
        channels = ()
    if not channels or min(channels) < 1:
        raise argparse.ArgumentTypeError(f"channels must be positive integers separated by commas, e.g. 64,128; "
                                         f"got {text!r}")
    return channels


def interval_arg(text: str) -> tuple[float, float]:
    """``0.3,4.5`` -> (0.3, 4.5): two numbers lo < hi, lo >= 0; ``inf`` allowed for hi (``0,inf``: no limit)."""
    try:
        lo, hi = (float(part) for part in str(text).split(","))
    except ValueError:
        lo = hi = math.nan
    if not (math.isfinite(lo) and 0 <= lo < hi):
        raise argparse.ArgumentTypeError(f"expected an interval lo,hi of noise levels with 0 <= lo < hi (hi may be "
                                         f"inf), e.g. 0,4.5; got {text!r}")
    return lo, hi


class _Unset:
    """The value of a recipe-dependent option that was not given: the recipe of the chosen privacy mode decides."""

    def __repr__(self) -> str:
        return "the recipe's"


UNSET = _Unset()


def _choice(choices: tuple[str, ...]):
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(choices)})")
        return text
    parse.__name__ = "choice"
    return parse


def _recipe_or(parse):
    """``parse``, or ``UNSET`` for an empty string (an MLflow parameter left at its default ``""``)."""
    def parse_or_unset(text: str):
        return UNSET if str(text).strip() == "" else parse(text)
    parse_or_unset.__name__ = getattr(parse, "__name__", "value")
    return parse_or_unset


def _field_parser(hint, choices):
    """The argument type of a ``GeneratorConfig`` field from its annotation (and its ``choices``)."""
    if choices:
        return _choice(choices)
    if hint is int:
        return int_arg
    if hint is float:
        return float_arg
    if hint is bool:
        return str2bool
    if typing.get_origin(hint) is tuple:
        return channels_arg if typing.get_args(hint)[-1] is Ellipsis else interval_arg
    if float in typing.get_args(hint):  # float | None: "auto" for None
        return auto_or(float_arg)
    return str


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def add_generator_options(parser: argparse.ArgumentParser, options: typing.Mapping[str, str]) -> None:
    """One option per ``GeneratorConfig`` field in ``options`` ({field: option name}), its type, choices, help and
    default all taken from the field's one declaration (``components.generator.config.param``). A field that the
    DP preset sets differently defaults to ``UNSET`` (``""`` on the command line): the recipe of the chosen
    ``--generator-privacy`` decides, and the help names both values."""
    from fairforget.components.generator.config import DEFAULT_PRIVACY, GeneratorConfig, dp_preset

    plain, dp = GeneratorConfig(), dp_preset()
    hints = typing.get_type_hints(GeneratorConfig)
    for f in dataclasses.fields(GeneratorConfig):
        if f.name not in options:
            continue
        parse = _field_parser(hints[f.name], f.metadata["choices"])
        default, preset = getattr(plain, f.name), getattr(dp, f.name)
        if f.name == "privacy":  # the recipe a command line starts from
            parser.add_argument(options[f.name], type=parse, default=DEFAULT_PRIVACY,
                                help=f"{f.metadata['help']} (default {DEFAULT_PRIVACY})".replace("%", "%%"))
        elif preset != default:
            parser.add_argument(options[f.name], type=_recipe_or(parse), default=UNSET,
                                help=f"{f.metadata['help']} (default {_shown(default)}; with generator privacy dp "
                                     f"{_shown(preset)})".replace("%", "%%"))
        else:
            parser.add_argument(options[f.name], type=parse, default=default,
                                help=f"{f.metadata['help']} (default {_shown(default)})".replace("%", "%%"))


def generator_config_from_options(args: argparse.Namespace, options: typing.Mapping[str, str], **fixed):
    """The ``GeneratorConfig`` of ``add_generator_options``' options: the recipe of the privacy mode given (default
    ``DEFAULT_PRIVACY``), every option given on top, then ``fixed`` (values the step sets itself, e.g. ``seed``)."""
    from fairforget.components.generator.config import DEFAULT_PRIVACY, recipe

    values = {name: getattr(args, option.lstrip("-").replace("-", "_")) for name, option in options.items()}
    given = {name: value for name, value in values.items() if value is not UNSET}
    privacy = given.pop("privacy", DEFAULT_PRIVACY)
    return recipe(privacy, **given, **fixed)
