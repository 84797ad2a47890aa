"""Reference models for RMIA: classifiers that never saw the members, trained on one half of the audit pool."""

from __future__ import annotations

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


def train_reference_ensembles(
    reference_half: Dataset,
    *,
    sisa_config,
    num_models: int = 4,
    state_dir,
) -> list:
    """RMIA's reference models built and trained like the target: each is a SISA ensemble with the target's
    ``sisa_config`` (classifier, recipe, shards, slices, aggregation) over ``reference_half`` (never members, never
    audited non-members), model i partitioned and initialised with seed ``sisa_config.seed + 1000 * (i + 1)``.
    Returns their ``predict_proba`` callables (uint8 (N, H, W, C) -> float64 (N, K)).

    Each ensemble keeps its content-addressed checkpoints in ``state_dir/reference-<i>``, so a later call with the
    same data and config (a deletion request, a resumed run) trains nothing. The reference shards are
    ``len(reference_half) / num_shards`` records each, smaller than the target's shards when the target trains on
    more records than the reference half holds.
    """
    from pathlib import Path

    from fairforget.components.sisa.model import SisaModel

    if num_models < 1:
        raise ConfigError(f"num_models must be >= 1, got {num_models}")
    if len(reference_half) < sisa_config.num_shards:
        raise ConfigError(f"the reference half holds {len(reference_half)} records, fewer than the "
                          f"{sisa_config.num_shards} shards: prepare a larger audit split")
    predicts = []
    for index in range(num_models):
        config = sisa_config.replace(seed=sisa_config.seed + 1000 * (index + 1), audit_exactness=False)
        model = SisaModel.create(reference_half, config, Path(state_dir) / f"reference-{index}")
        model.train()
        predicts.append(model.ensemble().predict_proba)
    return predicts
