"""What every attack is: fitted on calibration queries, then a membership score per sample (higher = member)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fairforget.components.mia.config import AuditConfig
from fairforget.components.mia.metrics import fit_threshold
from fairforget.components.mia.queries import QueryOutputs


class MembershipAttack(Protocol):
    """``fit`` sees only calibration samples (their queries and true membership); ``score`` returns float (N,),
    higher meaning "more likely a member". The protocol then fits the decision threshold on calibration scores."""

    name: str

    def fit(self, calibration: QueryOutputs, is_member: np.ndarray) -> MembershipAttack: ...

    def score(self, queries: QueryOutputs) -> np.ndarray: ...


class ThresholdAttack:
    """A fixed per-sample statistic used as the score; nothing to fit beyond the protocol's threshold.

    Subclasses define ``statistic(queries) -> (N,)`` and ``higher_is_member``; with ``higher_is_member = None``
    the direction is chosen on the calibration split (the one with the larger calibration AUC).
    """

    name = "threshold"
    higher_is_member: bool | None = True

    def __init__(self, config: AuditConfig) -> None:
        self.config = config
        self.sign = 1.0 if self.higher_is_member in (True, None) else -1.0

    def statistic(self, queries: QueryOutputs) -> np.ndarray:
        raise NotImplementedError

    def fit(self, calibration: QueryOutputs, is_member: np.ndarray) -> ThresholdAttack:
        if self.higher_is_member is None:
            from fairforget.components.mia.metrics import roc_auc

            self.sign = 1.0 if roc_auc(is_member, self.statistic(calibration)) >= 0.5 else -1.0
        return self

    def score(self, queries: QueryOutputs) -> np.ndarray:
        return self.sign * self.statistic(queries)


class ClassThresholdAttack(ThresholdAttack):
    """Song & Mittal (2021): one threshold per class, fitted on calibration samples of that class.

    The score is ``statistic - threshold[label]`` (sign applied first), so one global cut at 0 reproduces the
    class-dependent rule and shifting the cut traces a ROC curve. A class with fewer than ``min_per_class``
    calibration members or non-members uses the threshold fitted on all classes.
    """

    def fit(self, calibration: QueryOutputs, is_member: np.ndarray) -> ClassThresholdAttack:
        super().fit(calibration, is_member)
        values = self.sign * self.statistic(calibration)
        is_member = np.asarray(is_member, dtype=bool)
        global_threshold = fit_threshold(is_member, values)
        num_classes = calibration.probabilities.shape[-1]
        self.thresholds = np.full(num_classes, global_threshold)
        for label in range(num_classes):
            rows = calibration.labels == label
            members, non_members = int(is_member[rows].sum()), int((~is_member[rows]).sum())
            if min(members, non_members) >= self.config.min_per_class:
                self.thresholds[label] = fit_threshold(is_member[rows], values[rows])
        return self

    def score(self, queries: QueryOutputs) -> np.ndarray:
        return self.sign * self.statistic(queries) - self.thresholds[queries.labels]
