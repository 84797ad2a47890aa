"""The Moments attack of Yu et al. (AAAI 2021, Sec. 4.2): a small network on the moments of the N losses.

Features: m_k = (mean_t l_t^k)^(1/k) for k = 1..K (K = 20), computed in the log domain so that large k cannot
overflow; they go through log(m_k + 1e-12) and a standardisation fitted on the calibration split, then into an MLP
with tanh units (20 inputs, two hidden layers of 20, one output: Yu et al.'s 20-20-20-1) trained on the
calibration members and non-members. The score is the MLP's member probability.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from fairforget.components.mia.config import AuditConfig
from fairforget.components.mia.queries import QueryOutputs
from fairforget.errors import ConfigError


def loss_moments(losses: np.ndarray, max_order: int = 20) -> np.ndarray:
    """float64 (N, max_order): m_k = (mean_t l_t^k)^(1/k), k = 1..max_order, for losses (N, T) >= 0."""
    losses = np.asarray(losses, dtype=np.float64)
    if (losses < 0).any():
        raise ConfigError("losses must be non-negative")
    with np.errstate(divide="ignore"):
        log_losses = np.log(losses)  # log 0 = -inf, handled by logsumexp
    orders = np.arange(1, max_order + 1, dtype=np.float64)
    log_mean_power = logsumexp(orders[None, :, None] * log_losses[:, None, :], axis=2) - np.log(losses.shape[1])
    return np.exp(log_mean_power / orders[None, :])


class MomentsAttack:
    name = "moments"

    def __init__(self, config: AuditConfig) -> None:
        self.config = config

    def _features(self, queries: QueryOutputs) -> np.ndarray:
        return np.log(loss_moments(queries.losses, self.config.moments_max_order) + 1e-12)

    def fit(self, calibration: QueryOutputs, is_member: np.ndarray) -> MomentsAttack:
        features = self._features(calibration)
        self.mean = features.mean(axis=0)
        self.scale = features.std(axis=0) + 1e-9
        self.model = MLPClassifier(hidden_layer_sizes=tuple(self.config.moments_hidden), activation="tanh",
                                   max_iter=self.config.moments_max_iter, random_state=self.config.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit((features - self.mean) / self.scale, np.asarray(is_member, dtype=int))
        return self

    def score(self, queries: QueryOutputs) -> np.ndarray:
        return self.model.predict_proba((self._features(queries) - self.mean) / self.scale)[:, 1]
