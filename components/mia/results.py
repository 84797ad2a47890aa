"""``AuditReport``: the figures of one audit, as MLflow metrics, a table and a short text."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fairforget.components.mia.certify import Certificate, Tolerance, certificate_over_attacks
from fairforget.components.mia.config import AuditConfig
from fairforget.components.mia.metrics import Estimate, mann_whitney_p_value

ALL_MEMBERS = "all"


@dataclass
class AttackResult:
    """One attack on one subset of members against the evaluation non-members (class-matched to the subset:
    ``protocol.class_matched_rows``).

    ``estimates``: success, advantage, auc, tpr_at_<x>pct_fpr; ``threshold`` the calibrated decision cut;
    ``fpr``/``tpr`` the evaluation ROC curve (for the figure); ``n_members``/``n_non_members`` evaluation counts;
    ``tpr_at_1pct_fpr_high`` the Clopper-Pearson upper bound of the TPR at 1% FPR (``certify``); ``scores`` and
    ``is_member`` the evaluation scores (N,) and membership (N,) they were read from.
    """

    attack: str
    subset: str
    estimates: dict[str, Estimate]
    threshold: float
    fpr: np.ndarray
    tpr: np.ndarray
    n_members: int
    n_non_members: int
    tpr_at_1pct_fpr_high: float = 1.0
    scores: np.ndarray | None = None
    is_member: np.ndarray | None = None


@dataclass
class AuditReport:
    """All results of ``audit_membership``: ``results[subset][attack]``; subset ``"all"`` holds every member.

    ``chance_bound[subset]``: the success an attack unrelated to membership stays under (one-sided, Bonferroni over
    the attacks, ``chance_success_bound``): reported with the paper's success metric, it decides nothing. The
    verdict on a subset is its ``certificate`` read under a ``Tolerance`` (``certify``): every attack's upper
    confidence bounds under the tolerance. ``member_accuracy``/``non_member_accuracy``: the target's accuracy on
    the un-augmented images.
    """

    config: AuditConfig
    results: dict[str, dict[str, AttackResult]]
    chance_bound: dict[str, float]
    member_accuracy: float
    non_member_accuracy: float
    sizes: dict[str, int]
    augmentations: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    fitted: dict[str, dict] = field(default_factory=dict)

    @property
    def accuracy_gap(self) -> float:
        """Member minus non-member accuracy (the train/test gap, for context)."""
        return self.member_accuracy - self.non_member_accuracy

    def measured(self, role: str) -> int:
        """How many ``role`` records ("members" or "non_members") the figures were measured on: the evaluation half,
        and the calibration half too when cross-fitted."""
        halves = ("evaluation", "calibration") if self.config.cross_fit else ("evaluation",)
        return sum(self.sizes.get(f"{half}_{role}", 0) for half in halves)

    def max_success(self, subset: str = ALL_MEMBERS) -> float:
        return max(r.estimates["success"].value for r in self.results[subset].values())

    def certificate(self, subset: str = ALL_MEMBERS) -> Certificate:
        """The largest AUC and TPR-at-1%-FPR upper bounds over the attacks on ``subset``, with its evaluation counts
        (no evaluated member: a certificate of 0 members, ``too_few``, never a pass)."""
        by_attack = self.results.get(subset)
        if not by_attack:
            return Certificate(0, self.measured("non_members"), 0.5, 0.0)
        by_auc = max(by_attack.values(), key=lambda r: r.estimates["auc"].ci_high)
        return certificate_over_attacks(
            by_auc.n_members, by_auc.n_non_members, {a: r.estimates["auc"].ci_high for a, r in by_attack.items()},
            {a: r.tpr_at_1pct_fpr_high for a, r in by_attack.items()}, {"all attacks": self.leak_p_value(subset)},
            self.config.chance_alpha)

    def certified(self, subset: str = ALL_MEMBERS, tolerance: Tolerance | None = None) -> bool:
        """True when ``subset`` is certified indistinguishable (or holds no record) under ``tolerance``."""
        return self.certificate(subset).certified(tolerance or Tolerance())

    def leak_p_value(self, subset: str = ALL_MEMBERS) -> float:
        """The smallest one-sided Mann-Whitney p-value over the attacks on ``subset`` (members score higher than the
        evaluation non-members; exact at small counts, ``mann_whitney_p_value``); 1.0 without evaluated members."""
        results = self.results.get(subset, {}).values()
        return min((mann_whitney_p_value(r.scores[r.is_member], r.scores[~r.is_member]) for r in results
                    if r.scores is not None), default=1.0)

    def leak_detected(self, subset: str = ALL_MEMBERS) -> bool:
        """True when membership of ``subset`` is visible: ``leak_p_value`` at or under ``chance_alpha`` divided by
        the number of attacks (a detection is where a multiple-comparison correction belongs; a bootstrap interval
        is no test at the few records of a deletion request)."""
        attacks = len(self.results.get(subset, {}))
        return attacks > 0 and self.leak_p_value(subset) <= self.config.chance_alpha / attacks

    @staticmethod
    def _prefix(subset: str, root: str = "mia") -> str:
        return f"{root}/" if subset == ALL_MEMBERS else f"{root}/{subset}/"

    def metrics(self, root: str = "mia", tolerance: Tolerance | None = None) -> dict[str, float]:
        """Flat MLflow metrics: ``mia/<attack>/<metric>`` (+ ``_ci_low``/``_ci_high``, and
        ``tpr_at_1pct_fpr_cp_high``) for all members, ``mia/<subset>/<attack>/<metric>`` for each subset,
        ``mia/[<subset>/]max_success``, ``mia/[<subset>/]chance_success_high``, the certificate under
        ``tolerance`` (``mia/[<subset>/]certified`` 1.0 or 0.0, ``auc_high``, ``tpr_at_1pct_fpr_high``,
        ``n_members``, ``too_few``, ``members_needed``), ``mia/[<subset>/]leak_detected``, and
        ``mia/member_accuracy``, ``mia/non_member_accuracy``, ``mia/accuracy_gap``. ``root`` replaces ``mia``
        (e.g. ``mia_shard/3`` for a per-shard audit)."""
        tolerance = tolerance or Tolerance()
        out: dict[str, float] = {}
        for subset, by_attack in self.results.items():
            prefix = self._prefix(subset, root)
            for attack, result in by_attack.items():
                for metric, estimate in result.estimates.items():
                    out[f"{prefix}{attack}/{metric}"] = estimate.value
                    out[f"{prefix}{attack}/{metric}_ci_low"] = estimate.ci_low
                    out[f"{prefix}{attack}/{metric}_ci_high"] = estimate.ci_high
                out[f"{prefix}{attack}/tpr_at_1pct_fpr_cp_high"] = result.tpr_at_1pct_fpr_high
            out[f"{prefix}max_success"] = self.max_success(subset)
            out[f"{prefix}chance_success_high"] = self.chance_bound[subset]
            out.update(self.certificate(subset).metrics(prefix, tolerance))
            out[f"{prefix}leak_detected"] = float(self.leak_detected(subset))
            out[f"{prefix}leak_p_value"] = self.leak_p_value(subset)
        out[f"{root}/member_accuracy"] = self.member_accuracy
        out[f"{root}/non_member_accuracy"] = self.non_member_accuracy
        out[f"{root}/accuracy_gap"] = self.accuracy_gap
        return out

    def table(self) -> pd.DataFrame:
        """One row per (subset, attack): counts, threshold and every metric with its interval."""
        rows = []
        for subset, by_attack in self.results.items():
            for attack, result in by_attack.items():
                row = {"subset": subset, "attack": attack, "n_members": result.n_members,
                       "n_non_members": result.n_non_members, "threshold": result.threshold,
                       "tpr_at_1pct_fpr_cp_high": result.tpr_at_1pct_fpr_high}
                for metric, estimate in result.estimates.items():
                    row[metric] = estimate.value
                    row[f"{metric}_ci_low"] = estimate.ci_low
                    row[f"{metric}_ci_high"] = estimate.ci_high
                rows.append(row)
        return pd.DataFrame(rows)

    def roc_curves(self, subset: str = ALL_MEMBERS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """attack -> (fpr, tpr) of the evaluation ROC curve for ``subset``."""
        return {attack: (r.fpr, r.tpr) for attack, r in self.results[subset].items()}

    def summary(self, tolerance: Tolerance | None = None) -> str:
        """A few lines: sizes, accuracy gap, per subset the strongest attack and the certification verdict."""
        tolerance = tolerance or Tolerance()
        fitting = (f"2-fold cross-fitted, halves of {self.sizes.get('evaluation_members', 0)} + "
                   f"{self.sizes.get('calibration_members', 0)} members" if self.config.cross_fit else
                   f"calibration: {self.sizes.get('calibration_members', 0)} + "
                   f"{self.sizes.get('calibration_non_members', 0)}")
        header = (f"membership-inference audit: {self.measured('members')} members vs "
                  f"{self.measured('non_members')} non-members measured ({fitting}), "
                  f"{len(self.augmentations)} fixed augmentations")
        accuracy = (f"accuracy: members {self.member_accuracy:.3f}, non-members {self.non_member_accuracy:.3f}, "
                    f"gap {self.accuracy_gap:+.3f}")
        lines = [header, accuracy]
        for subset, by_attack in self.results.items():
            best = max(by_attack.values(), key=lambda r: r.estimates["success"].value)
            success, auc = best.estimates["success"], best.estimates["auc"]
            lines.append(f"[{subset}: {best.n_members} members] strongest: {best.attack} success {success.value:.3f} "
                         f"[{success.ci_low:.3f}, {success.ci_high:.3f}], auc {auc.value:.3f} "
                         f"[{auc.ci_low:.3f}, {auc.ci_high:.3f}]; {self.certificate(subset).explain(tolerance)}")
            lines.append("    " + ", ".join(f"{a} {r.estimates['success'].value:.3f}/{r.estimates['auc'].value:.3f}"
                                            for a, r in by_attack.items()) + "  (success/auc)")
        return "\n".join(lines)
