"""Figures (matplotlib, Agg backend): each function returns a ``matplotlib.figure.Figure`` and logs nothing."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fairforget.components.bias import BiasReport, DependenceReport  # noqa: E402


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


def plot_dependence(before: DependenceReport, after: DependenceReport,
                    title: str = "Debiased attributes vs the label") -> plt.Figure:
    """One panel per debiased attribute: P(attribute | group) before (light) and after (dark) augmentation, one bar
    pair per (group, value), with I(attribute; label) before -> after in the title. An empty report gives a figure
    that says so."""
    n = max(1, len(before.attributes))
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 3.8), squeeze=False)
    if not before.attributes:
        axes[0][0].axis("off")
        axes[0][0].text(0.5, 0.5, "no debiased attribute independent of the label", ha="center", va="center")
    for ax, first in zip(axes[0], before.attributes):
        second = after.by_name(first.attribute)
        groups = sorted(set(first.table.index) | set(second.table.index))
        values = sorted(set(first.table.columns) | set(second.table.columns))
        old = first.table.reindex(index=groups, columns=values, fill_value=0.0)
        new = second.table.reindex(index=groups, columns=values, fill_value=0.0)
        width = 0.8 / (2 * len(values))
        x = np.arange(len(groups))
        for k, value in enumerate(values):
            color = plt.get_cmap("tab10")(k % 10)
            ax.bar(x + (2 * k) * width - 0.4 + width / 2, old[value], width, color=color, alpha=0.35,
                   label=f"{value} before")
            ax.bar(x + (2 * k + 1) * width - 0.4 + width / 2, new[value], width, color=color,
                   label=f"{value} after")
        ax.set_xticks(x, groups)
        ax.set_xlabel(before.group)
        ax.set_ylabel(f"P({first.attribute} | {before.group})")
        ax.set_ylim(0, 1.15)
        ax.set_title(f"I({first.attribute}; {before.label}): {first.mutual_information:.4f} -> "
                     f"{second.mutual_information:.4f} nats", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
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


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], title: str) -> plt.Figure:
    """Row-normalised confusion matrix (rows = true class) with the counts written in each cell."""
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            if confusion[i, j]:
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_iterations(table, title: str = "Accuracy and time per iteration (paper Table I)") -> plt.Figure:
    """``table``: DataFrame with columns iteration, acc_retain, acc_test, acc_worst_class, seconds."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for column, label in (("acc_retain", "retain"), ("acc_test", "test"), ("acc_worst_class", "worst class")):
        if column in table:
            left.plot(table["iteration"], table[column], marker="o", label=label)
    left.set_xlabel("iteration")
    left.set_ylabel("accuracy")
    left.legend()
    left.grid(alpha=0.3)
    right.bar(table["iteration"], table["seconds"], color="#8172b3")
    right.set_xlabel("iteration")
    right.set_ylabel("seconds")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_attack_vs_forgotten(history, attacks: Sequence[str], chance: float = 0.5) -> plt.Figure:
    """Attack success against the fraction of originals forgotten (paper Fig. 12).

    ``history``: DataFrame with column ``forgotten_fraction`` and one column ``<attack>`` of success per attack.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for attack in attacks:
        if attack in history:
            ax.plot(history["forgotten_fraction"], history[attack], marker="o", label=attack)
    ax.axhline(chance, color="grey", linestyle="--", label="chance")
    ax.set_xlabel("fraction of original records forgotten")
    ax.set_ylabel("attack success (balanced accuracy)")
    ax.set_title("Membership inference vs forgetting (paper Fig. 12)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_certification(history, max_auc_excess: float, max_tpr_at_1pct_fpr: float) -> plt.Figure:
    """The certificates against the fraction of originals forgotten: the largest AUC upper bound (left) and
    TPR-at-1%-FPR upper bound (right) over the attacks, for the retained and the forgotten originals, with the
    tolerance a certified set stays under.

    ``history``: DataFrame with ``forgotten_fraction`` and ``auc_high_<set>`` / ``tpr_high_<set>`` columns
    (``IterationOutcome.history_row``); an empty set's points are left out.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for held, marker in (("retained", "o"), ("forgotten", "s")):
        for ax, column in ((left, f"auc_high_{held}"), (right, f"tpr_high_{held}")):
            if column not in history:
                continue
            verdict = f"verdict_{held}"
            rows = history[history[verdict] != "empty"] if verdict in history else history
            ax.plot(rows["forgotten_fraction"], rows[column], marker=marker, label=f"{held} originals")
    left.axhline(0.5 + max_auc_excess, color="red", linestyle="--", label=f"tolerance {0.5 + max_auc_excess:.3f}")
    left.axhline(0.5, color="grey", linewidth=0.8, label="chance")
    right.axhline(max_tpr_at_1pct_fpr, color="red", linestyle="--", label=f"tolerance {max_tpr_at_1pct_fpr:.3f}")
    right.axhline(0.01, color="grey", linewidth=0.8, label="chance")
    left.set_ylabel("largest AUC upper bound (95%)")
    right.set_ylabel("largest TPR@1%FPR upper bound (95%)")
    for ax in (left, right):
        ax.set_xlabel("fraction of original records forgotten")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Certification: every attack's upper bound must stay under the tolerance", fontsize=10)
    fig.tight_layout()
    return fig
