"""Algorithm 2: forget the original records step by step, replacing each with a synthetic one, and measure every
step (accuracy, fairness, bias, membership inference). Pure: no MLflow, no files beyond the SISA state folder;
progress reaches the caller through ``on_iteration``.

    loop = ForgettingLoop(sisa=..., original_train=..., synthetic=..., generator=..., target=...,
                          test=..., non_members=..., references=..., config=LoopConfig())
    first = loop.evaluate(0)                           # the model trained on S* (iteration 0)
    result = loop.run(on_iteration=print_summary)      # iterations 1..T, or until the loop converges
    final = loop.audit()                               # every original record against as many non-members

One iteration (Alg. 2, lines 3-7): draw ``forget_rate x |originals| / k`` live originals per shard (``forget_order``),
generate as many synthetic replacements per shard from the target D (``replenish``), unlearn and replenish in one
exact SISA retraining of the affected shards, then evaluate and audit the new ensemble. The loop stops after
``iterations``, when no original record is left, or early when the records the model still holds, the *retained*
originals, are certified indistinguishable from non-members (``mia.certify``: every attack's upper confidence
bounds under the ``Tolerance``) for ``convergence_patience`` iterations in a row, in audits that detected the
canaries. The forgotten originals are no test of the classifier (exact unlearning makes them non-members of it);
their verdict is the test of the generator channel: what the synthetic replacements carry back.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from fairforget.components import names
from fairforget.components.augment import replenish
from fairforget.components.bias import BiasReport, measure_bias
from fairforget.components.canaries import (
    INSERTED_PREFIX,
    CanaryAudit,
    CanarySet,
    audit_canaries,
    forgotten_on_schedule,
    without_canary_columns,
)
from fairforget.components.config import ConfigBase
from fairforget.components.dataset import Dataset
from fairforget.components.fairness import FairnessReport, evaluate_predictions
from fairforget.components.gate import (AUDIT_POWER_NOT_SHOWN, AUDIT_POWER_SHOWN, AUDIT_POWER_UNVERIFIED,
                                         FINAL_EXACTNESS_STAGE)
from fairforget.components.generator import Generator
from fairforget.components.mia import AuditConfig
from fairforget.components.mia.certify import EMPTY_CERTIFICATE, Certificate, Tolerance
from fairforget.components.mia.metrics import required_non_members
from fairforget.components.mia.protocol import audit_membership, audit_per_model
from fairforget.components.mia.queries import MemoizedPredict, TorchPredictor
from fairforget.components.mia.results import AuditReport
from fairforget.components.priors import TargetDistribution
from fairforget.components.sisa.model import SisaModel
from fairforget.components.sisa.unlearn import FORGET_ORDERS, UnlearnReport
from fairforget.components.training import accuracy, predict_proba
from fairforget.errors import ConfigError, DataError, UnlearningNotExactError

FORGOTTEN, RETAINED = "forgotten", "retained"


EXACTNESS_AUDITS = ("final", "every_step")


@dataclass(frozen=True)
class LoopConfig(ConfigBase):
    """Algorithm 2's own knobs."""

    forget_rate: float = 0.1  # fraction of the ORIGINAL records forgotten per iteration (all shards together)
    iterations: int = 10
    forget_order: str = "last_slice_first"  # originals of later slices first (cheapest for SISA); or random
    iteration_audit_size: int | None = None  # members (and as many non-members) per iteration; None: all
    convergence_patience: int = 1  # stop after this many iterations in a row with the retained originals certified
                                   # (0: never stop early)
    shard_audit_size: int = 200  # members of each shard (and as many non-members) audited per shard model; 0: off
    exactness_audit: str = "final"  # "final": every shard retrained from scratch once, after the last step, and
                                    # compared bit for bit; "every_step": one shard per step (EXACTNESS_AUDITS)

    def validate(self) -> None:
        if not 0.0 < self.forget_rate <= 1.0:
            raise ConfigError(f"forget_rate must lie in (0, 1], got {self.forget_rate}: it is the fraction of the "
                              "original records forgotten per iteration")
        if self.iteration_audit_size is not None and self.iteration_audit_size < 2:
            raise ConfigError(f"iteration_audit_size must be >= 2, or None for all (0 on the command line), got "
                              f"{self.iteration_audit_size}")
        if self.iterations < 0:
            raise ConfigError(f"iterations must be >= 0, got {self.iterations}")
        if self.shard_audit_size < 0 or self.shard_audit_size == 1:
            raise ConfigError(f"shard_audit_size must be 0 (off) or >= 2, got {self.shard_audit_size}")
        if self.convergence_patience < 0:
            raise ConfigError(f"convergence_patience must be >= 0 (0: never stop early), got "
                              f"{self.convergence_patience}")
        if self.forget_order not in FORGET_ORDERS:
            raise ConfigError(f"unknown forget_order {self.forget_order!r}; known: {', '.join(FORGET_ORDERS)}")
        if self.exactness_audit not in EXACTNESS_AUDITS:
            raise ConfigError(f"unknown exactness_audit {self.exactness_audit!r}; known: {', '.join(EXACTNESS_AUDITS)}")


