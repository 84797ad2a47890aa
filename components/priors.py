"""Priors D and full target distributions for debiasing (the paper's Section III-B).

Two questions, two parameters:

1. *What should the debiased attributes look like?* (``prior``)
   - ``uniform``: every value of each debiased attribute equally likely (the default; 50/50 superclasses).
   - explicit proportions: ``"superclass=accessories:0.5,apparel:0.5"`` (several attributes separated by ``;``),
     or a path to a JSON/YAML file ``{attribute: {value: probability}}``.
   - ``umda``, ``mimic``, ``cga``: the prior is *estimated* by that estimation-of-distribution algorithm from a
     population sample believed to be unbiased (the data set's balanced ``reference`` split), for when the true D
     is unknown, as the paper proposes.
2. *How do the other attributes (the class, ...) depend on the debiased ones?* (``structure``)
   An EDA fitted on the private set S models that dependency, so that fixing the prior of the debiased attribute
   yields a full target over attribute combinations: ``D(a, rest) = D(a) * M_S(rest | a)``. With ``mimic`` (the
   default) the chain ``p(superclass) p(class | superclass)`` keeps the original within-superclass proportions,
   which is what the paper does when it generates vehicles "which follow the original subclasses distribution".
   ``umda`` (product of marginals) cannot represent that dependency: it keeps the class marginal of S and spreads mass
   over impossible combinations, which ``build_target`` then drops (combinations that never occur in S) and
   renormalises. ``cga`` learns the same univariate model as UMDA with the compact-GA update rule.

Several debiased attributes (``attributes=superclass,inverted``): a prior over several attributes is a prior over
their joint. Unless the prior says otherwise (an EDA fitted on the reference split carries the population's own
dependence), it is the product of the marginals: the attributes independent of each other and of the class, so
that a spurious correlation in S (83% of "small" inverted, 83% of "big" not) is not carried into the target. The
product is restricted to the combinations S contains and fitted to every marginal by raking (``rake_joint``,
iterative proportional fitting), which keeps S's class proportions within each group. Reweighting one attribute
after the other would not do: the second step undoes the first whenever the attributes are correlated in S.

The EDAs here are the probabilistic models of UMDA, MIMIC and cGA, *fitted* to a sample (selection = the whole
sample); they are not run as black-box optimisers, since there is no fitness function to optimise in this use.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from fairforget.components.bias import JOINT_VALUE_SEPARATOR
from fairforget.errors import ConfigError

CLASS_COLUMN = "class_name"


# ---------------------------------------------------------------------------------------------------- EDA models
class DistributionModel:
    """A fitted distribution over records of categorical variables."""

    variables: list[str]
    domains: dict[str, list[str]]

    def probability(self, records: pd.DataFrame) -> np.ndarray:  # pragma: no cover - interface
        """float64 (N,) probability of each record (one column per variable)."""
        raise NotImplementedError

    def joint(self) -> pd.DataFrame:
        """Every combination of the variables' values with its probability (column ``probability``)."""
        combos = pd.DataFrame(list(itertools.product(*[self.domains[v] for v in self.variables])),
                              columns=self.variables)
        combos["probability"] = self.probability(combos)
        return combos


def _domains(records: pd.DataFrame, variables: Sequence[str]) -> dict[str, list[str]]:
    return {v: sorted(records[v].astype(str).unique()) for v in variables}


def _marginal(column: pd.Series, domain: Sequence[str]) -> np.ndarray:
    counts = column.astype(str).value_counts().reindex(list(domain), fill_value=0).to_numpy(dtype=np.float64)
    return counts / counts.sum()


