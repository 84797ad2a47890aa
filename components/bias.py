"""Bias measurement: the paper's Definition 2 and the loss of Algorithm 1.

Partial bias of S with respect to attribute tau:  KL(D(tau) || P(tau)) = sum_v D(v) log(D(v) / P(v)),
where D is the prior and P the empirical distribution in S (natural log, nats). Values with D(v) = 0 add nothing;
a value with D(v) > 0 that S lacks gives +inf (S cannot represent the prior without new samples).
Total loss:  L_hat = 1/2 * sum_i KL(D(tau_i) || P(tau_i))^2   (Alg. 1, line 4).

Note the direction: Great Expectations' ``ExpectColumnKLDivergenceToBeLessThan`` computes KL(P || D), the reverse.

Several debiased attributes: a prior over them is a prior over their joint, so Algorithm 1 also measures the partial
bias of the combination (``joint_attribute``, e.g. ``superclass x inverted``): balanced marginals alone can hide a
spurious correlation. Whether an attribute still tells the label is measured by ``measure_dependence``: the mutual
information I(attribute; class) and the table P(attribute | superclass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from fairforget.components import names
from fairforget.components.config import ConfigBase
from fairforget.errors import ConfigError

JOINT_SEPARATOR = " x "  # the name of a combination of attributes: "superclass x inverted"
JOINT_VALUE_SEPARATOR = "|"  # its values: "small|yes"


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
        if (prior_vec < 0).any() or not np.isclose(prior_vec.sum(), 1.0, rtol=0.0, atol=1e-6):
            raise ConfigError(f"the prior of {attribute!r} must be probabilities that sum to 1, got "
                              f"{dict(zip(categories, prior_vec.round(6).tolist()))} (sum {prior_vec.sum():.6f}): "
                              "fix the prior")
        observed = attribute_distribution(manifest[attribute], categories)
        counts = observed * len(manifest)
        items.append(AttributeBias(attribute, categories, prior_vec, observed, np.rint(counts).astype(int),
                                   kl_divergence(prior_vec, observed)))
    return BiasReport(tuple(items), bias_loss([i.kl for i in items]))


# ------------------------------------------------------------------------------------ several attributes, jointly
def joint_attribute(attributes: Sequence[str]) -> str:
    """The name of the combination of ``attributes`` as a partial bias of its own: ``"superclass x inverted"``."""
    return JOINT_SEPARATOR.join(attributes)


def with_joint_column(manifest: pd.DataFrame, attributes: Sequence[str]) -> pd.DataFrame:
    """``manifest`` with a column ``joint_attribute(attributes)`` holding each row's values joined by ``|``
    (``"small|yes"``); the manifest itself when there are fewer than two attributes."""
    if len(attributes) < 2:
        return manifest
    missing = [a for a in attributes if a not in manifest.columns]
    if missing:
        raise ConfigError(f"attributes {missing} are not columns of the data; columns: {list(manifest.columns)}")
    values = manifest[attributes[0]].astype(str)
    for attribute in attributes[1:]:
        values = values + JOINT_VALUE_SEPARATOR + manifest[attribute].astype(str)
    return manifest.assign(**{joint_attribute(attributes): values})


def mutual_information(first: Sequence | pd.Series, second: Sequence | pd.Series) -> float:
    """I(first; second) in nats from two aligned samples of categorical values (the plug-in estimate, as
    ``sklearn.metrics.mutual_info_score``): 0 exactly when the empirical joint is the product of its marginals."""
    table = pd.crosstab(pd.Series(first).astype(str).to_numpy(), pd.Series(second).astype(str).to_numpy())
    return mutual_information_of_table(table.to_numpy(dtype=np.float64))


def mutual_information_of_table(table: np.ndarray) -> float:
    """I(rows; columns) in nats of a (R, C) table of non-negative counts or probabilities."""
    joint = np.asarray(table, dtype=np.float64)
    joint = joint / joint.sum()
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float(max(0.0, np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero]))))


@dataclass(frozen=True)
class AttributeDependence:
    """How much one debiased attribute tells about the label.

    ``mutual_information``: I(attribute; label) in nats (0 = independent). ``table``: P(attribute | group), one row
    per group value (the superclasses), one column per attribute value, rows summing to 1. ``counts``: the same
    table in samples.
    """

    attribute: str
    mutual_information: float
    table: pd.DataFrame
    counts: pd.DataFrame


@dataclass(frozen=True)
class DependenceReport:
    """``attributes``: one ``AttributeDependence`` per debiased attribute the label does not determine."""

    attributes: tuple[AttributeDependence, ...]
    label: str
    group: str

    def mutual_information(self, attribute: str) -> float:
        return self.by_name(attribute).mutual_information

    def by_name(self, attribute: str) -> AttributeDependence:
        for item in self.attributes:
            if item.attribute == attribute:
                return item
        raise KeyError(f"no dependence measured for {attribute!r}; measured: {[a.attribute for a in self.attributes]}")

    def as_metrics(self, when: str) -> dict[str, float]:
        """``{bias/mi/<attribute>/<when>: I(attribute; label)}``, ``when`` being e.g. ``before`` or ``after``."""
        return {f"{names.MI_PREFIX}/{a.attribute}/{when}": a.mutual_information for a in self.attributes}

    def table(self) -> pd.DataFrame:
        """One row per (attribute, group value, attribute value): count and proportion within the group."""
        rows = []
        for a in self.attributes:
            for group_value in a.table.index:
                for value in a.table.columns:
                    rows.append({"attribute": a.attribute, self.group: str(group_value), "value": str(value),
                                 "count": int(a.counts.loc[group_value, value]),
                                 "proportion": float(a.table.loc[group_value, value]),
                                 "mutual_information": a.mutual_information})
        return pd.DataFrame(rows)


def determined_by(manifest: pd.DataFrame, attribute: str, label: str) -> bool:
    """True when every value of ``label`` comes with a single value of ``attribute`` (superclass given the class)."""
    return bool((manifest.groupby(manifest[label].astype(str))[attribute].nunique() <= 1).all())


def measure_dependence(manifest: pd.DataFrame, attributes: Sequence[str], *, label: str = "class_name",
                       group: str = "superclass") -> DependenceReport:
    """The dependence between each debiased attribute and the label (see ``AttributeDependence``).

    Args:
        manifest: one row per sample, with the columns ``attributes``, ``label`` and ``group``.
        attributes: the debiased attributes. Those the label determines (``superclass``, a function of the class)
            are left out: their dependence on the label is total by construction, not a bias.
        label: the column the classifier predicts.
        group: the rows of the conditional tables (``superclass``: "83% of small are inverted").

    Returns:
        A ``DependenceReport``; ``as_metrics("before")`` gives ``bias/mi/<attribute>/before``.

    Raises:
        ConfigError: an empty manifest or a column it lacks.
    """
    if len(manifest) == 0:
        raise ConfigError("cannot measure the dependence in an empty data set")
    missing = [c for c in (*attributes, label, group) if c not in manifest.columns]
    if missing:
        raise ConfigError(f"columns {missing} are not in the data; columns: {list(manifest.columns)}")
    items = []
    for attribute in attributes:
        if attribute in (label, group) or determined_by(manifest, attribute, label):
            continue
        counts = pd.crosstab(manifest[group].astype(str), manifest[attribute].astype(str))
        table = counts.div(counts.sum(axis=1), axis=0)
        items.append(AttributeDependence(attribute, mutual_information(manifest[attribute], manifest[label]),
                                         table, counts))
    return DependenceReport(tuple(items), label, group)
