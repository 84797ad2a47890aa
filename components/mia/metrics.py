"""How well a membership score separates members from non-members, with bootstrap intervals.

Conventions: ``is_member`` is bool (N,); ``scores`` float (N,), higher meaning "more likely a member"; a decision
rule is ``scores >= threshold``. All curves are computed here (no scikit-learn) so the tests can check them
against scikit-learn's ``roc_curve``/``roc_auc_score`` as an independent recomputation.

- ``success``: balanced accuracy (TPR + TNR) / 2 of the decision rule, the paper's "attack success rate";
  0.5 is chance whatever the member/non-member ratio.
- ``advantage``: 2 * success - 1 = TPR - FPR (Yeom et al. 2018).
- ``auc``: area under the ROC curve (ties count one half, as in the Mann-Whitney statistic).
- ``tpr_at_<x>pct_fpr``: the largest TPR among ROC points with FPR <= x% (Carlini et al. 2022). It needs at least
  ceil(1 / FPR) non-members, else the lowest non-zero FPR it can see is above the level: ``required_non_members``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from fairforget.errors import ConfigError

_FPR_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a bootstrap percentile interval."""

    value: float
    ci_low: float
    ci_high: float


def fpr_label(level: float) -> str:
    """0.01 -> ``1pct``, 0.001 -> ``0.1pct``: the suffix of ``tpr_at_<label>_fpr``."""
    return f"{level * 100:g}pct"


def required_non_members(level: float) -> int:
    """Non-members needed to resolve an FPR of ``level``: ceil(1 / level) (1000 for 0.1%)."""
    return math.ceil(1.0 / level - 1e-9)


def check_fpr_levels(levels, n_non_members: int) -> None:
    """Raise ``ValueError`` when ``n_non_members`` is too few for one of the FPR ``levels``, saying how many are needed."""
    for level in levels:
        if not 0.0 < level < 1.0:
            raise ConfigError(f"an FPR level must lie strictly between 0 and 1, got {level}")
        needed = required_non_members(level)
        if n_non_members < needed:
            raise ConfigError(f"TPR at {level:g} FPR needs at least {needed} evaluation non-members, got {n_non_members}: "
                              f"use more non-members (a larger audit pool or calibration_fraction lower) or drop that level "
                              f"from fpr_levels")


