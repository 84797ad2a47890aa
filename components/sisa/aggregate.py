"""Aggregation of the k shard models into one predictor, and ``ShardEnsemble``, the servable result of SISA.

``AGGREGATIONS`` maps a name to a function (k, N, K) shard probabilities -> (N, K) ensemble probabilities:
- ``mean_softmax`` (default): the mean of the shards' softmax outputs;
- ``majority_vote``: the fraction of shards voting for each class (argmax of each shard); ties in ``predict``
  go to the lowest class index.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fairforget.components.atomic import atomic_folder
from fairforget.components.sisa.trainer import ModelSpec
from fairforget.components.training import predict_proba
from fairforget.errors import ConfigError

ENSEMBLE_META = "ensemble.json"


def aggregate_mean_softmax(shard_probabilities: np.ndarray) -> np.ndarray:
    return shard_probabilities.mean(axis=0, dtype=np.float64).astype(np.float32)


def aggregate_majority_vote(shard_probabilities: np.ndarray) -> np.ndarray:
    num_shards, _, num_classes = shard_probabilities.shape
    votes = np.argmax(shard_probabilities, axis=2)  # (k, N)
    counts = np.stack([(votes == c).sum(axis=0) for c in range(num_classes)], axis=1)
    return (counts / num_shards).astype(np.float32)


AGGREGATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean_softmax": aggregate_mean_softmax,
    "majority_vote": aggregate_majority_vote,
}


def check_aggregation(name: str) -> None:
    if name not in AGGREGATIONS:
        raise ConfigError(f"unknown aggregation {name!r}; known aggregations: {', '.join(sorted(AGGREGATIONS))}")


class ShardEnsemble:
    """k trained shard models and an aggregation rule.

    ``predict_proba(images uint8 (N, H, W, C)) -> float32 (N, K)`` rows summing to 1; ``shard_proba`` gives the
    per-shard (k, N, K). Saved as a folder: ``shard_<i>.pt`` (state dicts) and ``ensemble.json`` (model spec,
    aggregation, class names, shard sizes, sha256 of each weights file, checked on load).
    """

    def __init__(self, models: Sequence[torch.nn.Module], spec: ModelSpec, class_names: Sequence[str],
                 aggregation: str = "mean_softmax", shard_sizes: Sequence[int] | None = None,
                 info: dict | None = None) -> None:
        check_aggregation(aggregation)
        if not models:
            raise ConfigError("an ensemble needs at least one shard model")
        self.models = list(models)
        for model in self.models:
            model.eval()
        self.spec = spec
        self.class_names = list(class_names)
        self.aggregation = aggregation
        self.shard_sizes = list(shard_sizes) if shard_sizes is not None else [0] * len(self.models)
        self.info = dict(info or {})

    @property
    def num_shards(self) -> int:
        return len(self.models)

    def shard_proba(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """float64 (k, N, K) softmax outputs of each shard model (softmax in float64: ``predict_proba``)."""
        return np.stack([predict_proba(model, images, batch_size) for model in self.models])

    def predict_proba(self, images: np.ndarray, batch_size: int = 512, aggregation: str | None = None) -> np.ndarray:
        """float64 (N, K) aggregated class probabilities of uint8 images (N, H, W, C)."""
        name = aggregation or self.aggregation
        check_aggregation(name)
        return AGGREGATIONS[name](self.shard_proba(images, batch_size))

    def predict(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """int64 (N,) predicted class indices."""
        return np.argmax(self.predict_proba(images, batch_size), axis=1)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the ensemble to ``folder`` atomically (temporary sibling folder, then rename)."""
        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            hashes = []
            for i, model in enumerate(self.models):
                path = tmp / f"shard_{i}.pt"
                torch.save(model.state_dict(), path)
                hashes.append(hashlib.sha256(path.read_bytes()).hexdigest())
            meta = {"spec": self.spec.to_dict(), "class_names": self.class_names, "aggregation": self.aggregation,
                    "shard_sizes": self.shard_sizes, "sha256": hashes, "info": self.info}
            (tmp / ENSEMBLE_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "ShardEnsemble":
        """Read an ensemble written by ``save``; a missing or altered weights file raises ``ValueError``."""
        folder = Path(folder)
        meta_path = folder / ENSEMBLE_META
        if not meta_path.is_file():
            raise ConfigError(f"{meta_path} is missing: {folder} is not a saved ShardEnsemble")
        meta = json.loads(meta_path.read_text())
        spec = ModelSpec(**meta["spec"])
        models = []
        for i, expected in enumerate(meta["sha256"]):
            path = folder / f"shard_{i}.pt"
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != expected:
                raise ConfigError(f"{path} is missing or altered (sha256 mismatch): save the ensemble again")
            model = dataclasses.replace(spec, weights_path=None).build()  # the saved weights replace any init file
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            models.append(model)
        return cls(models, spec, meta["class_names"], meta["aggregation"], meta["shard_sizes"], meta.get("info"))