def replenish_seed_base(augment_seed: int, step: int) -> int:
    """The seed of the replacements generated at loop ``step`` (shard k adds k): 10^9 + augment_seed * 10^8 +
    step * 1000. Disjoint from Algorithm 1's seeds (``augment_seed * 1000 + round``, below 10^9 for any seed below
    10^6) and from the seeds of every other (augment seed, step) for steps below 10^5 and fewer than 1000 shards, so
    synthetic ids (``syn-<generator>-<seed>-<k>``) never clash."""
    return 10**9 + int(augment_seed) * 10**8 + int(step) * 1000


def sampled_audit_config(audit: AuditConfig, size: int | None, available: int) -> AuditConfig:
    """``audit`` on ``size`` members and as many non-members (``audit.sample_size`` when ``size`` is None; all
    ``available`` when that is None or larger), keeping only the FPR levels its evaluation non-members can resolve
    (TPR at 0.1% FPR needs >= 1000 of them): a small audit pool reports fewer levels instead of failing."""
    size = audit.sample_size if size is None else size
    size = available if size is None or size >= available else size
    evaluation = size - round(audit.calibration_fraction * size)
    levels = tuple(level for level in audit.fpr_levels if evaluation >= required_non_members(level))
    return dataclasses.replace(audit, sample_size=None if size == available else size, fpr_levels=levels)


def evaluate_model(predict_proba: Callable[[np.ndarray], np.ndarray], test: Dataset) -> FairnessReport:
    """Accuracy and fairness on ``test`` of a model ``predict_proba``: uint8 (N, H, W, C) -> (N, K)."""
    predicted = np.asarray(predict_proba(test.images)).argmax(axis=1)
    return evaluate_predictions(test.labels, predicted, test.class_names, test.manifest["superclass"].to_numpy())


def per_shard_count(forget_rate: float, forgettable: int, num_shards: int) -> int:
    """Records drawn per shard each iteration: ceil(forget_rate * forgettable / num_shards), at least 1. Rounded up,
    so that ``forget_rate x iterations = 1`` forgets every record in ``iterations`` steps (rounded to nearest,
    4020 forgettable records on 5 shards at rate 0.1 drew 80 a shard, 4000 in ten steps, and an eleventh step
    forgot the last 20)."""
    return max(1, math.ceil(forget_rate * forgettable / num_shards - 1e-9))


def check_schedule_capacity(*, forget_rate: float, forgettable: int, total: int, num_shards: int,
                            max_deletion_fraction: float) -> int:
    """Refuse a schedule whose iterations would ask a shard to unlearn more than ``max_deletion_fraction`` of its
    records at once: each iteration forgets about ``per_shard_count(forget_rate, forgettable, num_shards)`` records
    per shard (``ForgettingLoop.forget_per_shard``) from shards of about ``total / num_shards`` records. Returns the per-shard
    count. Raises ``ConfigError`` naming both parameters and the fix."""
    per_shard = per_shard_count(forget_rate, forgettable, num_shards)
    smallest = total // num_shards
    if per_shard > max_deletion_fraction * smallest:
        raise ConfigError(
            f"forget_rate {forget_rate} forgets {per_shard} records per shard each iteration, above "
            f"max_deletion_fraction {max_deletion_fraction} of a shard's {smallest}: lower forget_rate (and raise "
            "iterations) or raise max_deletion_fraction")
    return per_shard


