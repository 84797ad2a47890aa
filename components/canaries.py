"""Canaries: the positive control of every membership audit (Jagielski, Ullman & Oprea 2020; Steinke, Nasr &
Jagielski 2023). A canary is a real image with a random WRONG label; a model can only predict that label by
having memorised the record, so a converged model's canaries are easy to detect, and an audit that cannot detect
them has shown no power to see a leak at all.

- ``reserve_canary_pool(audit, count)`` takes 2 x ``count`` images out of the audit pool (so they are never audited
  non-members nor reference-model training data) and leaves the rest;
- ``make_canaries(pool, count)`` relabels them: ``count`` *inserted* canaries (ids ``canary-<n>``, origin
  ``canary``) go into S; half of them (``forgotten_on_schedule``) are forgotten on the originals' schedule, the other
  half stay to the end so the final audit has live canaries; ``count`` matched *held-out* canaries
  (``canary-held-<n>``), built the same way, are never trained on. Crossed with that, half of the inserted
  canaries (``generator_trained``) also train the generator, so the forgotten ones split into the generator
  channel's probe (forgotten, but the generator learned them) and the unlearning control (forgotten, never in the
  generator);
- ``audit_canaries(...)`` runs the audit's attacks with the live (still trained-on), the forgotten and the
  generator-channel canaries as members and the held-out canaries as non-members, and reports the strongest attack's
  AUC on each with the
  smallest exact Mann-Whitney p-value over the attacks (``mann_whitney_p_value``), compared with ``chance_alpha``
  divided by the number of attacks. ``power`` is True when the live canaries are detected. The live canary pairs
  also give an empirical epsilon lower bound (``epsilon_lower_bound``), a figure, not a gate.

Canaries are an audit instrument only: they are excluded from every accuracy, fairness and bias figure.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Sequence

import numpy as np

from fairforget.components import names
from fairforget.components.dataset import Dataset
from fairforget.components.mia.config import AuditConfig
from fairforget.components.mia.metrics import mann_whitney_p_value  # noqa: F401 (re-exported)
from fairforget.components.mia.protocol import audit_membership, split_audit_pool
from fairforget.errors import ConfigError, DataError

CANARY_ORIGIN = "canary"
INSERTED_PREFIX, HELD_OUT_PREFIX = "canary-", "canary-held-"
LIVE, FORGOTTEN, GENERATOR_CHANNEL = "live", "forgotten", "generator_channel"
_STREAM_RESERVE, _STREAM_LABELS = 11, 12


MIN_CANARIES = 4  # two to calibrate the attacks, two to evaluate them


def default_canary_count(train_size: int) -> int:
    """1% of the private set S (40 for the default 4000 records), at least ``MIN_CANARIES``."""
    return max(MIN_CANARIES, round(0.01 * train_size))


def reserve_canary_pool(audit: Dataset, count: int, *, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(canary pool of 2 x ``count`` images, the rest of the audit pool). The pool holds ``count`` pairs of images
    of the same class, the first image of every pair in rows 0..count-1 and its partner ``count`` rows later, so
    inserted and held-out canaries can be matched class for class; pairs are taken in the order of a seeded
    permutation of the pool (in id order). ``count`` = 0 gives an empty pool and the audit pool unchanged.

    Raises ``ConfigError`` when ``count`` is negative or the canaries would take more than a quarter of the pool
    (the rest must still supply the reference models and the audited non-members)."""
    if count < 0:
        raise ConfigError(f"canaries must be >= 0 (0 switches them off), got {count}")
    if count == 0:
        return audit.select(np.zeros(len(audit), dtype=bool)), audit
    if 2 * count > len(audit) // 4:
        raise ConfigError(f"canaries={count} needs {2 * count} images of the audit pool, more than a quarter of its "
                          f"{len(audit)}: use at most {len(audit) // 8} canaries or prepare a larger audit split")
    ordered = audit.by_ids(sorted(audit.ids))
    labels = ordered.labels
    waiting: dict[int, int] = {}
    firsts, seconds = [], []
    for row in np.random.default_rng([seed, _STREAM_RESERVE]).permutation(len(ordered)):
        label = int(labels[row])
        if label in waiting:
            firsts.append(waiting.pop(label))
            seconds.append(int(row))
            if len(firsts) == count:
                break
        else:
            waiting[label] = int(row)
    if len(firsts) < count:
        raise ConfigError(f"the audit pool has too few images of a class to pair {count} canaries: use fewer")
    chosen = np.zeros(len(ordered), dtype=bool)
    chosen[firsts + seconds] = True
    rest = ordered.select(~chosen)
    pool = ordered.by_ids([ordered.ids[i] for i in firsts + seconds])
    return pool, rest


