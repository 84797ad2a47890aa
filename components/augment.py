"""Algorithm 1 (augmentation with guided diffusion until balanced) and ``replenish`` for the unlearning loop.

Vocabulary. A *cell* is one combination of the generator's condition variables (``class_name`` and each extra
attribute of the data). The target D (``components.priors.TargetDistribution.joint``) gives each cell a
probability p_c; S has n_c samples in it. Since samples can only be added, the smallest data set that matches D
exactly has M = max_c n_c / p_c samples, and cell c may receive at most h_c = p_c * M - n_c new samples: its
*headroom*. Adding exactly the headroom reaches D; adding anything beyond it would overshoot.

Algorithm 1, as implemented (paper line numbers in brackets):
    [1] Lambda = P(tau): the distribution of S over the cells, parametrised by logits theta = log Lambda
    repeat, round r = 0, 1, ...:
      [4] L_hat = 1/2 * sum_i KL(D(tau_i) || P(tau_i))^2 on S; logged with the counts
      [7] stop when B(S, D) = max_i KL(D(tau_i) || P(tau_i)) < rho
      [6] theta <- theta - lambda * grad_theta L_hat(S u G(Lambda)) / ||grad||_inf: one normalised gradient step
          on the loss that S would have after adding a batch of size m_r distributed as Lambda (the expected
          counts n + m_r * Lambda, differentiated by autograd). The paper writes "+"; descending is what lowers
          the loss. The step is done before generating, so that the first batch is not drawn from the biased P.
      [5] S <- S u G(Lambda): m_r = min(round_size, remaining headroom) samples, split over the cells in
          proportion to Lambda but never beyond a cell's headroom (water-filling), generated with seed
          ``seed * 1000 + r`` and added with origin=synthetic.
    [8] return S*
Guarantees: no cell exceeds its headroom (no overshoot), so no more samples are added than the target needs; the
loop ends after at most ceil(total headroom / round_size) + 1 rounds; with ``round_size = 0`` (the default) one
round adds the whole headroom, which brings S to D up to rounding (on the default data: +2400 apparel images,
superclass KL 0.223 -> 0). A target that even the whole headroom would leave at a partial bias >= rho (S has samples
in cells D gives no probability, and samples are only ever added) is refused before anything is generated.

Several debiased attributes: their combination is a partial bias of its own (``bias/kl/superclass x inverted``), in
L_hat and in the stopping test, so the loop stops only when every marginal *and* the joint are within rho: balancing
the marginals alone can be done by adding the cells that strengthen a spurious correlation. The dependence of each
debiased attribute on the class (mutual information, ``bias.measure_dependence``) is reported before and after.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from fairforget.components.bias import (
    JOINT_VALUE_SEPARATOR,
    BiasReport,
    DependenceReport,
    joint_attribute,
    kl_divergence,
    measure_bias,
    measure_dependence,
    with_joint_column,
)
from fairforget.components.config import ConfigBase
from fairforget.components.dataset import Dataset
from fairforget.components.generator import CLASS_VARIABLE, Generator
from fairforget.errors import ConfigError

SYNTHETIC_COLUMNS = ("condition", "generator_version", "seed", "augment_round")


@dataclass(frozen=True)
class AugmentConfig(ConfigBase):
    """``rho``: stop when every partial bias is below it. ``step_size``: lambda of line 6. ``round_size``: the
    most synthetic samples per round (0 = the whole remaining headroom at once). ``guidance_scale``: None = the
    generator's default."""

    rho: float = 0.01
    step_size: float = 1.0
    round_size: int = 0
    max_rounds: int = 20
    guidance_scale: float | None = None
    seed: int = 0

    def validate(self) -> None:
        if not self.rho > 0:
            raise ConfigError(f"rho must be > 0, got {self.rho}: it is the KL threshold below which S counts as "
                              "balanced (0.01 in the paper's setting)")
        if self.step_size < 0:
            raise ConfigError(f"step_size (lambda) must be >= 0, got {self.step_size}")
        if self.round_size < 0:
            raise ConfigError(f"round_size must be >= 0 (0 = all at once), got {self.round_size}")
        if self.max_rounds < 1:
            raise ConfigError(f"max_rounds must be >= 1, got {self.max_rounds}")
        if self.guidance_scale is not None and self.guidance_scale < 0:
            raise ConfigError(f"guidance_scale must be >= 0, got {self.guidance_scale}")