def shard_fit_accuracies(sisa: SisaModel, dataset: Dataset) -> list[float]:
    """Each shard model's accuracy on its own live training records (``dataset`` must hold them all): how well
    every shard fits its data (a converged shard is near 1.0). Canaries (ids ``canary-*``) are an audit instrument
    with deliberately wrong labels and are left out, like from every other accuracy figure."""
    accuracies = []
    live = sisa.plan.live()
    live = live[~live["id"].astype(str).str.startswith(INSERTED_PREFIX)]
    for shard, model in enumerate(sisa.ensemble().models):
        own = dataset.by_ids(live.loc[live["shard"] == shard, "id"].tolist())
        accuracies.append(accuracy(predict_proba(model, own.images), own.labels))
    return accuracies


def shard_audit_metrics(shard: int, report: AuditReport) -> dict[str, float]:
    """The figures of one shard model's audit: ``mia_shard/<i>/max_success``, ``.../chance_success_high`` and
    ``.../<attack>/auc`` and ``/success`` (no intervals: five shards x every attack would swamp the run)."""
    prefix = f"{names.SHARD_AUDIT_PREFIX}/{shard}"
    out = {f"{prefix}/max_success": report.max_success(), f"{prefix}/chance_success_high": report.chance_bound["all"]}
    for attack, result in report.results["all"].items():
        out[f"{prefix}/{attack}/auc"] = result.estimates["auc"].value
        out[f"{prefix}/{attack}/success"] = result.estimates["success"].value
    return out


@dataclass
class ForgetStep:
    """What one ``forget_and_replenish`` did: the ids forgotten, the synthetic replacements (one per forgotten
    id, in the shard that lost it) and the SISA retraining."""

    forgotten: list[str]
    replacements: Dataset
    unlearn: UnlearnReport
    seconds_generating: float

    def metrics(self) -> dict[str, float]:
        metrics = self.unlearn.as_metrics()
        metrics.update({names.REPLENISHED: float(len(self.replacements)), names.TIME_AUGMENT: self.seconds_generating})
        return metrics