@dataclass
class CanarySet:
    """``inserted``: the canaries trained on (ids ``canary-<n>``); ``held_out``: matched canaries never trained on
    (``canary-held-<n>``). Both carry their wrong label in ``label``/``class_name`` and the true one in
    ``true_label``; ``origin`` is ``canary``. ``source_ids[i]``: the audit-split id of the image of
    ``inserted`` row i (what other audits of the same split must leave out once the generator learned it)."""

    inserted: Dataset
    held_out: Dataset
    source_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.inserted)

    def for_generator(self) -> Dataset:
        """The inserted canaries the generator also trains on (``generator_trained``), without canary columns."""
        rows = np.isin(self.inserted.ids, generator_trained(self.inserted.ids))
        return without_canary_columns(self.inserted.select(rows))

    def generator_source_ids(self) -> list[str]:
        """The audit-split ids of the images in ``for_generator``."""
        chosen = set(generator_trained(self.inserted.ids))
        return [source for i, source in zip(self.inserted.ids, self.source_ids) if i in chosen]


def make_canaries(pool: Dataset, count: int, *, seed: int = 0) -> CanarySet:
    """Relabel the 2 x ``count`` images of ``pool`` (``reserve_canary_pool``: row i and row i + count show the same
    class) with a random wrong class per pair (uniform over the other classes, seeded): row i becomes inserted
    canary ``canary-<i>`` and row i + count its matched held-out canary ``canary-held-<i>``, with the same true
    class and the same wrong label, so the two sets differ only in having been trained on."""
    if len(pool) != 2 * count:
        raise ConfigError(f"the canary pool holds {len(pool)} images; {count} canaries need {2 * count}")
    if pool.num_classes < 2:
        raise DataError("canaries need at least two classes (a canary carries a wrong label)")
    rng = np.random.default_rng([seed, _STREAM_LABELS])
    true = pool.labels
    if (true[:count] != true[count:]).any():
        raise ConfigError("the canary pool is not in matched pairs: build it with reserve_canary_pool")
    shift = rng.integers(1, pool.num_classes, size=count)
    wrong = (true + np.r_[shift, shift]) % pool.num_classes
    manifest = pool.manifest.copy()
    manifest["true_label"] = true
    manifest["label"] = wrong
    manifest["class_name"] = [pool.class_names[k] for k in wrong]
    manifest["superclass"] = [pool.superclass_of[pool.class_names[k]] for k in wrong]
    manifest["origin"] = CANARY_ORIGIN
    manifest["split"] = "train"
    manifest["id"] = [f"{INSERTED_PREFIX}{i}" for i in range(count)] + [f"{HELD_OUT_PREFIX}{i}" for i in range(count)]
    relabelled = dataclasses.replace(pool, manifest=manifest)
    inserted = np.arange(len(pool)) < count
    return CanarySet(relabelled.select(inserted), relabelled.select(~inserted), [str(i) for i in pool.ids[:count]])


def without_canary_columns(dataset: Dataset) -> Dataset:
    """``dataset`` without the ``true_label`` column (to join canaries with records that lack it)."""
    if "true_label" not in dataset.manifest.columns:
        return dataset
    return dataclasses.replace(dataset, manifest=dataset.manifest.drop(columns=["true_label"]))


def auc_chance_bound(n_members: int, n_non_members: int, alpha: float = 0.05, num_tests: int = 1) -> float:
    """The AUC a score unrelated to membership stays under with probability 1 - alpha: one-sided, Bonferroni over
    ``num_tests`` attacks, from the Mann-Whitney statistic's null variance (n1 + n2 + 1) / (12 n1 n2).
    For 20 + 20 evaluation samples and 8 attacks: 0.731."""
    if n_members < 1 or n_non_members < 1:
        raise ConfigError("need at least one member and one non-member")
    z = NormalDist().inv_cdf(1.0 - alpha / max(num_tests, 1))
    return 0.5 + z * math.sqrt((n_members + n_non_members + 1) / (12.0 * n_members * n_non_members))


