"""Bias measurement: the paper's Definition 2 and the loss of Algorithm 1.

Partial bias of S with respect to attribute tau:  KL(D(tau) || P(tau)) = sum_v D(v) log(D(v) / P(v)),
where D is the prior and P the empirical distribution in S (natural log, nats). Values with D(v) = 0 add nothing;
a value with D(v) > 0 that S lacks gives +inf (S cannot represent the prior without new samples).
Total loss:  L_hat = 1/2 * sum_i KL(D(tau_i) || P(tau_i))^2   (Alg. 1, line 4).

Note the direction: Great Expectations' ``ExpectColumnKLDivergenceToBeLessThan`` computes KL(P || D), the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from fairforget.components.config import ConfigBase
from fairforget.errors import ConfigError


@dataclass(frozen=True)
class BalanceConfig(ConfigBase):
    """What "balanced" means: the debiased attributes, their prior, the EDA for the rest, and the threshold."""

    attributes: tuple[str, ...] = ("superclass",)
    prior: str = "uniform"
    structure: str = "mimic"
    rho: float = 0.01

    def validate(self) -> None:
        if self.rho <= 0:
            raise ConfigError(f"rho must be positive, got {self.rho}: it is the KL threshold below which data is balanced")
        if not self.attributes:
            raise ConfigError("attributes is empty: name at least one attribute to debias, e.g. superclass")


def attribute_distribution(values: Sequence | pd.Series, categories: Sequence[str]) -> np.ndarray:
    """Empirical distribution P(tau), float64 (K,) over ``categories`` (in their order), summing to 1.

    Raises ``ValueError`` for an empty input or a value outside ``categories``.
    """
    values = pd.Series(values).astype(str)
    if len(values) == 0:
        raise ConfigError("cannot measure the distribution of an empty data set")
    unknown = sorted(set(values) - set(map(str, categories)))
    if unknown:
        raise ConfigError(f"values {unknown[:5]} are not among the categories {list(categories)}")
    counts = values.value_counts().reindex(list(map(str, categories)), fill_value=0).to_numpy(dtype=np.float64)
    return counts / counts.sum()


def kl_divergence(prior: np.ndarray, observed: np.ndarray) -> float:
    """KL(prior || observed) in nats for two distributions over the same K categories (shape (K,))."""
    prior = np.asarray(prior, dtype=np.float64)
    observed = np.asarray(observed, dtype=np.float64)
    if prior.shape != observed.shape:
        raise ConfigError(f"distributions differ in shape: {prior.shape} vs {observed.shape}")
    support = prior > 0
    if np.any(observed[support] <= 0):
        return float("inf")
    return float(np.sum(prior[support] * np.log(prior[support] / observed[support])))


def bias_loss(partial_biases: Sequence[float]) -> float:
    """L_hat = 1/2 * sum_i KL_i^2 (Alg. 1, line 4)."""
    return 0.5 * float(np.sum(np.square(np.asarray(partial_biases, dtype=np.float64))))


@dataclass(frozen=True)
class AttributeBias:
    """One attribute's prior D, observed P (both (K,) over ``categories``), and KL(D || P)."""

    attribute: str
    categories: tuple[str, ...]
    prior: np.ndarray
    observed: np.ndarray
    counts: np.ndarray
    kl: float


@dataclass(frozen=True)
class BiasReport:
    """Per-attribute partial biases and the total loss ``loss`` = L_hat."""

    attributes: tuple[AttributeBias, ...]
    loss: float

    def kl(self, attribute: str) -> float:
        return self.by_name(attribute).kl

    def by_name(self, attribute: str) -> AttributeBias:
        for item in self.attributes:
            if item.attribute == attribute:
                return item
        raise KeyError(f"attribute {attribute!r} was not measured; measured: {[a.attribute for a in self.attributes]}")

    def is_balanced(self, rho: float) -> bool:
        """B(S, D) < rho, with B the largest partial bias (the stopping test of Alg. 1, line 7)."""
        return max(a.kl for a in self.attributes) < rho

    def as_metrics(self, prefix: str = "bias") -> dict[str, float]:
        """``{bias/kl/<attribute>: KL, bias/loss: L_hat}``."""
        metrics = {f"{prefix}/kl/{a.attribute}": a.kl for a in self.attributes}
        metrics[f"{prefix}/loss"] = self.loss
        return metrics

    def table(self) -> pd.DataFrame:
        """One row per (attribute, value): count, observed, prior."""
        rows = []
        for a in self.attributes:
            for value, count, obs, pri in zip(a.categories, a.counts, a.observed, a.prior):
                rows.append({"attribute": a.attribute, "value": value, "count": int(count),
                             "observed": float(obs), "prior": float(pri), "kl": a.kl})
        return pd.DataFrame(rows)


def measure_bias(manifest: pd.DataFrame, priors: Mapping[str, Mapping[str, float]]) -> BiasReport:
    """Partial bias of each attribute in ``priors`` and the total loss (the paper's Definition 2, Alg. 1 line 4).

    Args:
        manifest: one row per sample of S with a column per attribute.
        priors: attribute -> {value: probability} (``TargetDistribution.priors()``); values of the data missing
            from a prior get prior probability 0.

    Returns:
        A ``BiasReport``: KL(D || P) per attribute (natural log) and L_hat = 1/2 sum KL^2; ``as_metrics()`` gives
        ``bias/kl/<attribute>`` and ``bias/loss``.

    Raises:
        ConfigError: an attribute is not a column, or a prior does not sum to 1.
    """
    items = []
    for attribute, prior in priors.items():
        if attribute not in manifest.columns:
            raise ConfigError(f"attribute {attribute!r} is not a column of the data; columns: {list(manifest.columns)}")
        categories = tuple(sorted(set(map(str, prior)) | set(manifest[attribute].astype(str))))
        prior_vec = np.array([float(prior.get(c, 0.0)) for c in categories])
        observed = attribute_distribution(manifest[attribute], categories)
        counts = observed * len(manifest)
        items.append(AttributeBias(attribute, categories, prior_vec, observed, np.rint(counts).astype(int),
                                   kl_divergence(prior_vec, observed)))
    return BiasReport(tuple(items), bias_loss([i.kl for i in items]))