@dataclass
class IterationOutcome:
    """The state of the model after one iteration (0: trained on S*, nothing forgotten yet).

    ``fairness`` on the test split; ``retain_accuracy`` on the current training set (canaries excluded);
    ``bias`` of the current training set against the target; ``audit`` the membership-inference audit of the
    original records (subsets ``forgotten`` and ``retained`` once some are forgotten); ``canaries`` the canary audit
    (None without canaries); ``shard_audits`` each shard model against its own live originals (shard index ->
    report); ``converged_streak`` consecutive iterations whose audit had power and found the forgotten records at
    chance.
    """

    iteration: int
    fairness: FairnessReport
    retain_accuracy: float
    bias: BiasReport
    audit: AuditReport
    canaries: CanaryAudit | None
    step: ForgetStep | None
    originals_total: int
    originals_forgotten: int
    data_size: int
    seconds: dict[str, float] = field(default_factory=dict)
    shard_audits: dict[int, AuditReport] = field(default_factory=dict)
    converged_streak: int = 0

    @property
    def originals_left(self) -> int:
        return self.originals_total - self.originals_forgotten

    def audit_has_power(self) -> bool:
        """True when this iteration's audit detected the live canaries (no canaries: the audit's own verdict has
        no positive control, so False)."""
        return self.canaries is not None and self.canaries.power

    def certificates(self) -> dict[str, Certificate]:
        """``retained`` and ``forgotten`` originals' certificates (``held_certificates``)."""
        return held_certificates(self.audit, self.originals_forgotten, self.originals_left)

    def metrics(self, tolerance: Tolerance | None = None) -> dict[str, float]:
        """Everything measured, as flat MLflow metrics (the names in ``components.names``); certificates under
        ``tolerance``."""
        tolerance = tolerance or Tolerance()
        metrics = {**self.fairness.metrics(), names.ACC_RETAIN: self.retain_accuracy, **self.bias.as_metrics(),
                   names.ORIGINAL_FRACTION: self.originals_left / max(self.data_size, 1),
                   names.FORGOTTEN_FRACTION: self.originals_forgotten / max(self.originals_total, 1),
                   names.DATA_SIZE: float(self.data_size), **self.seconds, **self.audit.metrics(tolerance=tolerance),
                   **certificate_metrics(self.certificates(), "mia/", tolerance)}
        metrics[names.UNLEARN_POINTS] = 0.0
        if self.step is not None:
            metrics.update(self.step.metrics())
        if self.canaries is not None:
            metrics.update(self.canaries.metrics())
        for shard, report in self.shard_audits.items():
            metrics.update(shard_audit_metrics(shard, report))
        return metrics

    def history_row(self, tolerance: Tolerance | None = None) -> dict:
        """One row of the Table I analogue (certificates under ``tolerance``)."""
        tolerance = tolerance or Tolerance()
        row = {"iteration": self.iteration, "acc_retain": self.retain_accuracy, "acc_test": self.fairness.accuracy,
               "acc_worst_class": self.fairness.worst_class,
               "forgotten_fraction": self.originals_forgotten / max(self.originals_total, 1),
               "original_fraction": self.originals_left / max(self.data_size, 1),
               "seconds": sum(self.seconds.values()) + (self.step.unlearn.seconds + self.step.seconds_generating
                                                          if self.step else 0.0),
               "max_success": self.audit.max_success()}
        for subset in (FORGOTTEN, RETAINED):
            if subset in self.audit.results:
                row[f"max_success_{subset}"] = self.audit.max_success(subset)
        for subset, certificate in self.certificates().items():
            row[f"auc_high_{subset}"] = certificate.auc_high
            row[f"tpr_high_{subset}"] = certificate.tpr_high
            row[f"verdict_{subset}"] = certificate.verdict(tolerance)
        row["natural_leak_detected"] = float(self.audit.leak_detected())
        if self.step is not None:  # NaN: the step's exactness was not audited
            row["unlearn_exact"] = float("nan") if self.step.unlearn.exact is None else float(self.step.unlearn.exact)
        for attack, result in self.audit.results["all"].items():
            row[attack] = result.estimates["success"].value
        if self.canaries is not None:
            row.update(self.canaries.history_fields())
        return row

    def summary(self) -> str:
        """One line for the log."""
        line = (f"iteration {self.iteration}: acc/test {self.fairness.accuracy:.4f}, acc/retain "
                f"{self.retain_accuracy:.4f}, worst class {self.fairness.worst_class:.4f}, superclass gap "
                f"{self.fairness.superclass_gap:.4f}, originals left {self.originals_left}")
        for subset, certificate in self.certificates().items():
            if certificate.n_members:
                line += f", {subset} AUC <= {certificate.auc_high:.3f} TPR <= {certificate.tpr_high:.3f}"
        if self.canaries is not None:
            line += f", {self.canaries.summary()}"
        return line


@dataclass
class LoopResult:
    """What ``ForgettingLoop.run`` did: the outcome of every iteration it ran, and why it stopped."""

    outcomes: list[IterationOutcome]
    stopped_because: str


