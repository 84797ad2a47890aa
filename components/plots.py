"""Figures (matplotlib, Agg backend): each function returns a ``matplotlib.figure.Figure`` and logs nothing."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from components.bias import BiasReport  # noqa: E402


def plot_distributions(report: BiasReport, title: str = "Attribute distributions vs prior") -> plt.Figure:
    """One panel per attribute: observed P(tau) (bars, with counts) against the prior D(tau) (markers)."""
    n = len(report.attributes)
    fig, axes = plt.subplots(1, n, figsize=(max(4.5, 1.0 + 0.9 * max(len(a.categories) for a in report.attributes)) * n,
                                            3.8), squeeze=False)
    for ax, item in zip(axes[0], report.attributes):
        x = np.arange(len(item.categories))
        bars = ax.bar(x, item.observed, color="#4c72b0", label="data P")
        ax.scatter(x, item.prior, color="#dd8452", zorder=3, label="prior D", marker="D")
        for bar, count in zip(bars, item.counts):
            ax.annotate(str(count), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=8)
        ax.set_xticks(x, item.categories, rotation=30 if len(item.categories) > 3 else 0, ha="right")
        ax.set_ylim(0, max(1e-9, max(item.observed.max(), item.prior.max())) * 1.2)
        ax.set_title(f"{item.attribute}: KL(D||P) = {item.kl:.4f}")
        ax.set_ylabel("fraction")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_image_grid(rows: Sequence[np.ndarray], row_labels: Sequence[str], title: str = "") -> plt.Figure:
    """A grid with one row per entry of ``rows`` (each uint8 (n, H, W, C)), labelled on the left."""
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(n_cols * 0.8, len(rows) * 0.85), squeeze=False)
    for i, (images, label) in enumerate(zip(rows, row_labels)):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(images):
                img = images[j]
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                          vmin=0, vmax=255)
        axes[i][0].text(-0.1, 0.5, label, transform=axes[i][0].transAxes, ha="right", va="center", fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
