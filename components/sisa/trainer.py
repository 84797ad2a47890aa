"""Train one shard over its slice prefixes, resuming from the deepest stored checkpoint (Bourtoule et al. Fig. 2).

Stage r (1..R) trains the shard model for ``epochs_per_slice`` epochs on slices 1..r and stores a checkpoint keyed
by ``stage_keys`` (see ``checkpoints``). ``train_shard`` first looks for the deepest stage whose key is stored,
restores weights, optimizer and RNG state from it and trains only the stages after it. Hence:
- a fresh shard trains all R stages;
- after a deletion from slice r, stages < r keep their keys and are reused, stages >= r are retrained;
- a shard whose data did not change finds its last key and trains nothing.
Because a checkpoint holds all the state training depends on, resuming equals never having stopped, and the
result equals training from scratch on the remaining data, bit for bit (on the same thread count).

``train_shard`` is a module-level function of a picklable ``ShardTask`` so that any executor can run it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from fairforget.components.config import ConfigBase
from fairforget.components.models import build_classifier
from fairforget.components.sisa.checkpoints import CheckpointStore, stage_keys
from fairforget.components.training import TrainConfig, make_optimizer, train_epochs


@dataclass(frozen=True)
class ModelSpec(ConfigBase):
    """What to build: a ``CLASSIFIERS`` name and the data geometry."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    weights_path: str | None = None
    weights_md5: str | None = None

    def build(self, seed: int | None = None) -> torch.nn.Module:
        return build_classifier(self.name, self.num_classes, self.in_channels, self.image_size, seed=seed,
                                weights_path=self.weights_path)


@dataclass
class ShardTask:
    """Everything one shard's training needs. ``slice_images[r]`` is uint8 (n_r, H, W, C) aligned with
    ``slice_ids[r]`` and ``slice_labels[r]``."""

    shard: int
    seed: int
    spec: ModelSpec
    train: TrainConfig
    epochs_per_slice: int
    slice_ids: list[list[str]]
    slice_images: list[np.ndarray]
    slice_labels: list[np.ndarray]
    checkpoint_dir: str
    progress: bool = False

    def key_spec(self) -> dict:
        """The non-data inputs of training, hashed into ``key_0``. ``weights_path`` enters by its md5 only."""
        spec = self.spec.to_dict()
        spec.pop("weights_path")
        return {"model": spec, "train": self.train.to_dict(), "epochs_per_slice": self.epochs_per_slice,
                "shard_seed": self.seed}

    def keys(self) -> list[str]:
        return stage_keys(self.key_spec(), self.slice_ids)


@dataclass
class ShardResult:
    shard: int
    final_key: str
    stages_trained: list[int] = field(default_factory=list)  # 1-based stage numbers trained in this call
    resumed_from: int = 0  # the stage whose checkpoint training started from (0 = fresh weights)
    samples_seen: int = 0  # sample-epochs of training done in this call
    seconds: float = 0.0


def latest_stored_stage(task: ShardTask, store: CheckpointStore) -> int:
    """The deepest stage r whose key is stored (0 if none)."""
    keys = task.keys()
    for stage in range(len(keys) - 1, 0, -1):
        if store.has(keys[stage]):
            return stage
    return 0


def train_shard(task: ShardTask) -> ShardResult:
    """Bring shard ``task.shard`` up to date: train the stages after the deepest stored checkpoint."""
    started = time.perf_counter()
    store = CheckpointStore(task.checkpoint_dir)
    keys = task.keys()
    num_stages = len(task.slice_ids)
    resume = latest_stored_stage(task, store)
    result = ShardResult(task.shard, keys[-1], resumed_from=resume)
    if resume == num_stages:
        result.seconds = time.perf_counter() - started
        return result

    with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left as it was
        _train_stages(task, store, keys, resume, result)
    result.seconds = time.perf_counter() - started
    return result


def _train_stages(task: ShardTask, store: CheckpointStore, keys: list[str], resume: int, result: ShardResult) -> None:
    num_stages = len(task.slice_ids)
    model = task.spec.build(seed=task.seed)
    optimizer = make_optimizer(model, task.train)
    generator = torch.Generator()
    if resume == 0:
        generator.manual_seed(task.seed)
        torch.manual_seed(task.seed)
    else:
        state = store.load(keys[resume])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])

    for stage in range(resume + 1, num_stages + 1):
        images = np.concatenate(task.slice_images[:stage])
        labels = np.concatenate(task.slice_labels[:stage])
        train_epochs(model, optimizer, images, labels, task.epochs_per_slice, task.train, generator,
                     progress=task.progress, description=f"shard {task.shard} stage {stage}/{num_stages}")
        store.save(keys[stage], {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "meta": {"shard": task.shard, "stage": stage, "samples": int(len(labels))},
        })
        result.stages_trained.append(stage)
        result.samples_seen += int(len(labels)) * task.epochs_per_slice