class ForgettingLoop:
    """The objects Algorithm 2 works on, and its steps.

    ``sisa`` holds the live membership (originals, canaries and synthetic samples); ``synthetic`` every synthetic
    sample generated so far; ``original_train`` the private records (the audit's members); ``non_members`` records
    of the same distribution never trained on; ``references`` RMIA's reference models; ``canaries`` the inserted
    and held-out canaries (None: no positive control); ``generator_canaries`` the ids of those that also trained
    ``generator`` (their forgotten ones probe the generator channel). The loop mutates ``sisa`` (and its state
    folder) and ``synthetic``; nothing else.
    """

    def __init__(self, *, sisa: SisaModel, original_train: Dataset, synthetic: Dataset, generator: Generator,
                 target: TargetDistribution, test: Dataset, non_members: Dataset, references: Sequence = (),
                 canaries: CanarySet | None = None, generator_canaries: Sequence[str] = (),
                 config: LoopConfig | None = None,
                 audit_config: AuditConfig | None = None, guidance_scale: float | None = None, augment_seed: int = 0,
                 tolerance: Tolerance | None = None) -> None:
        self.sisa, self.original_train, self.synthetic, self.generator = sisa, original_train, synthetic, generator
        # the references never change during a run: every audit re-reads their answers instead of re-querying
        self.references = [MemoizedPredict(predict) for predict in references]
        self.target, self.test, self.non_members = target, test, non_members
        self.canaries = canaries
        self.config = config or LoopConfig()
        self.config.validate()
        # the audits replay the shards' own training augmentations (none for the default recipe)
        self.audit_config = (audit_config or AuditConfig()).for_recipe(sisa.config.train)
        self.guidance_scale, self.augment_seed = guidance_scale, augment_seed
        self.tolerance = tolerance or Tolerance()
        self.original_ids = list(original_train.ids)
        self._original_set = set(self.original_ids)
        self._canary_set = set(canaries.inserted.ids) if canaries is not None else set()
        self._scheduled_canaries = set(forgotten_on_schedule(self._canary_set))
        self.generator_canaries = [str(i) for i in generator_canaries]

    # membership ---------------------------------------------------------------------------------------------
    def live_originals(self) -> list[str]:
        return [i for i in self.sisa.plan.live_ids() if i in self._original_set]

    def live_canaries(self) -> list[str]:
        return [i for i in self.sisa.plan.live_ids() if i in self._canary_set]

    def forgotten_originals(self) -> list[str]:
        live = set(self.sisa.plan.live_ids())
        return [i for i in self.original_ids if i not in live]

    def everything(self) -> Dataset:
        """Every record the model has ever held: originals, canaries and all synthetic samples so far."""
        records = self.original_train
        if self.canaries is not None:
            records = records.concat(without_canary_columns(self.canaries.inserted))
        return records.concat(self.synthetic) if len(self.synthetic) else records

    def current(self, with_canaries: bool = False) -> Dataset:
        """S now: the live records in the plan's order (canaries left out unless ``with_canaries``)."""
        live = self.sisa.plan.live_ids()
        if not with_canaries:
            live = [i for i in live if i not in self._canary_set]
        return self.everything().by_ids(live)

    def member_subsets(self) -> dict[str, list[str]]:
        """``forgotten`` and ``retained`` originals, once some are forgotten (both must be non-empty)."""
        forgotten = self.forgotten_originals()
        if not forgotten:
            return {}
        retained = self.live_originals()
        return {FORGOTTEN: forgotten, RETAINED: retained} if retained else {FORGOTTEN: forgotten}

    # one step -----------------------------------------------------------------------------------------------
    def forget_and_replenish(self, ids: Sequence[str], *, seed_base: int, audit: bool | None = None) -> ForgetStep:
        """Unlearn ``ids`` exactly (SISA) and give each shard as many new synthetic samples as it lost records
        (Alg. 2 line 5 / ``replenish``; canaries are not replaced), in one retraining of the affected shards.

        ``audit``: retrain one unlearned shard from scratch in the same pool and compare it bit for bit (default:
        when ``config.exactness_audit`` is ``every_step``; with ``final`` the loop's caller runs
        ``verify_final_exactness`` once instead). Raises ``DataError`` for an empty request and
        ``UnlearningNotExactError`` when the exactness audit finds the unlearned shard differs from a retrain.
        """
        ids = list(ids)
        if not ids:
            raise DataError("the deletion request is empty: pass at least one record id")
        start = time.perf_counter()
        forgotten_rows = self.sisa.plan.rows_of(ids)
        # canaries are an instrument, not data: a forgotten canary gets no synthetic replacement
        forgotten_rows = forgotten_rows[~forgotten_rows["id"].isin(self._canary_set)]
        dropped = set(ids)  # their images may be gone already (records deleted on request)
        remaining = self.everything().by_ids([i for i in self.sisa.plan.live_ids()
                                              if i not in dropped and i not in self._canary_set])
        parts, shards = [], []
        for shard, count in forgotten_rows.groupby("shard").size().items():
            new = replenish(remaining, int(count), self.generator, self.target, seed=seed_base + int(shard),
                            guidance_scale=self.guidance_scale)
            remaining = remaining.concat(new)
            parts.append(new)
            shards += [int(shard)] * len(new)
        replacements = parts[0] if parts else remaining.select(np.zeros(len(remaining), dtype=bool))
        for part in parts[1:]:
            replacements = replacements.concat(part)
        seconds_generating = time.perf_counter() - start
        if audit is None:
            audit = self.config.exactness_audit == "every_step"
        unlearned = self.sisa.unlearn(ids, audit=audit and self.sisa.config.audit_exactness,
                                      replacements=replacements, replacement_shards=shards)
        if unlearned.exact is False:
            raise UnlearningNotExactError(
                f"the unlearned shard {unlearned.audited_shard} differs from one retrained from scratch: unlearning "
                "is not exact on this machine (non-deterministic kernels or a changed thread count); stopping")
        self.synthetic = self.synthetic.concat(replacements) if len(self.synthetic) else replacements
        return ForgetStep(ids, replacements, unlearned, seconds_generating)

    def verify_final_exactness(self) -> dict:
        """Retrain every shard from scratch on its current data (one pool) and compare each with the stored final
        weights bit for bit: the model about to be served equals SISA retrained without every forgotten record.
        Returns the history row ``{"stage": "final_exactness", "unlearn_exact": 1.0 | 0.0, "shards_differing": [...],
        "seconds": ...}`` that ``exactness_verdict`` reads as verifying every step before it."""
        start = time.perf_counter()
        differing = self.sisa.shards_differing_from_scratch()
        return {"stage": FINAL_EXACTNESS_STAGE, "unlearn_exact": float(not differing),
                "shards_differing": differing, "seconds": time.perf_counter() - start}

    def audit(self, *, config: AuditConfig | None = None,
              extra_subsets: dict[str, list[str]] | None = None) -> AuditReport:
        """Membership inference on the current ensemble: every original record (or ``config.sample_size``) against
        as many non-members, with the ``forgotten``/``retained`` subsets and ``extra_subsets``. TPR levels the
        evaluation non-members cannot resolve are left out (``sampled_audit_config``)."""
        config = config or sampled_audit_config(self.audit_config, None,
                                                min(len(self.original_train), len(self.non_members)))
        return audit_membership(self.sisa.ensemble().predict_proba, self.original_train, self.non_members,
                                config=config, reference_predicts=self.references,
                                member_subsets={**self.member_subsets(), **(extra_subsets or {})})

    def audit_shards(self) -> dict[int, AuditReport]:
        """Each shard model against its own live original records (``shard_audit_size`` of them, stratified by
        class) and as many non-members: ``audit_per_model``. RMIA is left out (its references are ensembles)."""
        size = self.config.shard_audit_size
        if not size:
            return {}
        live = self.sisa.plan.live()
        live = live[live["id"].isin(self._original_set)]
        models = self.sisa.ensemble().models
        predicts = {str(shard): TorchPredictor(model) for shard, model in enumerate(models)
                    if (live["shard"] == shard).sum() >= 4}
        member_ids = {name: live.loc[live["shard"] == int(name), "id"].tolist() for name in predicts}
        attacks = tuple(a for a in self.audit_config.attacks if a != "rmia")
        config = dataclasses.replace(self.audit_config, attacks=attacks, sample_size=size)
        reports = audit_per_model(predicts, member_ids, self.original_train, self.non_members, config=config)
        return {int(name): report for name, report in reports.items()}

    def audit_canaries(self) -> CanaryAudit | None:
        """The positive control: live and forgotten canaries against the held-out ones (None without canaries)."""
        if self.canaries is None:
            return None
        return audit_canaries(self.sisa.ensemble().predict_proba, self.canaries, live_ids=self.live_canaries(),
                              config=self.audit_config, reference_predicts=self.references,
                              generator_ids=self.generator_canaries)

    def evaluate(self, iteration: int, *, step: ForgetStep | None = None, converged_streak: int = 0,
                 full_audit: bool = False) -> IterationOutcome:
        """Accuracy, fairness, bias, the membership audit (a sample of ``iteration_audit_size`` members unless
        ``full_audit``) and the canary audit of the current ensemble."""
        ensemble = self.sisa.ensemble()
        current = self.current()
        fairness = evaluate_model(ensemble.predict_proba, self.test)
        retain_accuracy = accuracy(ensemble.predict_proba(current.images), current.labels)
        bias = measure_bias(current.manifest, self.target.priors())
        start = time.perf_counter()
        audit_config = self.audit_config if full_audit else sampled_audit_config(
            self.audit_config, self.config.iteration_audit_size, min(len(self.original_train), len(self.non_members)))
        report = self.audit(config=audit_config)
        canaries = self.audit_canaries()
        shard_audits = self.audit_shards()
        seconds = {names.TIME_AUDIT: time.perf_counter() - start}
        outcome = IterationOutcome(iteration, fairness, retain_accuracy, bias, report, canaries, step,
                                   len(self.original_ids), len(self.forgotten_originals()), len(current), seconds,
                                   shard_audits)
        outcome.converged_streak = converged_streak + 1 if self._retained_certified_with_power(outcome) else 0
        return outcome

    def _retained_certified_with_power(self, outcome: IterationOutcome) -> bool:
        """The early-stop evidence: the retained originals (all of them before any is forgotten) certified, in an
        audit shown able to detect the live canaries. Nothing left to hold is no early stop: the loop ends anyway."""
        retained = outcome.certificates()[RETAINED]
        if retained.n_members == 0 or not retained.certified(self.tolerance) or outcome.canaries is None:
            return False
        return outcome.canaries.power

    # the loop -----------------------------------------------------------------------------------------------
    def forget_per_shard(self) -> int:
        """Originals (and the canaries forgotten on the same schedule: ``forgotten_on_schedule``, half of them)
        drawn per shard each iteration: ``forget_rate`` of the forgettable records, rounded up (``per_shard_count``),
        and at least ``forget_rate`` of those the fullest shard was dealt, so that ``forget_rate x iterations = 1``
        empties every shard in ``iterations`` steps (5 shards dealt 4020 unevenly left 4 originals for an eleventh
        step). Read from the plan's whole table, forgotten rows included: a resumed loop draws the same count."""
        forgettable = self._original_set | self._scheduled_canaries
        table = self.sisa.plan.table
        largest = int(table.loc[table["id"].isin(forgettable), "shard"].value_counts().max() or 0)
        return max(per_shard_count(self.config.forget_rate, len(self.original_ids) + len(self._scheduled_canaries),
                                   self.sisa.config.num_shards),
                   math.ceil(self.config.forget_rate * largest - 1e-9))

    def schedule_covers_everything(self) -> bool:
        """True when ``forget_rate x iterations`` reaches every original: then the loop goes on past
        ``iterations`` until none is left (a shard holding more than its share can leave a few)."""
        return self.config.forget_rate * self.config.iterations >= 1.0 - 1e-9

    def run(self, *, after_iteration: int = 0, converged_streak: int = 0,
            on_iteration: Callable[[IterationOutcome], None] | None = None) -> LoopResult:
        """Iterations ``after_iteration + 1 .. config.iterations`` of Algorithm 2 (resume by passing the last
        finished iteration and its ``converged_streak``), and more while originals are left when the schedule covers
        every original (``schedule_covers_everything``). Calls ``on_iteration(outcome)`` after each one, before
        the next starts. Deterministic: iteration i draws its forget set with seed i and its replacements with
        ``replenish_seed_base(augment_seed, i)``."""
        outcomes: list[IterationOutcome] = []
        patience = self.config.convergence_patience
        if patience and converged_streak >= patience:
            return LoopResult(outcomes, _converged_reason(converged_streak))
        per_shard = self.forget_per_shard()
        iteration = after_iteration
        while iteration < self.config.iterations or (self.schedule_covers_everything() and self.live_originals()):
            iteration += 1
            candidates = self.live_originals() + [i for i in self.live_canaries() if i in self._scheduled_canaries]
            if not self.live_originals():
                return LoopResult(outcomes, "no original records left")
            forget = self.sisa.sample_forget_set(candidates, per_shard, self.config.forget_order, seed=iteration)
            step = self.forget_and_replenish(forget, seed_base=replenish_seed_base(self.augment_seed, iteration))
            outcome = self.evaluate(iteration, step=step, converged_streak=converged_streak)
            converged_streak = outcome.converged_streak
            outcomes.append(outcome)
            if on_iteration is not None:
                on_iteration(outcome)
            if patience and converged_streak >= patience:
                return LoopResult(outcomes, _converged_reason(converged_streak))
        if not self.live_originals():
            return LoopResult(outcomes, f"no original records left after {iteration} iterations")
        return LoopResult(outcomes, f"ran all {self.config.iterations} iterations")