def _validate(is_member: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    is_member = np.asarray(is_member, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if is_member.shape != scores.shape or is_member.ndim != 1:
        raise ConfigError(f"is_member {is_member.shape} and scores {scores.shape} must be 1-d of the same length")
    if is_member.all() or not is_member.any():
        raise ConfigError("need both members and non-members to measure an attack")
    if not np.isfinite(scores).all():
        raise ConfigError("scores contain NaN or infinity: check the model's outputs")
    return is_member, scores


def _weighted_roc(is_member: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC points (FPR, TPR), each (B, U + 1), for B weightings (B, N) of the samples; thresholds = the U distinct
    scores in decreasing order, preceded by the point (0, 0)."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    sorted_member = is_member[order]
    sorted_weights = weights[:, order]
    true_pos = np.cumsum(sorted_weights * sorted_member, axis=1)
    false_pos = np.cumsum(sorted_weights * ~sorted_member, axis=1)
    # the last position of each run of equal scores: all tied samples switch to "member" together
    block_ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    total_pos = true_pos[:, -1:]
    total_neg = false_pos[:, -1:]
    zeros = np.zeros((weights.shape[0], 1))
    tpr = np.hstack([zeros, true_pos[:, block_ends] / total_pos])
    fpr = np.hstack([zeros, false_pos[:, block_ends] / total_neg])
    return fpr, tpr


def roc_curve_points(is_member, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): the ROC curve, thresholds decreasing, starting at (0, 0) with threshold +inf.

    Same points as ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    """
    is_member, scores = _validate(is_member, scores)
    fpr, tpr = _weighted_roc(is_member, scores, np.ones((1, len(scores))))
    thresholds = np.r_[np.inf, np.unique(scores)[::-1]]
    return fpr[0], tpr[0], thresholds


def _auc(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    return np.sum(np.diff(fpr, axis=-1) * (tpr[..., 1:] + tpr[..., :-1]) / 2.0, axis=-1)


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, level: float) -> np.ndarray:
    return np.where(fpr <= level + _FPR_TOLERANCE, tpr, 0.0).max(axis=-1)


def roc_auc(is_member, scores) -> float:
    """Area under the ROC curve, in [0, 1]; 0.5 is chance."""
    fpr, tpr, _ = roc_curve_points(is_member, scores)
    return float(_auc(fpr, tpr))


def tpr_at_fpr(is_member, scores, level: float) -> float:
    """The largest TPR reachable with FPR <= ``level``."""
    fpr, tpr, _ = roc_curve_points(is_member, scores)
    return float(_tpr_at(fpr, tpr, level))


def balanced_accuracy(is_member, predicted_member) -> float:
    """(TPR + TNR) / 2 of bool decisions; 0.5 is chance."""
    is_member = np.asarray(is_member, dtype=bool)
    predicted_member = np.asarray(predicted_member, dtype=bool)
    tpr = predicted_member[is_member].mean()
    tnr = (~predicted_member[~is_member]).mean()
    return float((tpr + tnr) / 2.0)


def fit_threshold(is_member, scores) -> float:
    """The threshold t maximizing the balanced accuracy of ``scores >= t`` on these (calibration) samples.

    t lies halfway between the chosen distinct score and the next lower one, so that a score equal to a
    calibration score is decided as on calibration. Ties in balanced accuracy go to the highest threshold.
    Always finite (when deciding "nobody is a member" is best, t lies just above the largest score).
    """
    fpr, tpr, thresholds = roc_curve_points(is_member, scores)
    best = int(np.argmax(tpr - fpr))
    if best == 0:  # "nobody is a member" is best: a finite cut just above the largest score
        top = float(thresholds[1])
        return top + max(abs(top), 1.0) * 1e-9
    if best == len(thresholds) - 1:
        return float(thresholds[best])
    return float((thresholds[best] + thresholds[best + 1]) / 2.0)


def chance_success_bound(n_members: int, n_non_members: int, alpha: float = 0.05, num_tests: int = 1) -> float:
    """The success (balanced accuracy) a score unrelated to membership stays under with probability 1 - alpha.

    For a threshold fixed before looking at the evaluation data, success = (TPR + 1 - FPR) / 2 with TPR, FPR
    independent binomial proportions, so its variance is at most (1/n_members + 1/n_non_members) / 16. The bound
    is one-sided, Bonferroni-corrected over ``num_tests`` attacks: 0.5 + z_(1 - alpha/num_tests) * sd.
    For 2000 + 2000 evaluation samples and 8 attacks: 0.520.
    """
    if n_members < 1 or n_non_members < 1:
        raise ConfigError("need at least one member and one non-member")
    z = NormalDist().inv_cdf(1.0 - alpha / max(num_tests, 1))
    return 0.5 + z * math.sqrt((1.0 / n_members + 1.0 / n_non_members) / 16.0)


def evaluate_scores(
    is_member,
    scores,
    threshold: float,
    fpr_levels=(0.01, 0.001),
    num_bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Estimate]:
    """success, advantage, auc and tpr_at_<level>_fpr of ``scores`` (threshold fixed beforehand), each with a
    bootstrap percentile interval.

    The bootstrap resamples members and non-members separately (with replacement, sizes kept) ``num_bootstrap``
    times with ``seed``; the threshold stays fixed, so the interval covers evaluation sampling, not calibration.
    With ``num_bootstrap == 0`` the interval collapses to the point estimate.
    """
    is_member, scores = _validate(is_member, scores)
    check_fpr_levels(fpr_levels, int((~is_member).sum()))
    member_idx = np.flatnonzero(is_member)
    non_idx = np.flatnonzero(~is_member)
    rng = np.random.default_rng(seed)
    weights = np.ones((num_bootstrap + 1, len(scores)))
    if num_bootstrap > 0:
        weights[1:, member_idx] = rng.multinomial(len(member_idx), np.full(len(member_idx), 1.0 / len(member_idx)),
                                                  size=num_bootstrap)
        weights[1:, non_idx] = rng.multinomial(len(non_idx), np.full(len(non_idx), 1.0 / len(non_idx)),
                                               size=num_bootstrap)
    predicted = scores >= threshold
    tpr_rule = (weights[:, member_idx] * predicted[member_idx]).sum(axis=1) / len(member_idx)
    fpr_rule = (weights[:, non_idx] * predicted[non_idx]).sum(axis=1) / len(non_idx)
    success = (tpr_rule + 1.0 - fpr_rule) / 2.0
    fpr, tpr = _weighted_roc(is_member, scores, weights)
    values = {"success": success, "advantage": 2.0 * success - 1.0, "auc": _auc(fpr, tpr)}
    for level in fpr_levels:
        values[f"tpr_at_{fpr_label(level)}_fpr"] = _tpr_at(fpr, tpr, level)
    tail = (1.0 - confidence) / 2.0 * 100.0
    out = {}
    for name, series in values.items():
        if num_bootstrap > 0:
            low, high = np.percentile(series[1:], [tail, 100.0 - tail])
        else:
            low = high = series[0]
        out[name] = Estimate(float(series[0]), float(low), float(high))
    return out


EXACT_MANN_WHITNEY_MAX = 20  # members (or non-members) up to which the p-value is exact


def mann_whitney_p_value(member_scores, non_member_scores) -> float:
    """One-sided p-value of "members score higher than non-members" (Mann-Whitney U): exact when there are no
    ties and the smaller side holds at most ``EXACT_MANN_WHITNEY_MAX`` scores (scipy's exact null distribution,
    right at small counts where the normal approximation is not; its cost grows steeply beyond), the tie-corrected
    normal approximation otherwise (accurate once both sides are larger)."""
    from scipy.stats import mannwhitneyu

    members, non_members = np.asarray(member_scores, float), np.asarray(non_member_scores, float)
    if len(members) == 0 or len(non_members) == 0:
        return 1.0
    tied = len(np.unique(np.r_[members, non_members])) < len(members) + len(non_members)
    exact = not tied and min(len(members), len(non_members)) <= EXACT_MANN_WHITNEY_MAX
    return float(mannwhitneyu(members, non_members, alternative="greater",
                              method="exact" if exact else "asymptotic").pvalue)