# ------------------------------------------------------------------------------------------------ target cells
def target_cells(target, train: Dataset, generator: Generator) -> pd.DataFrame:
    """One row per cell: the generator's condition columns, ``probability`` p_c (sums to 1) and ``count`` n_c in S.

    Debiased attributes that are not condition variables must be functions of the class (e.g. ``superclass``);
    condition variables the target leaves out are spread by S's distribution given the target's columns.
    Raises ``ValueError`` when the target asks for an attribute or value the generator was not conditioned on.
    """
    space = generator.space
    joint = target.joint.copy()
    if "probability" not in joint.columns:
        raise ConfigError("the target's joint table lacks a 'probability' column")
    joint = joint[joint["probability"] > 0].reset_index(drop=True)
    manifest = train.manifest.copy()
    manifest[CLASS_VARIABLE] = [train.class_names[i] for i in train.labels]
    columns = [c for c in joint.columns if c != "probability"]
    if CLASS_VARIABLE not in columns:
        raise ConfigError(f"the target must give the class ({CLASS_VARIABLE!r}) of each combination; it has {columns}")
    # condition variables first: an unknown class is reported as such, not as an impossible pairing
    for column in sorted(columns, key=lambda c: c not in space.names):
        joint[column] = joint[column].astype(str)
        if column in space.names:
            known = space.values[space.names.index(column)]
            unknown = sorted(set(joint[column]) - set(known))
            if unknown:
                raise ConfigError(f"the prior asks for {column}={unknown}, which the generator was not conditioned "
                                  f"on (it knows {list(known)}): retrain the generator on data that has them")
            continue
        # A debiased attribute that is not a condition: it must follow from the class.
        if column not in manifest.columns:
            raise ConfigError(f"the prior names attribute {column!r}, which is neither a condition of the generator "
                              f"({list(space.names)}) nor a column of the data")
        per_class = manifest.groupby(CLASS_VARIABLE)[column].nunique()
        if (per_class > 1).any():
            raise ConfigError(f"the prior asks for attribute {column!r}, which the generator was not conditioned on "
                              f"and which the class does not determine: retrain the generator with {column!r} "
                              "among the data set's attributes")
        class_value = manifest.groupby(CLASS_VARIABLE)[column].first().astype(str)
        implied = joint[CLASS_VARIABLE].map(class_value)
        if (implied != joint[column]).any():
            bad = joint[implied != joint[column]].iloc[0]
            raise ConfigError(f"the target gives probability to {column}={bad[column]!r} with class "
                              f"{bad[CLASS_VARIABLE]!r}, which the data never pairs: fix the prior")
    conditions_in_target = [c for c in space.names if c in columns]
    missing = [c for c in space.names if c not in columns]
    cells = joint.groupby(conditions_in_target, as_index=False)["probability"].sum()
    if missing:
        # Spread each cell over S's distribution of the missing condition variables given the present ones.
        shares = (manifest.astype({c: str for c in space.names})
                  .groupby(conditions_in_target + missing).size().rename("n").reset_index())
        shares["share"] = shares["n"] / shares.groupby(conditions_in_target)["n"].transform("sum")
        cells = cells.merge(shares[conditions_in_target + missing + ["share"]], on=conditions_in_target, how="left")
        if cells["share"].isna().any():
            row = cells[cells["share"].isna()].iloc[0]
            raise ConfigError(f"the target asks for {dict(row[conditions_in_target])}, which S does not contain, "
                              f"so the values of {missing} cannot be inferred: give them in the target")
        cells["probability"] = cells["probability"] * cells["share"]
        cells = cells.drop(columns="share")
    cells = cells[list(space.names) + ["probability"]]
    cells["probability"] = cells["probability"] / cells["probability"].sum()
    counts = (manifest.astype({c: str for c in space.names}).groupby(list(space.names)).size().rename("count")
              .reset_index())
    cells = cells.merge(counts, on=list(space.names), how="outer")
    cells["probability"] = cells["probability"].fillna(0.0)
    cells["count"] = cells["count"].fillna(0).astype(np.int64)
    return cells.sort_values(list(space.names)).reset_index(drop=True)


