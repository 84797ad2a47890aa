"""Membership inference against the generator: can its training records be told apart from unseen ones?

Algorithm 2 forgets the original records from the classifier and replaces them with samples of a generator trained
on those very records; the generator is never unlearned. This audit measures what it still holds.

Per-sample denoising error (the diffusion training loss, Carlini et al. 2023; Matsumoto et al. 2023):
    e_t(x) = mean over d noise draws of || eps_hat(sqrt(a_t) z + sqrt(1 - a_t) eps, t, c) - eps ||^2 / dim(z)
with z = x in the generator's model space (standardised latent, or pixels in [-1, 1]), c = x's class condition (and
its attributes), eps ~ N(0, I) seeded per record, at a few fixed small timesteps t (given as fractions of the
training timesteps: 0.02, 0.05, 0.1 of T = 1000 by default, where the measured leakage is largest). A member's error
is lower. Two attacks, each with its threshold fitted on a calibration split and judged on a disjoint evaluation
split (as in the classifier audit, ``mia/protocol.py``):

- ``loss``: score = -e_t at the timestep whose calibration AUC is highest.
- ``calibrated``: each e_t standardised by the mean and standard deviation of the calibration *non-members* of the
  same class at the same t, then averaged over t; score = minus that. It removes the per-class difficulty of
  denoising (Watson et al. 2022's difficulty calibration), the documented cheaper alternative to a reference
  generator trained without the audited records (which would cost a second generator training per audit).

With ``cross_fit`` (the default) the halves then swap roles, as in the classifier audit: the timestep, the
standardisation and the threshold fitted on the evaluation half score the calibration half, each half's scores are
centred on the threshold fitted on the other, and every figure is measured on every audited record.

Members are the generator's training records (a class-stratified subsample: all of S on the default data), non-members
never-seen records drawn with the same class counts. The headline (``generator/mia/*``) is the strongest attack by
AUC with its chance bound (one-sided, Bonferroni over the attacks). The verdict is a **certificate**
(``mia.certify``): the largest AUC and TPR-at-1%-FPR upper bounds over both attacks within a tolerance, the exact
test for a detected leak, and "too few records" when the audit cannot resolve the tolerance
(``generator/mia/certified``, ``auc_high``, ``tpr_at_1pct_fpr_high``, ``too_few``, ``leak_p_value``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from fairforget.components.canaries import auc_chance_bound
from fairforget.components.config import ConfigBase
from fairforget.components.dataset import Dataset
from fairforget.components.generator.config import torch_threads
from fairforget.components.generator.denoiser import CLASS_VARIABLE
from fairforget.components.generator.model import Generator, make_scheduler, predicted_noise
from fairforget.components.mia.certify import CERTIFYING_FPR, Certificate, Tolerance, certificate_over_attacks, tpr_upper_at_fpr
from fairforget.components.mia.metrics import (
    Estimate,
    chance_success_bound,
    evaluate_scores,
    fit_threshold,
    mann_whitney_p_value,
    roc_auc,
    roc_curve_points,
)
from fairforget.errors import ConfigError

ATTACKS = ("loss", "calibrated")
PREFIX = "generator/mia"


@dataclass(frozen=True)
class GeneratorAuditConfig(ConfigBase):
    """How the generator is audited. ``timestep_fractions`` are fractions of the generator's training timesteps."""

    timestep_fractions: tuple[float, ...] = (0.02, 0.05, 0.1)
    noise_draws: int = 8
    max_members: int = 4000  # members audited (class-stratified subsample of the training records)
    calibration_fraction: float = 0.5
    cross_fit: bool = True  # both halves scored by the attack fitted on the other (every record measured)
    chance_alpha: float = 0.05
    num_bootstrap: int = 200
    batch_size: int = 1024
    seed: int = 0

    def validate(self) -> None:
        if not self.timestep_fractions or not all(0.0 < f < 1.0 for f in self.timestep_fractions):
            raise ConfigError(f"timestep_fractions must be fractions in (0, 1), got {self.timestep_fractions}")
        for name in ("noise_draws", "max_members", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"generator audit {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.calibration_fraction < 1.0:
            raise ConfigError(f"calibration_fraction must lie in (0, 1), got {self.calibration_fraction}")
        if not 0.0 < self.chance_alpha < 1.0:
            raise ConfigError(f"chance_alpha must lie in (0, 1), got {self.chance_alpha}")


def audit_timesteps(num_train_timesteps: int, fractions) -> tuple[int, ...]:
    """The distinct integer timesteps round(f * T), each in [1, T - 1], in increasing order."""
    steps = sorted({min(max(1, round(f * num_train_timesteps)), num_train_timesteps - 1) for f in fractions})
    return tuple(int(t) for t in steps)


def _conditions(generator: Generator, dataset: Dataset) -> pd.DataFrame:
    table = dataset.manifest.copy()
    table[CLASS_VARIABLE] = [dataset.class_names[i] for i in dataset.labels]
    return table


@torch.no_grad()
def denoising_errors(generator: Generator, dataset: Dataset, *, timesteps: tuple[int, ...], noise_draws: int = 8,
                     seed: int = 0, batch_size: int = 1024) -> np.ndarray:
    """Per-record denoising error: float64 (N, len(timesteps)), the mean over ``noise_draws`` seeded draws of the
    squared error of the predicted noise per model-space dimension, under each record's own condition.

    Deterministic: record i's noise comes from a generator seeded with (seed, i), so a record's error does not
    depend on the batch or on the other records.
    """
    if len(dataset) == 0:
        raise ConfigError("cannot audit a generator on an empty set of records")
    codes = torch.from_numpy(generator.space.encode(_conditions(generator, dataset)))
    z = generator.to_model_space(dataset.to_float_tensor_array())
    alphas = make_scheduler(generator.config).alphas_cumprod
    device = generator.device
    generator.denoiser.eval()
    errors = np.zeros((len(z), len(timesteps)), dtype=np.float64)
    rng = torch.Generator().manual_seed(int(seed))
    with torch_threads(generator.config.num_threads):
        for draw in range(noise_draws):
            noise = torch.randn(z.shape, generator=rng)
            for start in range(0, len(z), batch_size):
                x0 = z[start:start + batch_size].to(device)
                eps = noise[start:start + batch_size].to(device)
                c = codes[start:start + batch_size].to(device)
                for j, t in enumerate(timesteps):
                    a = alphas[t].to(device)
                    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
                    tt = torch.full((len(x0),), t, dtype=torch.long, device=device)
                    output = generator.denoiser(x_t, tt, c)
                    noise_hat = predicted_noise(output, x_t, a, generator.config.prediction_type)
                    err = (noise_hat - eps).pow(2).flatten(1).mean(1)
                    errors[start:start + len(x0), j] += err.double().cpu().numpy()
    return errors / noise_draws


def matched_non_members(members: Dataset, pool: Dataset, *, max_members: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(members, non_members) with the same class counts: at most ``max_members`` members (class-stratified), and
    as many non-members of each class drawn from ``pool``. Where ``pool`` has fewer records of a class than the
    members, that class's members are subsampled to match. Raises ``ConfigError`` when no class can be matched."""
    rng = np.random.default_rng(seed)
    keep_members, keep_pool = np.zeros(len(members), bool), np.zeros(len(pool), bool)
    scale = min(1.0, max_members / len(members))
    for label in np.unique(members.labels):
        in_members = np.flatnonzero(members.labels == label)
        in_pool = np.flatnonzero(pool.labels == label)
        n = min(len(in_pool), int(round(len(in_members) * scale)))
        if n == 0:
            continue
        keep_members[rng.choice(in_members, n, replace=False)] = True
        keep_pool[rng.choice(in_pool, n, replace=False)] = True
    if keep_members.sum() < 2:
        raise ConfigError("the generator audit found no non-members of the members' classes: the audit pool must "
                          "hold records of the training classes")
    return members.select(keep_members), pool.select(keep_pool)


@dataclass
class GeneratorAuditReport:
    """Each attack's evaluation estimates and ROC curve, the headline (strongest by AUC) and its chance bounds."""

    estimates: dict[str, dict[str, Estimate]]
    roc: dict[str, tuple[np.ndarray, np.ndarray]]
    timesteps: tuple[int, ...]
    chosen_timestep: int
    n_members: int
    n_non_members: int
    auc_bound: float
    success_bound: float
    mean_error: dict[str, float] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # attack -> (N,) scores of members then non-members
    is_member: np.ndarray | None = None  # bool (N,)
    evaluation: np.ndarray | None = None  # bool (N,): the records the estimates are computed on
    chance_alpha: float = 0.05
    _certificate: Certificate | None = field(default=None, init=False, repr=False)

    def certificate(self) -> Certificate:
        """The largest AUC upper bound (bootstrap) and TPR-at-1%-FPR upper bound (Clopper-Pearson) over both
        attacks on the measured records, and the exact test's smallest p-value (its level ``chance_alpha`` / 2).
        Computed once per report (``metrics`` and ``summary`` both read it)."""
        if self._certificate is not None:
            return self._certificate
        measured = self.evaluation if self.evaluation is not None else np.ones(len(self.is_member), bool)
        member = self.is_member[measured]
        scores = {name: self.scores[name][measured] for name in self.estimates}
        certificate = certificate_over_attacks(
            self.n_members, self.n_non_members, {name: e["auc"].ci_high for name, e in self.estimates.items()},
            {name: tpr_upper_at_fpr(member, values, CERTIFYING_FPR) for name, values in scores.items()},
            {name: mann_whitney_p_value(values[member], values[~member]) for name, values in scores.items()},
            self.chance_alpha)
        self._certificate = certificate
        return certificate

    @property
    def strongest(self) -> str:
        return max(self.estimates, key=lambda name: self.estimates[name]["auc"].value)

    @property
    def auc(self) -> float:
        return self.estimates[self.strongest]["auc"].value

    @property
    def within_bound(self) -> bool:
        """True when no attack's AUC exceeds the chance bound."""
        return self.auc <= self.auc_bound

    def metrics(self, tolerance: Tolerance | None = None) -> dict[str, float]:
        """``generator/mia/*``: the headline attack's figures, each attack's, and the certificate's under
        ``tolerance`` (default ``Tolerance()``, the registry policy's defaults)."""
        best = self.estimates[self.strongest]
        out = {f"{PREFIX}/auc": best["auc"].value, f"{PREFIX}/auc_ci_low": best["auc"].ci_low,
               f"{PREFIX}/auc_ci_high": best["auc"].ci_high,
               f"{PREFIX}/tpr_at_1pct_fpr": best["tpr_at_1pct_fpr"].value, f"{PREFIX}/success": best["success"].value,
               f"{PREFIX}/auc_chance_bound": self.auc_bound, f"{PREFIX}/success_chance_bound": self.success_bound,
               f"{PREFIX}/within_bound": float(self.within_bound), f"{PREFIX}/members": float(self.n_members),
               f"{PREFIX}/non_members": float(self.n_non_members),
               f"{PREFIX}/timestep": float(self.chosen_timestep)}
        for name, values in self.estimates.items():
            for key in ("auc", "tpr_at_1pct_fpr", "success"):
                out[f"{PREFIX}/{name}/{key}"] = values[key].value
        for key, value in self.mean_error.items():
            out[f"{PREFIX}/mean_error/{key}"] = value
        certificate = self.certificate()
        out.update(certificate.metrics(f"{PREFIX}/", tolerance or Tolerance()))
        out.update({f"{PREFIX}/attacks": float(certificate.n_attacks), f"{PREFIX}/leak_p_value": certificate.leak_p_value,
                    f"{PREFIX}/leak_level": certificate.leak_level})
        return out

    def summary(self, tolerance: Tolerance | None = None) -> str:
        verdict = "within its chance bound" if self.within_bound else "ABOVE its chance bound: the generator leaks"
        return (f"generator membership audit ({self.n_members} training records vs {self.n_non_members} unseen, same "
                f"class mix): strongest attack {self.strongest} AUC {self.auc:.3f} (bound {self.auc_bound:.3f}, "
                f"{verdict}), TPR at 1% FPR {self.estimates[self.strongest]['tpr_at_1pct_fpr'].value:.3f}; "
                f"{self.certificate().explain(tolerance or Tolerance())}")

    def figure(self):
        """ROC curves of both attacks (log-log axes, as in Carlini et al. 2022)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        for name, (fpr, tpr) in self.roc.items():
            ax.plot(np.maximum(fpr, 1e-4), np.maximum(tpr, 1e-4),
                    label=f"{name} (AUC {self.estimates[name]['auc'].value:.3f})")
        ax.plot([1e-4, 1], [1e-4, 1], "k--", lw=0.8, label="chance")
        ax.set(xscale="log", yscale="log", xlabel="false positive rate", ylabel="true positive rate",
               title="Generator membership inference")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig


def _split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Class-stratified bool mask (N,) of the calibration part."""
    mask = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        mask[rng.choice(index, int(round(len(index) * fraction)), replace=False)] = True
    return mask


def _calibrated_scores(errors: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """-(mean over t of the class-standardised error), standardised by the ``reference`` rows (bool mask)."""
    z = np.zeros_like(errors)
    for label in np.unique(labels):
        rows = labels == label
        ref = errors[rows & reference]
        if len(ref) < 2:  # no calibration non-member of this class: fall back to all of them
            ref = errors[reference]
        z[rows] = (errors[rows] - ref.mean(axis=0)) / np.maximum(ref.std(axis=0), 1e-12)
    return -z.mean(axis=1)


def audit_generator(generator: Generator, members: Dataset, non_members: Dataset,
                    config: GeneratorAuditConfig | None = None) -> GeneratorAuditReport:
    """Run both attacks of the module docstring. ``members`` are records the generator trained on, ``non_members``
    records it never saw, ideally with the same class counts (``matched_non_members``). Each set is split per
    class into calibration (``calibration_fraction``) and evaluation parts with ``config.seed``."""
    config = config or GeneratorAuditConfig()
    config.validate()
    timesteps = audit_timesteps(generator.config.num_train_timesteps, config.timestep_fractions)
    both = members.concat(non_members)
    errors = denoising_errors(generator, both, timesteps=timesteps, noise_draws=config.noise_draws,
                              seed=config.seed, batch_size=config.batch_size)
    is_member = np.r_[np.ones(len(members), bool), np.zeros(len(non_members), bool)]
    labels = np.asarray(both.labels)
    rng = np.random.default_rng(config.seed)
    calibration = np.zeros(len(both), bool)
    calibration[:len(members)] = _split(labels[:len(members)], config.calibration_fraction, rng)
    calibration[len(members):] = _split(labels[len(members):], config.calibration_fraction, rng)
    evaluation = ~calibration
    if is_member[evaluation].all() or not is_member[evaluation].any() or is_member[calibration].all() \
            or not is_member[calibration].any():
        raise ConfigError("the generator audit needs members and non-members in both the calibration and the "
                          "evaluation split: give it more records")

    chosen, forward = _fit_and_score(errors, labels, is_member, fitting=calibration)
    scores = forward  # centred on the thresholds fitted on calibration
    measured = evaluation
    if config.cross_fit:  # the evaluation half fits, the calibration half is scored: every record measured
        _, backward = _fit_and_score(errors, labels, is_member, fitting=evaluation)
        scores = {name: np.where(evaluation, forward[name], backward[name]) for name in ATTACKS}
        measured = np.ones(len(both), bool)
    n_members, n_non = int(is_member[measured].sum()), int((~is_member[measured]).sum())
    levels = tuple(level for level in (0.01,) if n_non >= 1 / level)
    estimates, roc = {}, {}
    for name in ATTACKS:
        estimates[name] = evaluate_scores(is_member[measured], scores[name][measured], 0.0,
                                          fpr_levels=levels, num_bootstrap=config.num_bootstrap, seed=config.seed)
        fpr, tpr, _ = roc_curve_points(is_member[measured], scores[name][measured])
        if "tpr_at_1pct_fpr" not in estimates[name]:  # too few non-members to resolve 1%: TPR at zero FPR
            value = float(tpr[fpr <= 0].max())
            estimates[name]["tpr_at_1pct_fpr"] = Estimate(value, value, value)
        roc[name] = (fpr, tpr)
    return GeneratorAuditReport(
        estimates=estimates, roc=roc, timesteps=timesteps, chosen_timestep=timesteps[chosen],
        n_members=n_members, n_non_members=n_non,
        auc_bound=auc_chance_bound(n_members, n_non, config.chance_alpha, len(ATTACKS)),
        success_bound=chance_success_bound(n_members, n_non, config.chance_alpha, len(ATTACKS)),
        mean_error={"members": float(errors[is_member, chosen].mean()),
                    "non_members": float(errors[~is_member, chosen].mean())},
        scores=scores, is_member=is_member, evaluation=measured, chance_alpha=config.chance_alpha)


def _fit_and_score(errors: np.ndarray, labels: np.ndarray, is_member: np.ndarray,
                   fitting: np.ndarray) -> tuple[int, dict[str, np.ndarray]]:
    """Fit both attacks on the ``fitting`` rows (bool (N,)): the timestep of the highest AUC there, the per-class
    standardisation by its non-members, each attack's threshold. Returns (chosen timestep index, attack -> (N,)
    scores of every row minus that threshold: a cut at 0 is the decision rule)."""
    chosen = int(np.argmax([roc_auc(is_member[fitting], -errors[fitting, j]) for j in range(errors.shape[1])]))
    raw = {"loss": -errors[:, chosen], "calibrated": _calibrated_scores(errors, labels, fitting & ~is_member)}
    return chosen, {name: values - fit_threshold(is_member[fitting], values[fitting]) for name, values in raw.items()}


def audit_generator_on_splits(generator: Generator, dataset: Dataset, config: GeneratorAuditConfig | None = None,
                              seen_images: Sequence[str] = ()) -> GeneratorAuditReport:
    """The generator audit on a prepared data set: members = the real ``train`` records it learned from, non-members
    = real ``audit``-split records with the same class counts that the generator never saw: ``seen_images`` (ids of
    audit-split images it also trained on, e.g. the canaries of ``CanarySet.for_generator``) are left out."""
    from fairforget.components.generator.train import training_images

    config = config or GeneratorAuditConfig()
    pool = dataset.split("audit")
    pool = pool.select((pool.manifest["origin"].to_numpy() == "real") & ~np.isin(pool.ids, list(map(str, seen_images))))
    members, non_members = matched_non_members(training_images(dataset), pool, max_members=config.max_members,
                                               seed=config.seed)
    return audit_generator(generator, members, non_members, config)