def _converged_reason(streak: int) -> str:
    return (f"converged: the retained originals were certified indistinguishable for {streak} iterations in a row, "
            "in audits that detected the canaries")


def held_certificates(report: AuditReport, forgotten: int, retained: int) -> dict[str, Certificate]:
    """``{"retained": ..., "forgotten": ...}``: the certificate of each set of originals in ``report`` (an audit
    with the loop's subsets). Before anything is forgotten every original is retained (the report's ``all``); a
    set with no records gets ``EMPTY_CERTIFICATE``; one with records of which none was evaluated is ``too_few``."""
    out = {}
    for subset, count in ((RETAINED, retained), (FORGOTTEN, forgotten)):
        if count == 0:
            out[subset] = EMPTY_CERTIFICATE
        elif subset == RETAINED and forgotten == 0:
            out[subset] = report.certificate("all")
        else:
            out[subset] = report.certificate(subset)  # records but none evaluated: too few, never a pass
    return out


def certificate_metrics(certificates: dict[str, Certificate], prefix: str, tolerance: Tolerance) -> dict[str, float]:
    """``<prefix><subset>/certified`` (and the certificate's other figures) for every held set."""
    out = {}
    for subset, certificate in certificates.items():
        out.update(certificate.metrics(f"{prefix}{subset}/", tolerance))
    return out