def cell_headroom(cells: pd.DataFrame) -> np.ndarray:
    """int64 (C,): how many samples each cell may still receive (see the module docstring), rounded so that the
    total is the rounded total headroom."""
    p = cells["probability"].to_numpy(dtype=np.float64)
    n = cells["count"].to_numpy(dtype=np.float64)
    wanted = p > 0
    smallest_total = float(np.max(n[wanted] / p[wanted]))  # M, over the cells D wants (the rest cannot shrink)
    headroom = np.where(wanted, np.maximum(p * smallest_total - n, 0.0), 0.0)
    return largest_remainder(int(round(headroom.sum())), headroom)


def largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """int64 split of ``total`` proportional to non-negative ``weights`` (Hamilton's method; sums to ``total``)."""
    weights = np.asarray(weights, dtype=np.float64)
    if total <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), dtype=np.int64)
    exact = total * weights / weights.sum()
    out = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - out), kind="stable")
    out[order[: total - out.sum()]] += 1
    return out


def fill_within_caps(total: int, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """int64 split of ``total`` proportional to ``weights`` with cell k never above ``caps[k]`` (water-filling:
    what a capped cell cannot take goes to the others, by weight; by count where every weight left is 0)."""
    caps = np.asarray(caps, dtype=np.int64)
    total = min(int(total), int(caps.sum()))
    alloc = np.zeros(len(caps), dtype=np.int64)
    while alloc.sum() < total:
        open_ = alloc < caps
        w = np.where(open_, np.asarray(weights, dtype=np.float64), 0.0)
        if w.sum() <= 0:
            w = np.where(open_, (caps - alloc).astype(np.float64), 0.0)
        share = np.minimum(largest_remainder(total - int(alloc.sum()), w), caps - alloc)
        alloc += share
    return alloc


def bias_loss_torch(cells: pd.DataFrame, expected_counts: torch.Tensor, priors: dict[str, dict[str, float]],
                    attribute_of_cell: dict[str, np.ndarray]) -> torch.Tensor:
    """L_hat = 1/2 sum_i KL(D(tau_i) || P(tau_i))^2 of cell counts (C,), differentiable in the counts."""
    total = expected_counts.sum()
    loss = expected_counts.new_zeros(())
    for attribute, prior in priors.items():
        values = attribute_of_cell[attribute]
        kl = expected_counts.new_zeros(())
        for value, d in prior.items():
            if d <= 0:
                continue
            p = expected_counts[torch.from_numpy(values == value)].sum() / total
            kl = kl + d * torch.log(d / p.clamp_min(1e-12))
        loss = loss + 0.5 * kl ** 2
    return loss


# --------------------------------------------------------------------------------------------- synthetic samples
def synthesize(generator: Generator, conditions: pd.DataFrame, seed: int, like: Dataset,
               guidance_scale: float | None = None, augment_round: int = -1) -> Dataset:
    """Generate one image per row of ``conditions`` and wrap them as train-split synthetic rows of ``like``'s
    manifest. Ids are ``syn-<generator version>-<seed>-<k>`` (unique and deterministic given the seed)."""
    images = generator.sample(conditions, seed=seed, guidance_scale=guidance_scale)
    index = {c: i for i, c in enumerate(like.class_names)}
    rows = pd.DataFrame({
        "id": [f"syn-{generator.version}-{seed}-{k:06d}" for k in range(len(conditions))],
        "split": "train",
        "label": conditions[CLASS_VARIABLE].map(index).to_numpy(dtype=np.int64),
        "class_name": conditions[CLASS_VARIABLE].to_numpy(),
        "superclass": conditions[CLASS_VARIABLE].map(like.superclass_of).to_numpy(),
        "origin": "synthetic",
    })
    for name in generator.space.names[1:]:
        dtype = like.manifest[name].dtype if name in like.manifest.columns else object
        rows[name] = conditions[name].to_numpy()
        if dtype is not object and dtype != np.dtype(object):
            rows[name] = rows[name].astype(dtype)
    rows["condition"] = [";".join(f"{n}={r[n]}" for n in generator.space.names) for _, r in conditions.iterrows()]
    rows["generator_version"] = generator.version
    rows["seed"] = int(seed)
    rows["augment_round"] = int(augment_round)
    return Dataset(rows, images, like.class_names, like.superclass_of, like.attributes, like.config)


def conditions_of_cells(cells: pd.DataFrame, allocation: np.ndarray, names: tuple[str, ...]) -> pd.DataFrame:
    """A condition table with ``allocation[k]`` rows of cell k, cells in order."""
    repeated = cells.loc[np.repeat(np.arange(len(cells)), allocation), list(names)]
    return repeated.reset_index(drop=True)


def check_generator_version(generator: Generator, data_md5: str | None, force: bool = False) -> None:
    """Refuse (``ValueError``) a generator trained on another data version unless ``force``; warn either way."""
    if data_md5 is None or generator.data_md5 == data_md5:
        return
    message = (f"the generator {generator.version} was trained on data {generator.data_md5!r}, not on this data "
               f"version {data_md5!r}: its samples follow another S (and may leak other private images)")
    warnings.warn("!!! " + message, stacklevel=2)
    if not force:
        raise ConfigError(message + "; retrain it (retrain_generator=true) or pass force=True")


# ----------------------------------------------------------------------------------------------- Algorithm 1
@dataclass
class AugmentResult:
    """``dataset``: the input with the synthetic rows appended (split=train). ``synthetic``: those rows alone.
    ``rounds``: one record per round (loss, KLs, dependence, counts, samples added). ``before``/``after``: bias of S
    (with several attributes, their joint too). ``dependence_before``/``dependence_after``: I(attribute; class) and
    P(attribute | superclass) of each debiased attribute the class does not determine. ``real``: |S| before."""

    dataset: Dataset
    synthetic: Dataset
    rounds: list[dict]
    before: BiasReport
    after: BiasReport
    cells: pd.DataFrame
    config: dict = field(default_factory=dict)
    dependence_before: DependenceReport | None = None
    dependence_after: DependenceReport | None = None
    real: int = 0

    @property
    def synthetic_to_real(self) -> float:
        """Synthetic samples added per sample of S (``augment/synthetic_to_real_ratio``)."""
        return len(self.synthetic) / self.real if self.real else float("nan")


def _train_view(dataset: Dataset) -> Dataset:
    return dataset.split("train")


def augment(dataset: Dataset, target, generator: Generator, *, config: AugmentConfig | None = None,
            data_md5: str | None = None, force: bool = False,
            on_round: Callable[[int, BiasReport, dict], None] | None = None) -> AugmentResult:
    """Algorithm 1 on the ``train`` split of ``dataset`` towards ``target`` (see the module docstring).

    Args:
        dataset: the data set; its ``train`` split is S.
        target: the target D (``build_target``).
        generator: the trained class-conditional generator.
        config: rho, step size, round size, guidance (``AugmentConfig``; defaults when None).
        data_md5: the data version, checked against the generator's (a generator of another version is refused
            unless ``force``).
        force: accept a generator trained on another data version.
        on_round: ``on_round(round, report, record)`` after each measurement (the pipeline logs metrics there).

    Returns:
        An ``AugmentResult``: ``dataset`` with the synthetic rows appended, ``synthetic`` alone, the bias
        ``before`` and ``after`` and one record per round.

    Raises:
        ConfigError: bad settings, a target the generator cannot produce, or one that adding samples cannot bring
            within rho (S has samples in cells the target gives no probability); checked before anything is
            generated.
    """
    config = config or AugmentConfig()
    config.validate()
    check_generator_version(generator, data_md5, force)
    priors = target.priors()
    attributes = tuple(priors)
    if len(attributes) > 1:  # a prior over several attributes is one over their joint: a partial bias of its own
        priors[joint_attribute(attributes)] = target.attribute_joint()
    train = _train_view(dataset)
    cells = target_cells(target, train, generator)
    headroom = cell_headroom(cells)
    cell_attributes = _cell_attribute_values(cells, attributes, dataset)
    counts = cells["count"].to_numpy(dtype=np.float64)
    _check_reachable(cells, counts + headroom, priors, cell_attributes, config.rho)

    def measure(manifest: pd.DataFrame) -> BiasReport:
        return measure_bias(with_joint_column(manifest, attributes), priors)

    theta = torch.tensor(np.log(counts / counts.sum() + 1e-8), dtype=torch.float64)  # [1] Lambda = P(tau)
    added = np.zeros(len(cells), dtype=np.int64)
    synthetic_parts: list[Dataset] = []
    rounds: list[dict] = []
    current = train
    before = measure(current.manifest)
    dependence_before = measure_dependence(current.manifest, attributes)
    dependent = tuple(a.attribute for a in dependence_before.attributes)  # the same attributes after, for comparison
    report = before
    for r in range(config.max_rounds + 1):
        report = measure(current.manifest)  # [4]
        remaining = headroom - added
        dependence = dependence_before if r == 0 else measure_dependence(current.manifest, dependent)
        record = {"round": r, "loss": report.loss, "kl": {a.attribute: a.kl for a in report.attributes},
                  "mutual_information": {a.attribute: a.mutual_information for a in dependence.attributes},
                  "size": len(current), "synthetic_total": int(added.sum()),
                  "lambda": dict(zip(_cell_labels(cells), torch.softmax(theta, 0).tolist()))}
        balanced = report.is_balanced(config.rho)  # [7]
        if balanced or remaining.sum() == 0 or r == config.max_rounds:
            record["added"] = 0
            rounds.append(record)
            if on_round:
                on_round(r, report, record)
            if not balanced:
                warnings.warn(f"Algorithm 1 stopped at round {r} with max partial bias "
                              f"{max(a.kl for a in report.attributes):.4g} >= rho={config.rho}: "
                              + ("the headroom is used up (the target cannot be reached by adding samples)"
                                 if remaining.sum() == 0 else "max_rounds reached"), stacklevel=2)
            break
        batch = int(remaining.sum()) if config.round_size == 0 else min(config.round_size, int(remaining.sum()))
        theta = _gradient_step(theta, cells, counts + added, batch, priors, cell_attributes, config.step_size)  # [6]
        allocation = fill_within_caps(batch, torch.softmax(theta, 0).numpy(), remaining)
        conditions = conditions_of_cells(cells, allocation, generator.space.names)
        new = synthesize(generator, conditions, seed=config.seed * 1000 + r, like=dataset,
                         guidance_scale=config.guidance_scale, augment_round=r)  # [5] S <- S u G(Lambda)
        synthetic_parts.append(new)
        current = current.concat(new)
        added += allocation
        record["added"] = int(allocation.sum())
        rounds.append(record)
        if on_round:
            on_round(r, report, record)
    synthetic = synthetic_parts[0] if synthetic_parts else dataset.select(np.zeros(len(dataset), dtype=bool))
    for part in synthetic_parts[1:]:
        synthetic = synthetic.concat(part)
    cells = cells.assign(headroom=headroom, added=added)
    dependence_after = measure_dependence(current.manifest, dependent)
    risen = [f"{a.attribute}: {dependence_before.mutual_information(a.attribute):.4g} -> {a.mutual_information:.4g}"
             for a in dependence_after.attributes
             if a.mutual_information > dependence_before.mutual_information(a.attribute) + 1e-6]
    if risen and len(attributes) > 1:  # a single attribute's target keeps S's classes given it, by design
        warnings.warn("!!! the dependence between debiased attributes and the class rose during Algorithm 1 "
                      f"(mutual information, nats: {'; '.join(risen)}): the target ties them to the class more "
                      "than S did; check the prior", stacklevel=2)
    return AugmentResult(dataset.concat(synthetic) if len(synthetic) else dataset, synthetic, rounds, before,
                         report, cells, asdict(config), dependence_before, dependence_after, len(train))


def _check_reachable(cells: pd.DataFrame, final_counts: np.ndarray, priors: dict, cell_attributes: dict,
                     rho: float) -> None:
    """Refuse (``ConfigError``) a target that S plus its whole headroom would still miss by a partial bias >= rho:
    Algorithm 1 only adds samples, so cells with samples that D gives no probability can never shrink."""
    for attribute, prior in priors.items():
        values = cell_attributes[attribute]
        categories = sorted(set(map(str, prior)) | set(values))
        totals = np.array([final_counts[values == c].sum() for c in categories])
        kl = kl_divergence(np.array([float(prior.get(c, 0.0)) for c in categories]), totals / totals.sum())
        if kl >= rho:
            unwanted = (cells["probability"].to_numpy() <= 0) & (cells["count"].to_numpy() > 0)
            where = ", ".join(_cell_labels(cells[unwanted].head(3))) if unwanted.any() else "none"
            raise ConfigError(f"the target cannot be reached by adding samples: even with all "
                              f"{int(final_counts.sum() - cells['count'].sum())} it needs, KL({attribute}) would be "
                              f"{kl:.4g} >= rho={rho}; S has {int(cells['count'].to_numpy()[unwanted].sum())} "
                              f"samples in cells the target gives no probability ({where}): give them probability "
                              "in the prior or raise rho")


def _cell_labels(cells: pd.DataFrame) -> list[str]:
    names = [c for c in cells.columns if c not in ("probability", "count")]
    return ["|".join(str(v) for v in row) for row in cells[names].itertuples(index=False)]


def _cell_attribute_values(cells: pd.DataFrame, attributes: tuple[str, ...], dataset: Dataset) -> dict[str, np.ndarray]:
    """For each debiased attribute, and for their joint when there are several, its value in every cell (str (C,))."""
    out = {}
    for attribute in attributes:
        if attribute in cells.columns:
            out[attribute] = cells[attribute].astype(str).to_numpy()
        elif attribute == "superclass":
            out[attribute] = cells[CLASS_VARIABLE].map(dataset.superclass_of).astype(str).to_numpy()
        else:
            by_class = dataset.manifest.assign(**{CLASS_VARIABLE: dataset.manifest["class_name"]}).groupby(
                CLASS_VARIABLE)[attribute].first().astype(str)
            out[attribute] = cells[CLASS_VARIABLE].map(by_class).astype(str).to_numpy()
    if len(attributes) > 1:
        out[joint_attribute(attributes)] = np.array([JOINT_VALUE_SEPARATOR.join(parts)
                                                     for parts in zip(*(out[a] for a in attributes))])
    return out


def _gradient_step(theta: torch.Tensor, cells: pd.DataFrame, counts: np.ndarray, batch: int, priors: dict,
                   cell_attributes: dict, step_size: float) -> torch.Tensor:
    """theta - lambda * grad / ||grad||_inf of L_hat(counts + batch * softmax(theta)) (line 6)."""
    theta = theta.detach().clone().requires_grad_(True)
    expected = torch.as_tensor(counts, dtype=torch.float64) + batch * torch.softmax(theta, 0)
    loss = bias_loss_torch(cells, expected, priors, cell_attributes)
    (grad,) = torch.autograd.grad(loss, theta)
    scale = grad.abs().max()
    if scale > 0:
        theta = theta - step_size * grad / scale
    return theta.detach()


# --------------------------------------------------------------------------------------------------- replenish
def replenish(remaining: Dataset, n: int, generator: Generator, target, *, seed: int,
              guidance_scale: float | None = None) -> Dataset:
    """``n`` synthetic train samples to add to ``remaining`` (S after n originals were removed) so that S keeps its
    size and stays as close to the target as integers allow: each cell gets a share of n in proportion to its
    deficit p_c * (|S| + n) - n_c (cells above target get none). Returns the new rows only; the caller concatenates.
    Ids ``syn-<generator version>-<seed>-<k>``: give each call its own seed (e.g. iteration * 1000 + shard).
    """
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    train = _train_view(remaining)
    if n == 0:
        return train.select(np.zeros(len(train), dtype=bool))
    if guidance_scale is not None and guidance_scale < 0:
        raise ConfigError(f"guidance_scale must be >= 0, got {guidance_scale}")
    cells = target_cells(target, train, generator)
    p = cells["probability"].to_numpy(dtype=np.float64)
    counts = cells["count"].to_numpy(dtype=np.float64)
    fixed = counts[p == 0].sum()  # samples in cells D does not want: they stay, the rest follows D
    deficit = np.maximum(p * (len(train) + n - fixed) - counts, 0.0)
    allocation = largest_remainder(n, deficit if deficit.sum() > 0 else p)
    conditions = conditions_of_cells(cells, allocation, generator.space.names)
    new = synthesize(generator, conditions, seed=seed, like=remaining, guidance_scale=guidance_scale)
    clash = set(new.ids) & set(remaining.ids)
    if clash:
        raise ConfigError(f"synthetic id {sorted(clash)[0]!r} already exists: pass a seed not used before")
    return new
