"""The audit protocol: who is a member, what is calibration and what is evaluation, and running the attacks.

Data (the default scenario):
- members: the original real ``train`` records (all of them, forgotten ones included);
- the ``audit`` split (same class mix as ``train``, never trained on by the target or the generator) is cut by
  ``split_audit_pool`` into a *reference half* (RMIA's reference models train on it) and a *non-member half*.

Deterministic splits (``split_calibration_evaluation``), all functions of (ids, labels, seed) only:
1. each set's rows are ordered by id; when ``sample_size`` is below a set's size, a seeded subset of that many
   rows is kept, stratified by class like step 2 (stream ``seed, 1`` for members, ``seed, 2`` for non-members);
2. exactly round(calibration_fraction * n) rows of each set go to *calibration*, stratified by class (each class
   its share, rounded by largest remainder); within a class the first rows of a seeded permutation (stream
   ``seed, 3`` / ``seed, 4``) are taken. The rest is *evaluation*.
Attacks, their models and their decision thresholds are fitted on calibration only and measured on evaluation
only. With ``cross_fit`` (the default) the roles are then swapped: a second copy of each attack is fitted on the
evaluation half and scores the calibration half, so every record is scored by an attack that never saw it (2-fold
cross-fitting) and every reported figure is measured on all audited records, twice as many as one evaluation half
(the certification's power depends on it: ``certify``). Each half's scores are centred on the decision threshold
fitted on the other half, so one cut at 0 is both halves' decision rule and the pooled ROC compares like with like.
A member subset (``forgotten``, ``retained``, ...) is judged against *class-matched* non-members (the largest
set of them with the subset's class mix: ``class_matched_rows``; the whole member set needs no matching, both
sides are drawn stratified from splits of one class mix) and gets its own decision threshold, fitted on that
subset's fitting members against its fitting non-members (the attack models themselves are fitted once per half, on all its
members); a subset without fitting members uses the threshold of all members. Yu et al. fitted thresholds on the
evaluation set (an oracle upper bound); we do not.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from fairforget.components.dataset import Dataset
from fairforget.components.mia.augmentations import make_fixed_augmentations
from fairforget.components.mia.certify import CERTIFYING_FPR, tpr_upper_at_fpr
from fairforget.components.mia.config import AuditConfig
from fairforget.components.mia.metrics import (
    chance_success_bound,
    check_fpr_levels,
    evaluate_scores,
    fit_threshold,
    required_non_members,
    roc_curve_points,
)
from fairforget.components.mia.queries import Predict, QueryOutputs, query_model, torch_threads
from fairforget.components.mia.registry import ATTACKS
from fairforget.components.mia.results import ALL_MEMBERS, AttackResult, AuditReport
from fairforget.errors import ConfigError

_STREAM_SUBSAMPLE_MEMBERS, _STREAM_SUBSAMPLE_NON_MEMBERS = 1, 2
_STREAM_CALIBRATION_MEMBERS, _STREAM_CALIBRATION_NON_MEMBERS = 3, 4
_STREAM_AUDIT_POOL = 5


@dataclass
class AuditSplit:
    """The four disjoint sets of an audit."""

    calibration_members: Dataset
    calibration_non_members: Dataset
    evaluation_members: Dataset
    evaluation_non_members: Dataset

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in
                ("calibration_members", "calibration_non_members", "evaluation_members", "evaluation_non_members")}


def _by_id(dataset: Dataset) -> Dataset:
    return dataset.by_ids(sorted(dataset.ids))


def _stratified_mask(dataset: Dataset, fraction: float, seed: int, stream: int) -> np.ndarray:
    """bool (N,) with exactly round(fraction * N) rows chosen, stratified by class (rows in id order).

    Class c gets floor(fraction * n_c) rows, plus one for the classes with the largest remainders (ties: lower
    label first) until the total is reached; within a class, the first rows of a seeded permutation are taken.
    """
    rng = np.random.default_rng([seed, stream])
    labels = dataset.labels
    classes, counts = np.unique(labels, return_counts=True)
    quotas = np.floor(fraction * counts).astype(int)
    remainders = fraction * counts - quotas
    missing = round(fraction * len(dataset)) - int(quotas.sum())
    quotas[np.argsort(-remainders, kind="stable")[:max(missing, 0)]] += 1
    mask = np.zeros(len(dataset), dtype=bool)
    for label, quota in zip(classes, quotas):
        rows = np.flatnonzero(labels == label)
        mask[rng.permutation(rows)[:quota]] = True
    return mask


def split_audit_pool(audit: Dataset, seed: int = 0, reference_fraction: float = 0.5) -> tuple[Dataset, Dataset]:
    """(reference_half, non_member_half) of the audit pool, stratified by class (stream ``seed, 5``, id order).

    The reference half trains RMIA's reference models; the non-member half supplies the audited non-members.
    """
    if len(audit) < 2:
        raise ConfigError(f"the audit pool has {len(audit)} samples: prepare data with a larger audit split")
    if not 0.0 < reference_fraction < 1.0:
        raise ConfigError(f"reference_fraction must lie strictly between 0 and 1, got {reference_fraction}")
    ordered = _by_id(audit)
    in_reference = _stratified_mask(ordered, reference_fraction, seed, _STREAM_AUDIT_POOL)
    return ordered.select(in_reference), ordered.select(~in_reference)


def _check_compatible(members: Dataset, non_members: Dataset) -> None:
    if len(members) == 0 or len(non_members) == 0:
        raise ConfigError(f"need members and non-members, got {len(members)} and {len(non_members)}")
    if members.class_names != non_members.class_names:
        raise ConfigError("members and non-members have different class lists: take both from the same data version")
    if members.images.shape[1:] != non_members.images.shape[1:]:
        raise ConfigError(f"image shapes differ: members {members.images.shape[1:]}, non-members "
                          f"{non_members.images.shape[1:]}")
    overlap = set(members.ids) & set(non_members.ids)
    if overlap:
        raise ConfigError(f"{len(overlap)} samples are both members and non-members (e.g. {sorted(overlap)[:3]}): "
                          f"non-members must come from the audit split, never from train")


def split_calibration_evaluation(members: Dataset, non_members: Dataset, config: AuditConfig) -> AuditSplit:
    """Equal numbers of members and non-members, each cut into calibration and evaluation (see the module doc)."""
    _check_compatible(members, non_members)
    size = config.sample_size or min(len(members), len(non_members))
    for name, dataset in (("members", members), ("non-members", non_members)):
        if size > len(dataset):
            raise ConfigError(f"sample_size {size} exceeds the {len(dataset)} {name} available: lower sample_size")
    parts = []
    for dataset, subsample_stream, calibration_stream in (
        (members, _STREAM_SUBSAMPLE_MEMBERS, _STREAM_CALIBRATION_MEMBERS),
        (non_members, _STREAM_SUBSAMPLE_NON_MEMBERS, _STREAM_CALIBRATION_NON_MEMBERS),
    ):
        ordered = _by_id(dataset)
        if size < len(ordered):
            ordered = ordered.select(_stratified_mask(ordered, size / len(ordered), config.seed, subsample_stream))
        calibration = _stratified_mask(ordered, config.calibration_fraction, config.seed, calibration_stream)
        parts.append((ordered.select(calibration), ordered.select(~calibration)))
    (cal_m, eval_m), (cal_n, eval_n) = parts
    if min(len(cal_m), len(cal_n), len(eval_m), len(eval_n)) == 0:
        raise ConfigError(f"sample_size {size} leaves an empty calibration or evaluation set: use more samples")
    return AuditSplit(cal_m, cal_n, eval_m, eval_n)


def make_attack(name: str, config: AuditConfig):
    """A fresh attack object for ``name`` (a key of ``ATTACKS``)."""
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; known attacks: {', '.join(sorted(ATTACKS))}")
    return ATTACKS[name](config)


def audit_membership(
    target_predict: Predict,
    members: Dataset,
    non_members: Dataset,
    *,
    attacks: Sequence[str] | None = None,
    config: AuditConfig | None = None,
    reference_predicts: Sequence[Predict] = (),
    member_subsets: Mapping[str, Sequence[str]] | None = None,
    class_matched_subsets: bool = True,
) -> AuditReport:
    """Run membership-inference attacks against ``target_predict`` and measure them.

    Args:
        target_predict: uint8 (N, H, W, C) -> class probabilities (N, K).
        members: the records the target was trained on.
        non_members: records of the same distribution it never saw.
        attacks: keys of ``ATTACKS`` (default ``config.attacks``).
        config: sizes, augmentations, FPR levels, bootstrap (``AuditConfig``; defaults when None).
        reference_predicts: RMIA's reference models (``train_reference_ensembles``).
        member_subsets: name -> member ids, each reported on its own (with its own threshold).
        class_matched_subsets: judge each subset against class-matched non-members (``class_matched_rows``);
            False: against every non-member, valid only when the subsets are random partitions of the members
            (the canaries' live and forgotten halves), whose class mixes differ from the non-members' by chance.

    Returns:
        An ``AuditReport``: per subset and attack, success, advantage, AUC and TPR at the FPR levels with bootstrap
        intervals, the chance bound per subset, and ``metrics()`` / ``table()`` / ``summary()``.

    Raises:
        ConfigError: unknown attacks, too few samples for a level, rmia without references, overlapping members
            and non-members.

    Every image is queried once per fixed augmentation (target and reference models), and every attack reads the
    same outputs. Guarantees: fitted on calibration only, measured on evaluation only; identical inputs and seed
    give identical numbers.
    """
    config = (config or AuditConfig()).for_recipe() if (config is None or config.num_augmentations is None) else config
    config.validate()
    attacks = tuple(attacks if attacks is not None else config.attacks)
    if not attacks:
        raise ConfigError("attacks is empty: name at least one attack")
    if len(set(attacks)) != len(attacks):
        raise ConfigError(f"attacks {attacks} lists an attack twice")
    attack_objects = {name: make_attack(name, config) for name in attacks}
    if "rmia" in attacks and not reference_predicts:
        raise ConfigError("rmia needs at least one reference model: pass reference_predicts=train_reference_models(...)"
                          " or drop 'rmia' from the attacks")
    subsets = _check_subsets(member_subsets or {}, members, attacks)
    split = split_calibration_evaluation(members, non_members, config)
    check_fpr_levels(config.fpr_levels, len(split.evaluation_non_members))

    combined = split.calibration_members.concat(split.calibration_non_members).concat(
        split.evaluation_members).concat(split.evaluation_non_members)
    sizes = split.sizes()
    is_member = np.r_[np.ones(sizes["calibration_members"], bool), np.zeros(sizes["calibration_non_members"], bool),
                      np.ones(sizes["evaluation_members"], bool), np.zeros(sizes["evaluation_non_members"], bool)]
    is_calibration = np.arange(len(combined)) < sizes["calibration_members"] + sizes["calibration_non_members"]
    augmentations = make_fixed_augmentations(config.num_augmentations, config.augmentation_padding, config.seed)

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    query = {"augmentations": augmentations, "num_classes": members.num_classes, "batch_size": config.batch_size,
             "show_progress": config.show_progress}
    with torch_threads(config.num_threads):
        probabilities = query_model(target_predict, combined.images, description="query target", **query)
        seconds["query_target"] = time.perf_counter() - start
        reference = None
        if "rmia" in attacks:
            start = time.perf_counter()
            reference = np.stack([query_model(predict, combined.images, description=f"query reference {i}", **query)
                                  for i, predict in enumerate(reference_predicts)])
            seconds["query_reference"] = time.perf_counter() - start
    queries = QueryOutputs(probabilities, combined.labels, reference)
    calibration = queries.select(np.flatnonzero(is_calibration))
    evaluation = queries.select(np.flatnonzero(~is_calibration))
    calibration_is_member = is_member[is_calibration]
    evaluation_is_member = is_member[~is_calibration]
    evaluation_ids = combined.ids[~is_calibration]
    calibration_ids = combined.ids[is_calibration]

    subset_rows = {ALL_MEMBERS: np.ones(len(evaluation), dtype=bool)}
    subset_calibration_rows = {ALL_MEMBERS: np.ones(len(calibration), dtype=bool)}
    for name, ids in subsets.items():
        ids = list(ids)
        in_evaluation, in_calibration = np.isin(evaluation_ids, ids), np.isin(calibration_ids, ids)
        if class_matched_subsets:
            subset_rows[name] = class_matched_rows(evaluation.labels, evaluation_is_member, in_evaluation,
                                                   seed=(config.seed, 6))
            subset_calibration_rows[name] = class_matched_rows(calibration.labels, calibration_is_member,
                                                               in_calibration, seed=(config.seed, 7))
        else:
            subset_rows[name] = ~evaluation_is_member | in_evaluation
            subset_calibration_rows[name] = ~calibration_is_member | in_calibration
    results: dict[str, dict[str, AttackResult]] = {name: {} for name in subset_rows}
    fitted: dict[str, dict] = {}
    start = time.perf_counter()
    for name, attack in attack_objects.items():
        forward = _fit_and_score(attack, calibration, calibration_is_member, evaluation, subset_calibration_rows)
        fitted[name] = {"threshold": forward.threshold,
                        **{k: getattr(attack, k) for k in ("a", "sign") if hasattr(attack, k)}}
        backward = (_fit_and_score(make_attack(name, config), evaluation, evaluation_is_member, calibration,
                                   subset_rows) if config.cross_fit else None)
        for subset, rows in subset_rows.items():
            subset_member = evaluation_is_member[rows]
            scores, threshold = forward.scores[rows], forward.subset_thresholds[subset]
            if backward is not None:  # both halves, each centred on the threshold fitted without it
                back_rows = subset_calibration_rows[subset]
                subset_member = np.r_[subset_member, calibration_is_member[back_rows]]
                scores = np.r_[scores - threshold, backward.scores[back_rows] - backward.subset_thresholds[subset]]
                threshold = 0.0
            if not subset_member.any():
                continue
            # a class-matched subset may have fewer non-members than a level needs: that level is left out
            levels = tuple(level for level in config.fpr_levels
                           if (~subset_member).sum() >= required_non_members(level))
            estimates = evaluate_scores(subset_member, scores, threshold, levels,
                                        config.num_bootstrap, config.confidence, config.seed)
            fpr, tpr, _ = roc_curve_points(subset_member, scores)
            tpr_high = tpr_upper_at_fpr(subset_member, scores, CERTIFYING_FPR, config.confidence)
            results[subset][name] = AttackResult(name, subset, estimates, threshold, fpr, tpr,
                                                 int(subset_member.sum()), int((~subset_member).sum()), tpr_high,
                                                 scores, subset_member)
    seconds["attacks"] = time.perf_counter() - start
    results = {subset: by_attack for subset, by_attack in results.items() if by_attack}
    chance = {subset: chance_success_bound(next(iter(by_attack.values())).n_members,
                                           next(iter(by_attack.values())).n_non_members,
                                           config.chance_alpha, len(attacks))
              for subset, by_attack in results.items()}
    predicted = probabilities[:, 0].argmax(axis=1) == combined.labels
    sizes.update({f"subset_{name}": int((subset_rows[name] & evaluation_is_member).sum()) for name in subsets})
    sizes.update({f"subset_{name}_non_members": int((subset_rows[name] & ~evaluation_is_member).sum())
                  for name in subsets})
    return AuditReport(
        config=replace(config, attacks=attacks),
        results=results,
        chance_bound=chance,
        member_accuracy=float(predicted[is_member].mean()),
        non_member_accuracy=float(predicted[~is_member].mean()),
        sizes=sizes,
        augmentations=[a.describe() for a in augmentations],
        seconds=seconds,
        fitted=fitted,
    )


def class_matched_rows(labels: np.ndarray, is_member: np.ndarray, in_subset: np.ndarray,
                       seed: tuple[int, int]) -> np.ndarray:
    """bool (N,): the subset's members (``is_member & in_subset``) and the largest set of non-members whose class
    mix is the subset's. A subset judged against every non-member would be told apart by its class mix alone
    whenever that mix differs (forgetting in shard order, a deletion request of one class).

    Class c gets floor(r * m_c) non-members, m_c the subset's members of class c and r = min over the classes
    present in both of (non-members of c) / m_c; within a class the first rows of a seeded permutation
    (``np.random.default_rng(seed)``, rows in the given order) are kept. Classes without members get none. A subset
    member whose class has no non-member at all is kept (nothing can be matched to it; the audit splits are drawn
    with every class). Deterministic in (labels, masks, seed)."""
    members = is_member & in_subset
    candidates = ~is_member
    classes = np.unique(labels[members])
    wanted = {c: int((labels[members] == c).sum()) for c in classes}
    available = {c: int((labels[candidates] == c).sum()) for c in classes}
    ratios = [available[c] / wanted[c] for c in classes if available[c]]
    ratio = min(ratios) if ratios else 0.0
    rng = np.random.default_rng(list(seed))
    chosen = members.copy()
    for c in classes:
        rows = np.flatnonzero(candidates & (labels == c))
        chosen[rng.permutation(rows)[:int(np.floor(ratio * wanted[c] + 1e-9))]] = True
    return chosen


@dataclass
class _Scored:
    """One fitted copy of an attack: its scores on the other half, and the decision threshold per subset fitted on
    its own half (``ALL_MEMBERS``: on every member of it)."""

    scores: np.ndarray
    threshold: float
    subset_thresholds: dict[str, float]


def _fit_and_score(attack, fitting: QueryOutputs, fitting_is_member: np.ndarray, scored: QueryOutputs,
                   fitting_subset_rows: Mapping[str, np.ndarray]) -> _Scored:
    """Fit ``attack`` and its thresholds on ``fitting`` only, then score ``scored`` (float (N,)). A subset's rows
    in ``fitting_subset_rows`` are its members there plus every non-member; a subset without members there uses
    the threshold of all members."""
    attack.fit(fitting, fitting_is_member)
    fitting_scores = attack.score(fitting)
    threshold = fit_threshold(fitting_is_member, fitting_scores)
    subset_thresholds = {subset: (fit_threshold(fitting_is_member[own], fitting_scores[own])
                                  if fitting_is_member[own].any() else threshold)
                         for subset, own in fitting_subset_rows.items()}
    return _Scored(attack.score(scored), threshold, subset_thresholds)


def audit_per_model(
    predicts: Mapping[str, Predict],
    member_ids: Mapping[str, Sequence[str]],
    members: Dataset,
    non_members: Dataset,
    *,
    attacks: Sequence[str] | None = None,
    config: AuditConfig | None = None,
    reference_predicts: Sequence[Predict] = (),
) -> dict[str, AuditReport]:
    """One audit per model (e.g. per SISA shard): model ``name`` against its own members ``member_ids[name]``
    and as many non-members. FPR levels the smaller evaluation set cannot resolve are dropped (a shard of 800
    members leaves 400 evaluation non-members: TPR at 1% FPR is kept, at 0.1% dropped). Log each report with
    ``report.metrics(root=f"mia_shard/{name}")``.
    """
    config = config or AuditConfig()
    reports = {}
    for name, predict in predicts.items():
        own = members.by_ids(list(member_ids[name]))
        size = min(config.sample_size or len(own), len(own), len(non_members))
        evaluation_non_members = size - round(config.calibration_fraction * size)
        levels = tuple(level for level in config.fpr_levels if evaluation_non_members >= required_non_members(level))
        shard_config = replace(config, sample_size=size, fpr_levels=levels)
        reports[name] = audit_membership(predict, own, non_members, attacks=attacks, config=shard_config,
                                         reference_predicts=reference_predicts)
    return reports


def _check_subsets(member_subsets: Mapping[str, Sequence[str]], members: Dataset,
                   attacks: Sequence[str]) -> dict[str, set]:
    known = set(members.ids)
    out = {}
    for name, ids in member_subsets.items():
        if name == ALL_MEMBERS or name in attacks or "/" in name or not name:
            raise ConfigError(f"subset name {name!r} is reserved or invalid: use e.g. 'forgotten' or 'retained'")
        ids = set(ids)
        unknown = ids - known
        if unknown:
            raise ConfigError(f"subset {name!r} has {len(unknown)} ids that are not members (e.g. "
                              f"{sorted(unknown)[:3]}): subsets must be drawn from the members")
        out[name] = ids
    return out

