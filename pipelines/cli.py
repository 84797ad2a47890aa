"""Argument types shared by every entry point's command line (MLflow passes numbers as strings, integers often
rendered as floats: ``"4000.0"``). Each raises ``argparse.ArgumentTypeError`` with the bad value, which argparse
turns into one usage line and exit code 2."""

from __future__ import annotations

import argparse
import math
import sys


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


def add_guidance_interval_argument(parser: argparse.ArgumentParser, defaults) -> None:
    """``--guidance-interval lo,hi`` from a ``GeneratorConfig``: the noise levels of the guided sampling steps."""
    lo, hi = defaults.guidance_interval
    parser.add_argument("--guidance-interval", type=interval_arg, default=defaults.guidance_interval,
                        help=f"guide only the sampling steps whose noise level sigma lies in (lo, hi] ({lo:g},{hi:g}; "
                             "0,inf: every step, the former default; docs/generator.md, 'Guidance in a limited "
                             "interval')")


def add_autoencoder_arguments(parser: argparse.ArgumentParser, defaults, prefix: str = "") -> None:
    """``--[<prefix>]latent-dim``, ``--[<prefix>]autoencoder-epochs``, ``--[<prefix>]autoencoder-channels``,
    ``--[<prefix>]autoencoder-perceptual-weight`` and ``--[<prefix>]public-pretrain-steps`` from a
    ``GeneratorConfig``."""
    parser.add_argument(f"--{prefix}latent-dim", type=int_arg, default=defaults.latent_dim,
                        help="size of the latent generator's latent vector (a DP generator uses its recipe's "
                             "dp_latent_dim)")
    parser.add_argument(f"--{prefix}autoencoder-epochs", type=int_arg, default=defaults.autoencoder_epochs,
                        help="epochs of the latent generator's autoencoder (60; 30 was the former default: blurrier, "
                             "and its training records less visible to the membership audit; a DP generator uses "
                             "its recipe's dp_autoencoder_epochs)")
    parser.add_argument(f"--{prefix}autoencoder-channels", type=channels_arg, default=defaults.autoencoder_channels,
                        help="channels of the latent generator's autoencoder at full and half resolution (64,128; "
                             "32,64 was the former default: blurrier and faster; a DP generator uses its recipe's "
                             "dp_autoencoder_channels)")
    parser.add_argument(f"--{prefix}autoencoder-perceptual-weight", type=float_arg,
                        default=defaults.autoencoder_perceptual_weight,
                        help="weight of the autoencoder's feature-matching loss (0: pixel loss only, faster and "
                             "blurrier; a DP generator uses its recipe's dp_autoencoder_perceptual_weight)")
    parser.add_argument(f"--{prefix}public-pretrain-steps", type=int_arg, default=defaults.public_pretrain_steps,
                        help="steps of pre-training of the denoiser on the public reference split before S "
                             "(0: S only; a DP generator uses its recipe's dp_public_pretrain_steps)")


def add_diffusion_objective_arguments(parser: argparse.ArgumentParser, defaults, prefix: str = "") -> None:
    """``--[<prefix>]prediction-type``, ``--[<prefix>]loss-weighting``, ``--[<prefix>]denoiser-dropout`` and
    ``--[<prefix>]precision`` from a ``GeneratorConfig``."""
    from fairforget.components.generator.config import PRECISIONS

    parser.add_argument(f"--{prefix}prediction-type", default=defaults.prediction_type,
                        choices=["v_prediction", "epsilon"],
                        help="what the denoiser predicts (v_prediction; epsilon was the former default; a DP "
                             "generator uses its recipe's dp_prediction_type)")
    parser.add_argument(f"--{prefix}loss-weighting", default=defaults.loss_weighting, choices=["min_snr", "uniform"],
                        help="per-timestep loss weight (min_snr: Min-SNR-5; uniform was the former default; a DP "
                             "generator uses its recipe's dp_loss_weighting)")
    parser.add_argument(f"--{prefix}denoiser-dropout", type=float_arg, default=defaults.denoiser_dropout,
                        help="dropout in the denoiser while training (0.1, a regulariser against memorising S; 0 "
                             "was the former default; a DP generator uses its recipe's dp_denoiser_dropout)")
    parser.add_argument(f"--{prefix}precision", default=defaults.precision, choices=PRECISIONS,
                        help=f"arithmetic of the generator's training ({defaults.precision}; auto: bf16 where the "
                             "CPU or GPU computes it natively, else fp32; a DP generator trains in fp32)")


def add_generator_privacy_arguments(parser: argparse.ArgumentParser, defaults) -> None:
    """``--generator-privacy``, ``--dp-epsilon`` and ``--dp-delta`` from a ``GeneratorConfig``."""
    parser.add_argument("--generator-privacy", default=defaults.privacy, choices=["none", "dp"],
                        help="none, or dp: the denoiser trained with DP-SGD (opacus), the autoencoder on public data")
    parser.add_argument("--dp-epsilon", type=float_arg, default=defaults.dp_epsilon,
                        help="target epsilon of the DP generator (default 10)")
    parser.add_argument("--dp-delta", type=auto_or(float_arg), default=defaults.dp_delta,
                        help="delta of the DP generator (default %(default)s); auto: 1 / (10 |S|), at most 1e-5")
