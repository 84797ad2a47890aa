"""Argument types shared by every entry point's command line (MLflow passes numbers as strings, integers often
rendered as floats: ``"4000.0"``). Each raises ``argparse.ArgumentTypeError`` with the bad value, which argparse
turns into one usage line and exit code 2."""

from __future__ import annotations

import argparse
import math


def int_arg(text: str) -> int:
    """A whole number, also in MLflow's float rendering (``"4000.0"``); NaN, infinities and fractions refused."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not math.isfinite(value) or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


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