def epsilon_lower_bound(inserted_scores, held_out_scores, alpha: float = 0.05) -> float:
    """An empirical lower bound on the (add/remove) epsilon of the training run from one run's canaries (Steinke,
    Nasr & Jagielski 2023): canary pair i was assigned at random (which of two same-class images was inserted), so
    guessing "the one with the higher score was inserted" is right with probability at most
    e^(2 eps) / (1 + e^(2 eps)) per pair under eps-DP (a swap is two add/remove steps), independently over pairs.
    With v right out of r guesses (tied pairs abstain), p_low = the one-sided (1 - ``alpha``) Clopper-Pearson
    lower bound of v / r, and the bound is max(0, logit(p_low) / 2). ``inserted_scores[i]`` and
    ``held_out_scores[i]`` belong to pair i. About 40 pairs, all guessed right, bound epsilon at about 1.3."""
    from scipy.stats import beta

    inserted, held_out = np.asarray(inserted_scores, float), np.asarray(held_out_scores, float)
    if inserted.shape != held_out.shape:
        raise ConfigError(f"inserted {inserted.shape} and held-out {held_out.shape} scores must pair up")
    guessed = inserted != held_out
    guesses, right = int(guessed.sum()), int((inserted > held_out).sum())
    if guesses == 0 or right == 0:
        return 0.0
    p_low = float(beta.ppf(alpha, right, guesses - right + 1))
    return max(0.0, math.log(p_low / (1.0 - p_low)) / 2.0) if p_low < 1.0 else float("inf")


@dataclass
class SubsetVerdict:
    """The strongest attack on one canary subset: its AUC, TPR at FPR <= 1% (the largest TPR on the ROC curve
    with FPR <= 0.01; with fewer than 100 held-out canaries that is the TPR at zero false positives, a
    conservative value), the smallest one-sided Mann-Whitney p-value over the attacks (``mann_whitney_p_value``),
    the level it is compared with (``alpha`` / number of attacks: declaring a detection is where a multiple-
    comparison correction belongs) and the evaluation counts."""

    auc: float
    tpr_at_1pct_fpr: float
    attack: str
    p_value: float
    level: float
    n_members: int
    n_non_members: int

    @property
    def detected(self) -> bool:
        return self.p_value <= self.level


@dataclass
class CanaryAudit:
    """The canary audit of one model. ``live``: the canaries it holds; ``forgotten``: those unlearned that never
    trained the generator (the unlearning control); ``generator_channel``: those unlearned that did (the generator
    channel's probe); each None when that subset is empty. ``epsilon_lower_bound``: ``epsilon_lower_bound`` of the
    canaries the model holds (None when it holds none); ``generator_channel_epsilon_lower_bound``: the same of the
    ``generator_channel`` canaries (what the synthetic replacements carry of records the model no longer holds)."""

    live: SubsetVerdict | None
    forgotten: SubsetVerdict | None
    aucs: dict[str, dict[str, float]] = field(default_factory=dict)  # subset -> attack -> AUC
    epsilon_lower_bound: float | None = None
    generator_channel: SubsetVerdict | None = None
    generator_channel_epsilon_lower_bound: float | None = None

    @property
    def live_auc(self) -> float | None:
        return self.live.auc if self.live else None

    @property
    def power(self) -> bool:
        """True when the live canaries are detected (strongest attack's p-value at or under its level)."""
        return self.live is not None and self.live.detected

    @property
    def forgotten_within_bound(self) -> bool:
        """True when no forgotten canary subset exists or no attack detects it."""
        return self.forgotten is None or not self.forgotten.detected

    def metrics(self) -> dict[str, float]:
        """``mia/canary/live_auc``, ``..._tpr_at_1pct_fpr``, ``..._p_value``, ``forgotten_...``, ``power``,
        ``level``, ``epsilon_lower_bound``."""
        out = {names.CANARY_POWER: float(self.power),
               names.CANARY_FORGOTTEN_WITHIN_BOUND: float(self.forgotten_within_bound)}
        if self.live is not None:
            out.update({names.CANARY_LIVE_AUC: self.live.auc, names.CANARY_LIVE_TPR: self.live.tpr_at_1pct_fpr,
                        names.CANARY_LIVE_P: self.live.p_value, names.CANARY_LEVEL: self.live.level})
        if self.forgotten is not None:
            out.update({names.CANARY_FORGOTTEN_AUC: self.forgotten.auc,
                        names.CANARY_FORGOTTEN_TPR: self.forgotten.tpr_at_1pct_fpr,
                        names.CANARY_FORGOTTEN_P: self.forgotten.p_value, names.CANARY_LEVEL: self.forgotten.level})
        if self.generator_channel is not None:
            out.update({names.CANARY_GENERATOR_AUC: self.generator_channel.auc,
                        names.CANARY_GENERATOR_P: self.generator_channel.p_value,
                        names.CANARY_GENERATOR_DETECTED: float(self.generator_channel.detected)})
        if self.epsilon_lower_bound is not None:
            out[names.CANARY_EPSILON_LOWER_BOUND] = self.epsilon_lower_bound
        if self.generator_channel_epsilon_lower_bound is not None:
            out[names.CANARY_GENERATOR_EPSILON_LOWER_BOUND] = self.generator_channel_epsilon_lower_bound
        return out

    def history_fields(self) -> dict[str, float]:
        return {"canary_live_auc": self.live.auc if self.live else float("nan"),
                "canary_forgotten_auc": self.forgotten.auc if self.forgotten else float("nan"),
                "canary_live_p_value": self.live.p_value if self.live else float("nan"),
                "canary_forgotten_p_value": self.forgotten.p_value if self.forgotten else float("nan"),
                "canary_generator_channel_p_value": (self.generator_channel.p_value if self.generator_channel
                                                     else float("nan")),
                "canary_power": float(self.power),
                "canary_epsilon_lower_bound": (self.epsilon_lower_bound if self.epsilon_lower_bound is not None
                                               else float("nan"))}

    def summary(self) -> str:
        parts = []
        for name, verdict in ((LIVE, self.live), (FORGOTTEN, self.forgotten),
                              ("generator-trained forgotten", self.generator_channel)):
            if verdict is not None:
                parts.append(f"{name} canaries AUC {verdict.auc:.3f} (p {verdict.p_value:.2g} vs level "
                             f"{verdict.level:.2g}, {verdict.n_members} vs {verdict.n_non_members})")
        if self.epsilon_lower_bound is not None:
            parts.append(f"empirical epsilon >= {self.epsilon_lower_bound:.2f}")
        if self.generator_channel_epsilon_lower_bound is not None:
            parts.append(f"generator channel's empirical epsilon >= {self.generator_channel_epsilon_lower_bound:.2f}")
        return "; ".join(parts) + f"; power {'shown' if self.power else 'NOT shown'}"


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, level: float = 0.01) -> float:
    ok = np.asarray(fpr) <= level + 1e-12
    return float(np.max(np.asarray(tpr)[ok])) if ok.any() else 0.0