class UMDA(DistributionModel):
    """Univariate marginal distribution algorithm (Muhlenbein & Paass 1996): p(x) = prod_k p(x_k)."""

    def __init__(self, records: pd.DataFrame, variables: Sequence[str]):
        self.variables = list(variables)
        self.domains = _domains(records, self.variables)
        self.marginals = {v: _marginal(records[v], self.domains[v]) for v in self.variables}

    def probability(self, records: pd.DataFrame) -> np.ndarray:
        prob = np.ones(len(records))
        for v in self.variables:
            index = {value: i for i, value in enumerate(self.domains[v])}
            prob *= np.array([self.marginals[v][index[x]] if x in index else 0.0 for x in records[v].astype(str)])
        return prob


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _conditional_table(records: pd.DataFrame, child: str, parent: str, domains) -> np.ndarray:
    """p(child | parent), shape (|parent|, |child|); rows without data fall back to the child's marginal."""
    table = pd.crosstab(records[parent].astype(str), records[child].astype(str))
    table = table.reindex(index=domains[parent], columns=domains[child], fill_value=0).to_numpy(dtype=np.float64)
    marginal = _marginal(records[child], domains[child])
    sums = table.sum(axis=1, keepdims=True)
    return np.where(sums > 0, table / np.maximum(sums, 1), marginal)


def _conditional_entropy(records: pd.DataFrame, child: str, parent: str, domains) -> float:
    """H(child | parent) in nats."""
    parent_marginal = _marginal(records[parent], domains[parent])
    table = _conditional_table(records, child, parent, domains)
    return float(sum(pm * _entropy(row) for pm, row in zip(parent_marginal, table)))


class MIMIC(DistributionModel):
    """MIMIC (De Bonet, Isbell & Viola 1997): a chain p(x_1) prod_k p(x_k | x_{k-1}).

    The order is greedy: the variable of least entropy first, then each next the one with the least conditional
    entropy given the previous. ``first`` forces the head of the chain (the debiased attribute, so that its
    prior can be swapped in).
    """

    def __init__(self, records: pd.DataFrame, variables: Sequence[str], first: str | None = None):
        self.variables = list(variables)
        self.domains = _domains(records, self.variables)
        remaining = list(self.variables)
        head = first if first is not None else min(
            remaining, key=lambda v: _entropy(_marginal(records[v], self.domains[v])))
        self.order = [head]
        remaining.remove(head)
        while remaining:
            nxt = min(remaining, key=lambda v: _conditional_entropy(records, v, self.order[-1], self.domains))
            self.order.append(nxt)
            remaining.remove(nxt)
        self.head_marginal = _marginal(records[head], self.domains[head])
        self.links = [
            (parent, child, _conditional_table(records, child, parent, self.domains))
            for parent, child in zip(self.order, self.order[1:])
        ]

    def probability(self, records: pd.DataFrame) -> np.ndarray:
        index = {v: {value: i for i, value in enumerate(self.domains[v])} for v in self.variables}
        head = self.order[0]
        prob = np.array([self.head_marginal[index[head][x]] if x in index[head] else 0.0
                         for x in records[head].astype(str)])
        for parent, child, table in self.links:
            rows = [index[parent].get(x) for x in records[parent].astype(str)]
            cols = [index[child].get(x) for x in records[child].astype(str)]
            prob *= np.array([table[r, c] if r is not None and c is not None else 0.0 for r, c in zip(rows, cols)])
        return prob


class CompactGA(UMDA):
    """Compact genetic algorithm (Harik, Lobo & Goldberg 1999) as an estimator of univariate marginals.

    One probability vector per variable (over its one-hot encoding). Each round, a record drawn from the sample
    (the winner) and an individual drawn from the current vector (the loser) compete; the vector moves by
    ``p += (winner - loser) / n`` (n = virtual population size) and is renormalised. Its fixed point is the
    sample's marginals; the result is a smoothed, stochastic UMDA.
    """

    def __init__(self, records: pd.DataFrame, variables: Sequence[str], population_size: int = 200,
                 rounds: int = 20000, seed: int = 0):
        self.variables = list(variables)
        self.domains = _domains(records, self.variables)
        rng = np.random.default_rng(seed)
        self.marginals = {}
        for v in self.variables:
            domain = self.domains[v]
            codes = pd.Categorical(records[v].astype(str), categories=domain).codes
            p = np.full(len(domain), 1.0 / len(domain))
            winners = codes[rng.integers(0, len(codes), size=rounds)]
            for winner in winners:
                loser = rng.choice(len(domain), p=p)
                if winner != loser:
                    p[winner] += 1.0 / population_size
                    p[loser] -= 1.0 / population_size
                    p = np.clip(p, 1e-6, None)
                    p /= p.sum()
            self.marginals[v] = p


