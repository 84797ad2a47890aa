"""Metric-based attacks with class-dependent thresholds (Song & Mittal, USENIX Security 2021, Sec. 3).

All read the prediction vector p (K,) of the un-augmented image with its true label y:
- ``confidence``: p_y (high means member);
- ``entropy``: H(p) = -sum_k p_k log p_k (low means member);
- ``modified_entropy``: Mentr(p, y) = -(1 - p_y) log p_y - sum_{k != y} p_k log(1 - p_k) (low means member);
  unlike the entropy it is large for confident *wrong* predictions.
Each class gets its own threshold, fitted on the calibration samples of that class.
"""

from __future__ import annotations

import numpy as np

from fairforget.components.mia.base import ClassThresholdAttack
from fairforget.components.mia.queries import QueryOutputs

_EPS = 1e-30


class ConfidenceAttack(ClassThresholdAttack):
    name = "confidence"
    higher_is_member = True

    def statistic(self, queries: QueryOutputs) -> np.ndarray:
        return queries.true_class_probability[:, 0]


class EntropyAttack(ClassThresholdAttack):
    name = "entropy"
    higher_is_member = False

    def statistic(self, queries: QueryOutputs) -> np.ndarray:
        p = queries.probabilities[:, 0]
        return -np.sum(p * np.log(np.maximum(p, _EPS)), axis=1)


class ModifiedEntropyAttack(ClassThresholdAttack):
    name = "modified_entropy"
    higher_is_member = False

    def statistic(self, queries: QueryOutputs) -> np.ndarray:
        p = queries.probabilities[:, 0]
        is_true = queries.labels[:, None] == np.arange(p.shape[1])
        p_true = p[is_true]
        true_term = -(1.0 - p_true) * np.log(np.maximum(p_true, _EPS))
        other_terms = -np.sum(np.where(is_true, 0.0, p * np.log(np.maximum(1.0 - p, _EPS))), axis=1)
        return true_term + other_terms
