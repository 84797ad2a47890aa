"""RMIA, offline (Zarifzadeh et al., "Low-Cost High-Power Membership Inference Attacks", ICML 2024).

The likelihood ratio of x is ratio(x) = Pr(x | theta) / Pr(x), where Pr(x | theta) is the target's probability of
the true label (averaged over the N fixed augmentations) and Pr(x) the same quantity under reference models that
never saw x. Offline, only OUT reference models exist, and Pr(x) is extrapolated linearly to the IN/OUT mixture:
Pr(x) = (1 + a)/2 * Pr_OUT(x) + (1 - a)/2 (their Sec. 4 / App. B.2.2). The score of x is the fraction of population
samples z with ratio(x) / ratio(z) > gamma.

Here the reference models train on one half of the audit pool (``train_reference_models``), and the population z
are the *calibration* non-members (never trained on by the target, nor by the reference models), so evaluation
samples never enter their own comparison. ``a`` is fitted on the calibration split (largest AUC over a grid) unless
``AuditConfig.rmia_offline_a`` fixes it. With one fixed population the score is a monotone function of ratio(x),
so the ROC equals that of the ratio itself; the population comparison makes the score a calibrated fraction.
"""

from __future__ import annotations

import numpy as np

from fairforget.components.mia.config import AuditConfig
from fairforget.components.mia.metrics import roc_auc
from fairforget.components.mia.queries import QueryOutputs
from fairforget.errors import ConfigError

A_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


class RmiaAttack:
    name = "rmia"

    def __init__(self, config: AuditConfig) -> None:
        self.config = config

    @staticmethod
    def _probabilities(queries: QueryOutputs) -> tuple[np.ndarray, np.ndarray]:
        """(Pr(x | theta) (N,), Pr_OUT(x) (N,)): true-label probability averaged over augmentations (and models)."""
        if queries.reference_probabilities is None or len(queries.reference_probabilities) == 0:
            raise ConfigError("rmia needs at least one reference model: pass reference_predicts=train_reference_models(...)"
                              " or drop 'rmia' from the attacks")
        target = queries.true_class_probability.mean(axis=1)
        labels = queries.labels[None, :, None, None]
        reference = np.take_along_axis(queries.reference_probabilities, np.broadcast_to(
            labels, queries.reference_probabilities.shape[:3] + (1,)), axis=3)[..., 0]
        return target, reference.mean(axis=(0, 2))

    def _ratio(self, target: np.ndarray, reference_out: np.ndarray, a: float) -> np.ndarray:
        return target / ((1.0 + a) / 2.0 * reference_out + (1.0 - a) / 2.0)

    def _score(self, target: np.ndarray, reference_out: np.ndarray, a: float, population_ratio: np.ndarray) -> np.ndarray:
        ratio = self._ratio(target, reference_out, a)
        # count of z with ratio(z) < ratio(x) / gamma, i.e. ratio(x) / ratio(z) > gamma
        return np.searchsorted(population_ratio, ratio / self.config.rmia_gamma, side="left") / len(population_ratio)

    def fit(self, calibration: QueryOutputs, is_member: np.ndarray) -> RmiaAttack:
        is_member = np.asarray(is_member, dtype=bool)
        target, reference_out = self._probabilities(calibration)
        self.population = (target[~is_member], reference_out[~is_member])
        grid = A_GRID if self.config.rmia_offline_a is None else (self.config.rmia_offline_a,)
        best_auc = -1.0
        for a in grid:
            population_ratio = np.sort(self._ratio(*self.population, a))
            auc = roc_auc(is_member, self._score(target, reference_out, a, population_ratio))
            if auc > best_auc:
                best_auc, self.a, self.population_ratio = auc, float(a), population_ratio
        return self

    def score(self, queries: QueryOutputs) -> np.ndarray:
        target, reference_out = self._probabilities(queries)
        return self._score(target, reference_out, self.a, self.population_ratio)