EDA_MODELS: dict[str, Callable[..., DistributionModel]] = {
    "umda": lambda records, variables, first=None, seed=0: UMDA(records, variables),
    "mimic": lambda records, variables, first=None, seed=0: MIMIC(records, variables, first=first),
    "cga": lambda records, variables, first=None, seed=0: CompactGA(records, variables, seed=seed),
}


def fit_eda(name: str, records: pd.DataFrame, variables: Sequence[str], first: str | None = None,
            seed: int = 0) -> DistributionModel:
    """Fit the EDA model ``name`` (``umda``, ``mimic`` or ``cga``) to ``records``' columns ``variables``."""
    if name not in EDA_MODELS:
        raise ConfigError(f"unknown EDA {name!r}; known: {', '.join(sorted(EDA_MODELS))}")
    return EDA_MODELS[name](records, variables, first=first, seed=seed)


# --------------------------------------------------------------------------------------------- target distribution
@dataclass(frozen=True)
class TargetDistribution:
    """The full target D over attribute combinations that Algorithm 1 aims at.

    ``joint``: one row per combination of ``attributes`` + ``class_name`` that occurs in S, with column
    ``probability`` (sums to 1). ``priors()`` gives the per-attribute marginals for ``measure_bias``.
    """

    attributes: tuple[str, ...]
    joint: pd.DataFrame
    description: str

    def marginal(self, attribute: str) -> dict[str, float]:
        grouped = self.joint.groupby(attribute)["probability"].sum()
        return {str(k): float(v) for k, v in grouped.items()}

    def priors(self) -> dict[str, dict[str, float]]:
        """{attribute: {value: probability}} for each debiased attribute."""
        return {a: self.marginal(a) for a in self.attributes}

    def attribute_joint(self) -> dict[str, float]:
        """D over the combinations of the debiased attributes, each keyed by its values joined with ``|`` in the
        order of ``attributes`` (``{"big|no": 0.25, ...}``, as ``bias.with_joint_column`` writes them)."""
        grouped = self.joint.groupby(list(self.attributes))["probability"].sum()
        return {JOINT_VALUE_SEPARATOR.join(map(str, key if isinstance(key, tuple) else (key,))): float(v)
                for key, v in grouped.items()}


def parse_explicit_prior(spec: str | Mapping) -> dict[str, dict[str, float]]:
    """Parse ``"attr=v1:0.5,v2:0.5;attr2=..."``, a JSON/YAML file path, or a mapping; check sums and ranges."""
    if isinstance(spec, Mapping):
        parsed = {str(a): {str(k): float(p) for k, p in values.items()} for a, values in spec.items()}
    elif Path(spec).suffix.lower() in {".json", ".yaml", ".yml"}:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"prior file {spec} does not exist: give an existing JSON/YAML file")
        text = path.read_text()
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
        return parse_explicit_prior(raw)
    else:
        parsed = {}
        for part in filter(None, (p.strip() for p in str(spec).split(";"))):
            if "=" not in part:
                raise ConfigError(f"cannot read prior {part!r}: write it as attribute=value:prob,value:prob")
            attribute, values = part.split("=", 1)
            parsed[attribute.strip()] = {}
            for item in values.split(","):
                if ":" not in item:
                    raise ConfigError(f"cannot read prior entry {item!r}: write it as value:probability")
                value, prob = item.rsplit(":", 1)
                parsed[attribute.strip()][value.strip()] = float(prob)
    for attribute, values in parsed.items():
        bad = {v: p for v, p in values.items() if not 0 <= p <= 1}
        if bad:
            raise ConfigError(f"prior of {attribute!r} has probabilities outside [0, 1]: {bad}")
        total = sum(values.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"prior of {attribute!r} sums to {total:.6g}, not 1: fix the proportions")
    return parsed


PRIOR_KINDS = ("uniform", "umda", "mimic", "cga")