def canary_label_log_probability(predict, canaries: Dataset) -> np.ndarray:
    """log p(canary label | image) (N,) in float64: the membership score that needs no fitting (a model that
    predicts a canary's wrong label has memorised it)."""
    probabilities = np.asarray(predict(canaries.images), dtype=np.float64)
    return np.log(np.maximum(probabilities[np.arange(len(canaries)), canaries.labels], 1e-300))


def audit_canaries(predict, canaries: CanarySet, *, live_ids: Sequence[str], config: AuditConfig,
                   reference_predicts: Sequence = (), generator_ids: Sequence[str] = ()) -> CanaryAudit:
    """Attack the model ``predict`` (uint8 (N, H, W, C) -> (N, K)) with the audit's attacks: members are the
    inserted canaries (subsets ``live`` = ``live_ids``; the unlearned rest split into ``generator_channel``, those
    in ``generator_ids`` (they trained the generator), and ``forgotten``), non-members the held-out ones.
    Half of each (stratified by class) calibrates the attacks, the other half is evaluated, as in every audit.
    The empirical epsilon lower bound reads every live canary pair (``epsilon_lower_bound``), and apart every
    generator-channel pair (``generator_channel_epsilon_lower_bound``)."""
    attacks = tuple(a for a in config.attacks if a != "rmia" or reference_predicts)
    live_ids = [i for i in canaries.inserted.ids if i in set(live_ids)]
    unlearned = [i for i in canaries.inserted.ids if i not in set(live_ids)]
    channel_ids = [i for i in unlearned if i in set(map(str, generator_ids))]
    forgotten_ids = [i for i in unlearned if i not in set(channel_ids)]
    members_of = {LIVE: live_ids, FORGOTTEN: forgotten_ids, GENERATOR_CHANNEL: channel_ids}
    subsets = {name: ids for name, ids in members_of.items() if ids}
    if len(subsets) == 1:  # one subset is all members: the report's "all" holds it
        subsets = {}
    canary_config = dataclasses.replace(config, attacks=attacks, sample_size=None, fpr_levels=(),
                                        min_per_class=max(config.min_per_class, len(canaries)))
    report = audit_membership(predict, without_canary_columns(canaries.inserted),
                              without_canary_columns(canaries.held_out), config=canary_config,
                              reference_predicts=reference_predicts, member_subsets=subsets,
                              class_matched_subsets=False)  # random halves of one draw: no matching needed
    verdicts: dict[str, SubsetVerdict | None] = {name: None for name in members_of}
    aucs: dict[str, dict[str, float]] = {}
    for name, ids in members_of.items():
        if not ids:
            continue
        subset = name if subsets else "all"
        if subset not in report.results:  # too few to have an evaluation member
            continue
        by_attack = report.results[subset]
        aucs[name] = {attack: r.estimates["auc"].value for attack, r in by_attack.items()}
        best = max(by_attack.values(), key=lambda r: r.estimates["auc"].value)
        p_value = min(mann_whitney_p_value(r.scores[r.is_member], r.scores[~r.is_member])
                      for r in by_attack.values())
        verdicts[name] = SubsetVerdict(best.estimates["auc"].value, _tpr_at(best.fpr, best.tpr), best.attack,
                                       p_value, config.chance_alpha / len(by_attack), best.n_members,
                                       best.n_non_members)
    epsilons: dict[str, float | None] = {LIVE: None, GENERATOR_CHANNEL: None}
    for name in epsilons:
        if members_of[name]:
            rows = np.isin(canaries.inserted.ids, members_of[name])
            scores = canary_label_log_probability(predict, canaries.inserted.select(rows)), \
                canary_label_log_probability(predict, canaries.held_out.select(rows))
            epsilons[name] = epsilon_lower_bound(*scores, alpha=config.chance_alpha)
    return CanaryAudit(verdicts[LIVE], verdicts[FORGOTTEN], aucs, epsilons[LIVE], verdicts[GENERATOR_CHANNEL],
                       epsilons[GENERATOR_CHANNEL])


