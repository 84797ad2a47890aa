"""Reference models for RMIA: classifiers that never saw the members, trained on one half of the audit pool."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fairforget.components.dataset import Dataset
from fairforget.components.mia.queries import TorchPredictor
from fairforget.errors import ConfigError


def train_reference_models(
    audit_half: Dataset,
    *,
    num_models: int = 1,
    train_config=None,
    model_name: str = "small_cnn",
    seed: int = 0,
    progress: bool = False,
) -> list[TorchPredictor]:
    """Train ``num_models`` classifiers on ``audit_half`` (the half of the audit pool that ``split_audit_pool``
    reserves for them; it never contains members or evaluated non-members) and return them as predict callables.

    Model i is ``build_classifier(model_name, ..., seed=seed + i)`` trained by ``fit_classifier`` on all of
    ``audit_half`` with ``train_config`` (default ``TrainConfig()``, the shards' own recipe) and seed ``seed + i``;
    several models differ by initialisation, data order and augmentation draws. Deterministic on the CPU.
    Train them once and pass them to every ``audit_membership`` call of a run.
    """
    from fairforget.components.models import build_classifier
    from fairforget.components.training import TrainConfig, fit_classifier

    if num_models < 1:
        raise ConfigError(f"num_models must be >= 1, got {num_models}")
    if len(audit_half) == 0:
        raise ConfigError("audit_half is empty: pass the reference half from split_audit_pool(dataset.split('audit'))")
    config = train_config or TrainConfig()
    height, _, channels = audit_half.images.shape[1:]
    predictors = []
    for index in range(num_models):
        model = build_classifier(model_name, audit_half.num_classes, channels, height, seed=seed + index)
        fit_classifier(model, audit_half.images, audit_half.labels, config, seed=seed + index, progress=progress)
        predictors.append(TorchPredictor(model))
    return predictors


def target_shard_mix(plan, leave_out=()) -> list[dict[int, int]]:
    """Each shard's live class counts in a SISA ``plan`` (``ShardPlan``), ``leave_out`` ids (e.g. canaries, an
    audit instrument) not counted: ``[{label: count}, ...]``, one dict per shard. What the reference shards match."""
    live = plan.live()
    live = live[~live["id"].astype(str).isin(set(map(str, leave_out)))]
    return [{int(label): int(count) for label, count in live.loc[live["shard"] == shard, "label"].value_counts()
             .sort_index().items()} for shard in range(plan.num_shards)]


def draw_matched_shard(reference_half: Dataset, class_counts: dict[int, int], seed) -> Dataset:
    """A reference shard: ``class_counts[k]`` records of class k drawn without replacement from ``reference_half``
    (all of them when it holds fewer), in a seeded order. Deterministic in ``seed`` (an int or a tuple of ints)."""
    rng = np.random.default_rng(seed)
    labels = reference_half.labels
    chosen = []
    for label, count in sorted(class_counts.items()):
        rows = np.flatnonzero(labels == label)
        chosen.append(rng.choice(rows, size=min(int(count), len(rows)), replace=False))
    rows = np.concatenate(chosen) if chosen else np.empty(0, np.int64)
    return reference_half.by_ids([reference_half.ids[i] for i in rng.permutation(np.sort(rows))])


def train_reference_ensembles(
    reference_half: Dataset,
    *,
    sisa_config,
    num_models: int = 4,
    state_dir,
    shard_mix: Sequence[dict[int, int]] | None = None,
) -> list:
    """RMIA's reference models built and trained like the target: each is an ensemble of ``sisa_config``'s
    classifier, recipe, slices and aggregation over records of ``reference_half`` (never members, never audited
    non-members), model i seeded by ``sisa_config.seed + 1000 * (i + 1)``. Returns their ``predict_proba``
    callables (uint8 (N, H, W, C) -> float64 (N, K)).

    With ``shard_mix`` (``target_shard_mix`` of the target: one ``{label: count}`` per shard) each reference shard
    j is its own draw of those class counts from ``reference_half`` (``draw_matched_shard``; shards of one reference
    may share records, since the reference half is smaller than the target's data), so the reference shards have the
    target's size and class mix. Without it, each reference is a SISA model partitioning all of ``reference_half``
    (shards of ``len(reference_half) / num_shards`` records in its class mix). Either way the references hold real
    records only: a synthetic share drawn from the target's generator would give them what that generator learned
    from the target's members (docs/audit.md).

    Every shard keeps its content-addressed checkpoints under ``state_dir/reference-<i>``, so a later call with the
    same data and config (a deletion request, a resumed run) trains nothing. All shards of all references train in
    one ``sisa_config.executor`` pool.
    """
    from pathlib import Path

    from fairforget.components.executors import run_tasks
    from fairforget.components.sisa.aggregate import ShardEnsemble
    from fairforget.components.sisa.model import SisaModel
    from fairforget.components.sisa.trainer import train_shard

    if num_models < 1:
        raise ConfigError(f"num_models must be >= 1, got {num_models}")
    if len(reference_half) < sisa_config.num_shards:
        raise ConfigError(f"the reference half holds {len(reference_half)} records, fewer than the "
                          f"{sisa_config.num_shards} shards: prepare a larger audit split")
    if shard_mix is None:
        references = []
        for index in range(num_models):
            config = sisa_config.replace(seed=sisa_config.seed + 1000 * (index + 1), audit_exactness=False)
            references.append([SisaModel.create(reference_half, config, Path(state_dir) / f"reference-{index}")])
    else:
        references = []
        for index in range(num_models):
            seed = sisa_config.seed + 1000 * (index + 1)
            shards = []
            for shard, counts in enumerate(shard_mix):
                draw = draw_matched_shard(reference_half, counts, (seed, shard))
                config = sisa_config.replace(num_shards=1, seed=seed + shard, audit_exactness=False)
                shards.append(SisaModel.create(draw, config, Path(state_dir) / f"reference-{index}" / f"shard-{shard}"))
            references.append(shards)
    tasks = [model.shard_task(shard) for models in references for model in models for shard in model.stale_shards()]
    run_tasks(train_shard, tasks, sisa_config.executor, sisa_config.max_workers, sisa_config.ray_address)
    predicts = []
    for models in references:
        if len(models) == 1:
            predicts.append(models[0].ensemble().predict_proba)
        else:
            shard_models = [model.shard_models()[0] for model in models]
            predicts.append(ShardEnsemble(shard_models, models[0].spec, models[0].class_names,
                                          sisa_config.aggregation,
                                          [len(model.plan.live()) for model in models]).predict_proba)
    return predicts