# ------------------------------------------------------------------------------------------------------- raking
def rake_joint(seed: pd.DataFrame, marginals: Mapping[str, Mapping[str, float]], *, tolerance: float = 1e-9,
               max_sweeps: int = 2000) -> pd.DataFrame:
    """Fit ``seed`` to ``marginals`` by raking (iterative proportional fitting, Deming & Stephan 1940).

    Each sweep rescales, for one variable after the other, the cells of each value so that the variable's marginal
    is met; sweeps repeat until every marginal is within ``tolerance``.

    Args:
        seed: one row per allowed combination, a column per variable (values as str) and a non-negative
            ``probability`` (any scale). Combinations absent from it, or with probability 0, stay impossible.
        marginals: variable -> {value: probability}, each summing to 1; values not listed get probability 0.
            Variables of ``seed`` not named here are not raked.
        tolerance: the largest absolute difference allowed between a fitted and a wanted marginal probability.
        max_sweeps: the most sweeps before giving up.

    Returns:
        A copy of ``seed`` whose ``probability`` sums to 1 and meets every marginal within ``tolerance``. It is
        the distribution with those marginals on the seed's support closest to the seed (the I-projection,
        minimising KL(Q || seed)): every cell is the seed times one factor per raked variable's value, so the seed's
        proportions within each combination of the raked variables (the classes within a superclass) and its
        interactions (odds ratios) are kept. A seed that already meets the marginals is returned unchanged.

    Raises:
        ConfigError: a variable or column is missing, a marginal gives probability to a value no combination of the
            seed has, or no distribution on the seed's support meets all the marginals at once (e.g. 50% inverted
            when only the 20% "small" samples are ever inverted), which raking shows by not converging.
    """
    if "probability" not in seed.columns:
        raise ConfigError(f"the seed of raking needs a 'probability' column; it has {list(seed.columns)}")
    missing = [v for v in marginals if v not in seed.columns]
    if missing:
        raise ConfigError(f"cannot rake {missing}: not columns of the seed {list(seed.columns)}")
    weights = seed["probability"].to_numpy(dtype=np.float64).copy()
    if np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise ConfigError("the seed of raking needs non-negative, finite probabilities with a positive sum")
    weights /= weights.sum()
    fitted = []  # (variable, codes (N,), wanted (K,), values)
    for variable, wanted in marginals.items():
        values = sorted(set(map(str, wanted)) | set(seed[variable].astype(str)))
        codes = pd.Categorical(seed[variable].astype(str), categories=values).codes
        target = np.array([float(wanted.get(v, 0.0)) for v in values])
        if abs(target.sum() - 1.0) > 1e-6:
            raise ConfigError(f"the marginal of {variable!r} sums to {target.sum():.6g}, not 1: fix the proportions")
        carried = np.bincount(codes, weights=weights, minlength=len(values))
        lacking = [v for v, t, c in zip(values, target, carried) if t > 0 and c <= 0]
        if lacking:
            raise ConfigError(f"the prior asks for {variable}={lacking}, which no combination of the data has: "
                              "drop it from the prior or add data that has it")
        fitted.append((variable, codes, target, values))

    def worst_gap() -> tuple[float, str, str, float, float]:
        gaps = []
        for variable, codes, target, values in fitted:
            current = np.bincount(codes, weights=weights, minlength=len(values))
            k = int(np.argmax(np.abs(current - target)))
            gaps.append((float(abs(current[k] - target[k])), variable, values[k], float(current[k]), float(target[k])))
        return max(gaps) if gaps else (0.0, "", "", 0.0, 0.0)

    gap = worst_gap()
    for _ in range(max_sweeps):
        if gap[0] <= tolerance:
            break
        for _variable, codes, target, values in fitted:
            current = np.bincount(codes, weights=weights, minlength=len(values))
            factor = np.divide(target, current, out=np.zeros_like(target), where=current > 0)
            weights = weights * factor[codes]
        gap = worst_gap()
    if gap[0] > tolerance:
        _, variable, value, current, target = gap
        raked = [v for v, *_ in fitted]
        raise ConfigError(f"the prior cannot be met on the combinations of {raked} the data has: after {max_sweeps} "
                          f"raking sweeps P({variable}={value}) is {current:.4g}, not {target:.4g}"
                          f"{_missing_combinations(seed, raked)}: relax the prior or add data with those combinations")
    out = seed.copy()
    out["probability"] = weights / weights.sum()
    return out