@dataclass
class AuditPool:
    """The audit split cut for one run: the canaries (None when switched off), the reference half (RMIA's
    reference models train on it) and the non-member half (the audited non-members). Disjoint."""

    canaries: CanarySet | None
    reference_half: Dataset
    non_members: Dataset


def _inserted_index(canary_id: str) -> int | None:
    """n of an inserted canary id ``canary-<n>``; None for any other id (held-out canaries included)."""
    if not canary_id.startswith(INSERTED_PREFIX) or canary_id.startswith(HELD_OUT_PREFIX):
        return None
    return int(canary_id[len(INSERTED_PREFIX):])


def generator_trained(ids) -> list[str]:
    """The inserted canaries of ``ids`` that also train the generator: n % 4 in {0, 1}, half of them. With
    ``forgotten_on_schedule`` (even n) this crosses the two choices: among the canaries Algorithm 2 forgets, n % 4
    == 0 went into the generator (the generator channel's probe: once forgotten, only the synthetic replacements can
    still carry them) and n % 4 == 2 did not (the unlearning control: exact unlearning leaves nothing of them)."""
    return [i for i in map(str, ids) if (n := _inserted_index(i)) is not None and n % 4 in (0, 1)]


def forgotten_on_schedule(ids) -> list[str]:
    """The inserted canaries of ``ids`` that Algorithm 2 forgets on the originals' schedule: those of even index
    (``canary-0``, ``canary-2``, ...), the unlearning control. The odd ones stay in the model to the end, so the
    final audit always has live canaries to show its power on."""
    return [i for i in map(str, ids) if (n := _inserted_index(i)) is not None and n % 2 == 0]


def inserted_canary_count(ids) -> int:
    """How many of ``ids`` are inserted canaries (``canary-<n>``; held-out canaries are never trained on)."""
    return sum(1 for i in map(str, ids) if i.startswith(INSERTED_PREFIX) and not i.startswith(HELD_OUT_PREFIX))


def cut_audit_pool(audit: Dataset, *, canaries: int, seed: int = 0) -> AuditPool:
    """Take ``canaries`` x 2 canary images out of ``audit`` first (``reserve_canary_pool``), then split the rest
    into the reference and non-member halves (``split_audit_pool``). Deterministic in ``seed``."""
    pool, rest = reserve_canary_pool(audit, canaries, seed=seed)
    canary_set = make_canaries(pool, canaries, seed=seed) if canaries else None
    reference_half, non_members = split_audit_pool(rest, seed=seed)
    return AuditPool(canary_set, reference_half, non_members)


def with_canaries(train: Dataset, canaries: CanarySet | None) -> Dataset:
    """``train`` followed by the inserted canaries: the training set SISA sees."""
    return train.concat(without_canary_columns(canaries.inserted)) if canaries is not None else train
