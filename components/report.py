"""Report figures (matplotlib, Agg backend); each function returns a ``matplotlib.figure.Figure`` and logs nothing.

Membership inference: ``plot_roc_curves`` draws one ROC curve per attack on log-log axes (Carlini et al. 2022:
what matters is the TPR at low FPR, which linear axes hide), with the chance diagonal.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

from fairforget.errors import ConfigError

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_roc_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    title: str = "Membership inference ROC",
    aucs: Mapping[str, float] | None = None,
    min_rate: float | None = None,
) -> plt.Figure:
    """ROC curves (fpr, tpr), each 1-d arrays of equal length in [0, 1], one line per name, log-log axes.

    Zero rates cannot be drawn on log axes: the axes start at ``min_rate`` (default: 1 / (2 * the largest number of
    ROC points), at least 1e-5), and points below it are drawn at it. ``aucs`` adds "AUC" to the legend labels.
    """
    if not curves:
        raise ConfigError("no ROC curves to plot: run at least one attack")
    longest = max(len(fpr) for fpr, _ in curves.values())
    floor = min_rate if min_rate is not None else max(1e-5, 1.0 / (2.0 * longest))
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    for name, (fpr, tpr) in curves.items():
        fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
        if fpr.shape != tpr.shape:
            raise ConfigError(f"curve {name!r}: fpr {fpr.shape} and tpr {tpr.shape} differ in shape")
        label = name if not aucs or name not in aucs else f"{name} (AUC {aucs[name]:.3f})"
        ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), label=label, linewidth=1.3)
    diagonal = np.logspace(np.log10(floor), 0, 50)
    ax.plot(diagonal, diagonal, color="grey", linestyle="--", linewidth=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(floor, 1.0)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_attack_success(
    successes: Mapping[str, tuple[float, float, float]],
    chance_bound: float | None = None,
    title: str = "Attack success (balanced accuracy)",
) -> plt.Figure:
    """Horizontal bars of success per attack, ``successes[name] = (value, ci_low, ci_high)``, with the 0.5 line
    and, when given, the chance bound."""
    if not successes:
        raise ConfigError("no attack results to plot")
    names = list(successes)
    values = np.array([successes[n][0] for n in names])
    low = values - np.array([successes[n][1] for n in names])
    high = np.array([successes[n][2] for n in names]) - values
    fig, ax = plt.subplots(figsize=(5.5, 0.45 * len(names) + 1.4))
    y = np.arange(len(names))
    ax.barh(y, values - 0.5, left=0.5, xerr=[low, high], color="#4c72b0", capsize=3)
    ax.axvline(0.5, color="black", linewidth=0.8)
    if chance_bound is not None:
        ax.axvline(chance_bound, color="grey", linestyle="--", linewidth=0.8, label=f"chance bound {chance_bound:.3f}")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(y, names)
    ax.set_xlim(min(0.45, float((values - low).min()) - 0.01), max(0.6, float((values + high).max()) + 0.02))
    ax.set_xlabel("success")
    ax.set_title(title)
    fig.tight_layout()
    return fig