def _missing_combinations(seed: pd.DataFrame, variables: Sequence[str], shown: int = 3) -> str:
    """`` (the data has no a=x with b=y, ...)`` for the combinations of ``variables`` the seed lacks, or ''."""
    if len(variables) < 2:
        return ""
    seen = set(map(tuple, seed[list(variables)].astype(str).drop_duplicates().to_numpy()))
    domains = [sorted(seed[v].astype(str).unique()) for v in variables]
    lacking = [combo for combo in itertools.product(*domains) if combo not in seen]
    if not lacking:
        return ""
    text = "; ".join(" with ".join(f"{v}={x}" for v, x in zip(variables, combo)) for combo in lacking[:shown])
    return f" (the data has no {text}{'; ...' if len(lacking) > shown else ''})"


def independent_seed(records: pd.DataFrame, attributes: Sequence[str],
                     marginals: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """The default joint before raking: prod_i D(a_i) * P_S(class) on each combination of ``attributes`` + class
    that S contains (one row each, column ``probability``). The attributes are independent of each other and of
    the class; raking then brings back the class proportions within each group where a debiased attribute is a
    function of the class (the superclass)."""
    variables = list(attributes) + ([CLASS_COLUMN] if CLASS_COLUMN not in attributes else [])
    combos = records[variables].astype(str).drop_duplicates().reset_index(drop=True)
    probability = np.ones(len(combos))
    for attribute in attributes:
        shares = {str(k): float(p) for k, p in marginals[attribute].items()}
        probability *= combos[attribute].map(shares).fillna(0.0).to_numpy(dtype=np.float64)
    if CLASS_COLUMN not in attributes:
        class_share = records[CLASS_COLUMN].astype(str).value_counts(normalize=True)
        probability *= combos[CLASS_COLUMN].map(class_share).to_numpy(dtype=np.float64)
    return combos.assign(probability=probability)


def _marginal_of(joint: pd.DataFrame, attribute: str) -> dict[str, float]:
    """{value: probability} of ``attribute`` in a table with a ``probability`` column (normalised)."""
    grouped = joint.groupby(joint[attribute].astype(str))["probability"].sum()
    return {str(k): float(v) / float(grouped.sum()) for k, v in grouped.items()}


def _drop_unseen(joint: pd.DataFrame, records: pd.DataFrame, variables: Sequence[str]) -> pd.DataFrame:
    """Keep only the combinations that occur in S (the generator can only be asked for those)."""
    observed = set(map(tuple, records[list(variables)].drop_duplicates().to_numpy()))
    return joint[[tuple(row) in observed for row in joint[list(variables)].to_numpy()]].copy()


def build_target(train_manifest: pd.DataFrame, attributes: Sequence[str], *, prior: str | Mapping = "uniform",
                 structure: str = "mimic", reference_manifest: pd.DataFrame | None = None,
                 seed: int = 0) -> TargetDistribution:
    """Build the target D over combinations of ``attributes`` + ``class_name`` (see the module docstring).

    Args:
        train_manifest: S, one row per sample.
        attributes: the debiased attributes (columns of the manifest), e.g. ``["superclass"]`` or
            ``["superclass", "inverted"]``.
        prior: ``uniform``, an explicit ``"attr=value:p,..."`` string or mapping, a JSON/YAML file, or an EDA
            name (``umda``, ``mimic``, ``cga``) estimated from ``reference_manifest``. With several attributes a
            uniform or explicit prior gives the marginals (S's own for an attribute it leaves out) and the joint is
            their product, raked on S's combinations (``rake_joint``); an EDA prior gives the joint itself.
        structure: the EDA fitted on S that extends a single attribute's prior to the classes (``mimic`` keeps the
            original within-superclass class proportions). With several attributes it is not used: raking keeps
            S's class proportions within each group, and the attributes independent of the class.
        reference_manifest: the population sample EDA priors are estimated from.
        seed: for the stochastic EDAs.

    Returns:
        The ``TargetDistribution`` (``priors()`` per attribute, ``joint`` over attribute and class cells). Every
        marginal of ``priors()`` equals the prior's within 1e-9.

    Raises:
        ConfigError: an unknown prior or structure, an unknown attribute, a prior value S does not contain,
            proportions that do not sum to 1, or (several attributes) marginals that no distribution over the
            combinations S has can meet at once.
    """
    attributes = list(dict.fromkeys(attributes))
    variables = attributes + ([CLASS_COLUMN] if CLASS_COLUMN not in attributes else [])
    missing = [v for v in variables if v not in train_manifest.columns]
    if missing:
        raise ConfigError(f"attributes {missing} are not columns of the data; available: {list(train_manifest.columns)}")
    if structure not in EDA_MODELS:
        raise ConfigError(f"unknown structure {structure!r}; known: {', '.join(sorted(EDA_MODELS))}")

    records = train_manifest[variables].astype(str)
    several = len(attributes) > 1
    if isinstance(prior, str) and prior in EDA_MODELS:
        if reference_manifest is None:
            raise ConfigError(f"prior {prior!r} is estimated from the reference split: pass reference_manifest")
        population = reference_manifest[variables].astype(str)
        model = fit_eda(prior, population, variables, first=attributes[0] if attributes else None, seed=seed)
        joint = model.joint()
        description = f"{prior} fitted on the reference split"
        if several:
            # The EDA's joint is the prior, dependence included; cut to S's combinations it misses the EDA's own
            # marginals, so it is raked back to them.
            wanted = {a: _marginal_of(joint, a) for a in attributes}
            joint = rake_joint(_drop_unseen(joint, records, variables), wanted)
            description += "; raked to its marginals on the combinations S has"
    else:
        if isinstance(prior, str) and prior == "uniform":
            wanted = {a: {v: 1.0 / records[a].nunique() for v in sorted(records[a].unique())} for a in attributes}
            description = "uniform over " + ", ".join(attributes)
        elif isinstance(prior, str) and "=" not in prior and Path(prior).suffix.lower() not in {".json", ".yaml", ".yml"}:
            raise ConfigError(f"unknown prior {prior!r}; use one of {', '.join(PRIOR_KINDS)}, explicit proportions "
                              "like 'superclass=accessories:0.5,apparel:0.5', or a JSON/YAML file")
        else:
            wanted = parse_explicit_prior(prior)
            description = f"explicit {wanted}"
        for attribute, values in wanted.items():
            if attribute not in attributes:
                raise ConfigError(f"the prior names attribute {attribute!r}, which is not debiased; debiased: {attributes}")
            unknown = sorted(set(values) - set(records[attribute].unique()))
            if unknown:
                raise ConfigError(f"the prior asks for {attribute}={unknown}, which S does not contain; "
                                  f"known values: {sorted(records[attribute].unique())}")
        if several:
            # A prior over several attributes is a prior over their joint: the product of the marginals (S's own
            # for an attribute the prior leaves out), raked on S's combinations so that every marginal is met.
            wanted = {a: wanted.get(a, _marginal_of(records.assign(probability=1.0), a)) for a in attributes}
            joint = rake_joint(independent_seed(records, attributes, wanted), wanted)
            description += ("; joint = product of the marginals, raked on the combinations S has (class "
                            "proportions within each group as in S)")
        else:
            model = fit_eda(structure, records, variables, first=attributes[0] if attributes else None, seed=seed)
            joint = _drop_unseen(model.joint(), records, variables)
            # Swap S's distribution of the debiased attribute for the prior: D(a, rest) = D(a) * M_S(rest | a).
            for attribute, values in wanted.items():
                current = joint.groupby(attribute)["probability"].transform("sum").to_numpy()
                target = joint[attribute].map(values).fillna(0.0).to_numpy()
                joint["probability"] = np.where(current > 0, joint["probability"] / np.maximum(current, 1e-300)
                                                * target, 0.0)
            description += f"; structure {structure} fitted on S"

    joint = _drop_unseen(joint, records, variables)
    total = joint["probability"].sum()
    if total <= 0:
        raise ConfigError("the target distribution gives no mass to any combination present in S")
    joint["probability"] /= total
    joint = joint[joint["probability"] > 0].sort_values(variables).reset_index(drop=True)
    return TargetDistribution(tuple(attributes), joint, description)