def audit_power_verdict(final: CanaryAudit | None, history: Sequence[dict]) -> str:
    """Whether the audit behind a final verdict was shown able to fail (``components.gate``'s ``audit_power``):
    ``shown`` when the final audit detected the live canaries, or, every canary having been forgotten, when the
    last iteration with live canaries (``history`` rows, ``IterationOutcome.history_row``) detected them and the
    final audit finds the forgotten ones within their chance bound; ``unverified`` without canaries; otherwise
    ``not_shown``."""
    if final is None:
        return AUDIT_POWER_UNVERIFIED
    if final.live is not None:
        return AUDIT_POWER_SHOWN if final.power else AUDIT_POWER_NOT_SHOWN
    with_live = [row for row in history if not np.isnan(row.get("canary_live_auc", float("nan")))]
    shown_before = bool(with_live) and with_live[-1].get("canary_power") == 1.0
    return AUDIT_POWER_SHOWN if shown_before and final.forgotten_within_bound else AUDIT_POWER_NOT_SHOWN


def natural_members_detected(history: Sequence[dict]) -> bool | None:
    """Whether the iteration-0 audit (the row of ``history`` with ``iteration`` 0) detected the natural members:
    some attack's exact Mann-Whitney test under its corrected level (``AuditReport.leak_detected``). None when
    ``history`` has no such row."""
    rows = [row for row in history if row.get("iteration") == 0 and "natural_leak_detected" in row]
    return bool(rows[0]["natural_leak_detected"]) if rows else None
