"""Reference models for RMIA: classifiers that never saw the members, trained on one half of the audit pool."""

from __future__ import annotations

from components.dataset import Dataset
from components.mia.queries import TorchPredictor


def train_reference_models(
    audit_half: Dataset,
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
    from components.models import build_classifier
    from components.training import TrainConfig, fit_classifier

    if num_models < 1:
        raise ValueError(f"num_models must be >= 1, got {num_models}")
    if len(audit_half) == 0:
        raise ValueError("audit_half is empty: pass the reference half from split_audit_pool(dataset.split('audit'))")
    config = train_config or TrainConfig()
    height, _, channels = audit_half.images.shape[1:]
    predictors = []
    for index in range(num_models):
        model = build_classifier(model_name, audit_half.num_classes, channels, height, seed=seed + index)
        fit_classifier(model, audit_half.images, audit_half.labels, config, seed=seed + index, progress=progress)
        predictors.append(TorchPredictor(model))
    return predictors
