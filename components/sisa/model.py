"""``SisaModel``: the state Algorithm 2 drives (plan + samples + checkpoints), and its train / add / unlearn loop.

Typical use (the lead's loop, each iteration)::

    sisa = SisaModel.create(train_set, SisaConfig(), state_dir)   # once
    sisa.train()                                                   # all shards, all slices
    sisa.add(synthetic_set)                                        # replenishment -> last slice of some shards
    sisa.train()                                                   # retrains only the stale stages
    forget = sisa.sample_forget_set(original_ids, n_per_shard=..., order="last_slice_first", seed=it)
    report = sisa.unlearn(forget)                                  # UnlearnReport; report.exact from the audit
    sisa.unlearn(forget, replacements=new, replacement_shards=shards)  # forget and replenish, one retrain
    sisa.ensemble().predict_proba(images)                          # (N, K)

The state folder holds ``plan.csv`` (membership), ``sisa.json`` (config, model spec, classes) and
``checkpoints/`` (content-addressed, see ``checkpoints``). Images are not stored there: ``SisaModel.load`` takes
the data set again. After ``unlearn`` the images of forgotten samples are dropped from memory and every
checkpoint that saw them is deleted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from fairforget.components.atomic import write_text_atomically

from fairforget.components.config import ConfigBase
from fairforget.components.dataset import Dataset
from fairforget.components.executors import EXECUTORS, run_tasks
from fairforget.components.sisa.aggregate import ShardEnsemble, check_aggregation
from fairforget.components.sisa.checkpoints import CheckpointError, CheckpointStore, stage_keys
from fairforget.components.sisa.plan import PlanError, ShardPlan, validate_counts
from fairforget.components.sisa.trainer import ModelSpec, ShardResult, ShardTask, train_shard
from fairforget.components.sisa.unlearn import UnlearnReport, check_deletion_capacity, sample_forget_set, stage_cost
from fairforget.components.training import TrainConfig
from fairforget.components.versioning import md5_of_file
from fairforget.errors import ConfigError

PLAN_FILE = "plan.csv"
STATE_FILE = "sisa.json"
CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class SisaConfig(ConfigBase):
    """SISA settings. ``epochs_per_slice`` None means ``max(1, round(2 * train.epochs / (R + 1)))``, so a shard's
    total training equals about ``train.epochs`` passes over its full data (Bourtoule et al. Sec. IV-B).
    ``threads_per_shard`` pins torch's threads inside each shard's training: results depend on the thread count,
    so it is part of every checkpoint key and fixed whichever executor runs the shard."""

    num_shards: int = 5
    num_slices: int = 4
    seed: int = 0
    classifier: str = "small_cnn"
    weights_path: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    epochs_per_slice: int | None = None
    threads_per_shard: int = 1
    aggregation: str = "mean_softmax"
    max_deletion_fraction: float = 0.2
    executor: str = "local"
    max_workers: int | None = None
    ray_address: str | None = None
    audit_exactness: bool = True
    progress: bool = False

    def validate(self) -> None:
        validate_counts(self.num_shards, self.num_slices)
        self.train.validate()
        check_aggregation(self.aggregation)
        from fairforget.components.models import CLASSIFIERS

        if self.classifier not in CLASSIFIERS:
            raise ConfigError(f"unknown classifier {self.classifier!r}; known classifiers: {', '.join(sorted(CLASSIFIERS))}")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"unknown executor {self.executor!r}; known executors: {', '.join(sorted(EXECUTORS))}")
        if not 0 < self.max_deletion_fraction <= 1:
            raise ConfigError(f"max_deletion_fraction must be in (0, 1], got {self.max_deletion_fraction}")
        if self.threads_per_shard < 1:
            raise ConfigError(f"threads_per_shard must be >= 1, got {self.threads_per_shard}")
        if self.epochs_per_slice is not None and self.epochs_per_slice < 1:
            raise ConfigError(f"epochs_per_slice must be >= 1 (or None for the default), got {self.epochs_per_slice}")

    def stage_epochs(self) -> int:
        if self.epochs_per_slice is not None:
            return self.epochs_per_slice
        return max(1, round(2 * self.train.epochs / (self.num_slices + 1)))



@dataclass
class TrainReport:
    """What one ``train()`` call did."""

    shards_trained: list[int]
    stages_trained: int
    seconds: float
    results: list[ShardResult] = field(default_factory=list)


def shard_seed(seed: int, shard: int) -> int:
    """Each shard's own seed (initial weights, data order, augmentations), derived from the global seed."""
    return int(np.random.SeedSequence([int(seed), int(shard)]).generate_state(1)[0])




class SisaModel:
    """k shard models over R slices, with exact unlearning. Build with ``create`` or ``load``."""

    def __init__(self, state_dir: str | os.PathLike, config: SisaConfig, plan: ShardPlan, spec: ModelSpec,
                 class_names: Sequence[str], images: Mapping[str, np.ndarray]) -> None:
        config.validate()
        self.state_dir = Path(state_dir)
        self.config = config
        self.plan = plan
        self.spec = spec
        self.class_names = list(class_names)
        self._images: dict[str, np.ndarray] = dict(images)
        self.store = CheckpointStore(self.state_dir / CHECKPOINT_DIR)

    # construction and persistence --------------------------------------------------------------------------
    @classmethod
    def create(cls, dataset: Dataset, config: SisaConfig, state_dir: str | os.PathLike,
               groups: Sequence[str] | None = None) -> "SisaModel":
        """A new, untrained SISA model over every row of ``dataset`` (pass the train split). ``groups`` (optional,
        one key per row): rows with one key share a shard (``ShardPlan.build``), e.g. the copies of a record."""
        config.validate()
        if len(dataset) == 0:
            raise ConfigError("the training data set is empty: pass dataset.split('train')")
        _, height, width, channels = dataset.images.shape
        if height != width:
            raise ConfigError(f"images must be square, got {height}x{width}")
        weights_md5 = md5_of_file(config.weights_path) if config.weights_path else None
        spec = ModelSpec(config.classifier, dataset.num_classes, channels, height, config.weights_path, weights_md5)
        plan = ShardPlan.build(dataset.ids, dataset.labels, config.num_shards, config.num_slices, config.seed,
                               groups=groups)
        model = cls(state_dir, config, plan, spec, dataset.class_names, dict(zip(dataset.ids, dataset.images)))
        model.save()
        return model

    def save(self) -> Path:
        """Write ``plan.csv`` and ``sisa.json`` to the state folder (each atomically)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.state_dir / PLAN_FILE, self.plan.to_csv_text())
        state = {"config": self.config.to_dict(), "spec": self.spec.to_dict(), "class_names": self.class_names}
        write_text_atomically(self.state_dir / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")
        return self.state_dir

    @staticmethod
    def read_plan(state_dir: str | os.PathLike) -> ShardPlan:
        """The plan of a state folder without its images (who is where, who is forgotten): ``plan.live_ids()``,
        ``plan.table``."""
        state_dir = Path(state_dir)
        if not (state_dir / STATE_FILE).is_file():
            raise FileNotFoundError(f"{state_dir / STATE_FILE} is missing: {state_dir} is not a SISA state folder")
        config = SisaConfig.from_dict(json.loads((state_dir / STATE_FILE).read_text())["config"])
        return ShardPlan.from_csv_text((state_dir / PLAN_FILE).read_text(), config.num_shards, config.num_slices,
                                       config.seed)

    @classmethod
    def load(cls, state_dir: str | os.PathLike, dataset: Dataset, *, forgetting: Sequence[str] = (),
             **overrides) -> "SisaModel":
        """Reopen a state folder; ``dataset`` must hold every live sample (extra rows are ignored) except those in
        ``forgetting``: live records whose images are gone (deleted on request) and that the caller unlearns next
        (``unlearn`` never needs the images of what it removes). ``overrides`` replace config fields that do not
        change results (executor, max_workers, ...)."""
        state_dir = Path(state_dir)
        plan = cls.read_plan(state_dir)  # refuses a folder that is not a state folder
        state = json.loads((state_dir / STATE_FILE).read_text())
        config = dataclasses.replace(SisaConfig.from_dict(state["config"]), **overrides)
        live = plan.live()
        absent = set(map(str, forgetting)) - set(dataset.ids.astype(str))
        live = live[~live["id"].isin(absent)]
        rows = dataset.by_ids(live["id"].tolist())
        if not np.array_equal(rows.labels, live["label"].to_numpy()):
            raise ConfigError("the data set's labels differ from the ones the SISA model trained on: pass the same data")
        return cls(state_dir, config, plan, ModelSpec(**state["spec"]), state["class_names"],
                   dict(zip(rows.ids, rows.images)))

    # the loop ----------------------------------------------------------------------------------------------
    def add(self, dataset: Dataset, shard_of: Mapping[str, int] | Sequence[int] | None = None,
            into_last_slices: int = 1) -> list[int]:
        """Add new samples (e.g. synthetic) to the last slice(s); return the shards that became stale.
        Call ``train()`` to bring them up to date."""
        self._check_new_samples(dataset)
        rows = self.plan.add(dataset.ids, dataset.labels, shard_of, into_last_slices)
        self._images.update(zip(dataset.ids, dataset.images))
        self.save()
        return sorted(set(rows["shard"].astype(int).tolist()))

    def _check_new_samples(self, dataset: Dataset) -> None:
        if dataset.class_names != self.class_names:
            raise ConfigError("the new samples use a different class list than the SISA model")
        if dataset.images.shape[1:] != (self.spec.image_size, self.spec.image_size, self.spec.in_channels):
            raise ConfigError(f"new images have shape {dataset.images.shape[1:]}, the model takes "
                              f"{(self.spec.image_size, self.spec.image_size, self.spec.in_channels)}")

    def shard_task(self, shard: int, checkpoint_dir: str | os.PathLike | None = None) -> ShardTask:
        """The training task of one shard on its current live data."""
        slices = self.plan.slice_ids(shard)
        labels = self.plan.live().set_index("id")["label"]
        shape = (0, self.spec.image_size, self.spec.image_size, self.spec.in_channels)
        slice_images = [np.stack([self._images[i] for i in ids]) if ids else np.empty(shape, np.uint8)
                        for ids in slices]
        slice_labels = [labels.loc[ids].to_numpy(dtype=np.int64) if ids else np.empty(0, np.int64) for ids in slices]
        train = dataclasses.replace(self.config.train, num_threads=self.config.threads_per_shard)
        return ShardTask(shard, shard_seed(self.config.seed, shard), self.spec, train, self.config.stage_epochs(),
                         slices, slice_images, slice_labels, str(checkpoint_dir or self.store.folder),
                         self.config.progress)

    def final_keys(self) -> list[str]:
        """The key of each shard's last-stage checkpoint for the current data."""
        return [self.shard_task_keys(s)[-1] for s in range(self.config.num_shards)]

    def shard_task_keys(self, shard: int) -> list[str]:
        """``[key_0, ..., key_R]`` of ``shard`` on its current data (no images needed)."""
        probe = ShardTask(shard, shard_seed(self.config.seed, shard), self.spec,
                          dataclasses.replace(self.config.train, num_threads=self.config.threads_per_shard),
                          self.config.stage_epochs(), self.plan.slice_ids(shard), [], [], "")
        return stage_keys(probe.key_spec(), probe.slice_ids)

    def stale_shards(self) -> list[int]:
        """Shards whose final checkpoint for the current data is not stored."""
        return [s for s, key in enumerate(self.final_keys()) if not self.store.has(key)]

    def train(self) -> TrainReport:
        """Train every stale shard (from its deepest valid checkpoint), in parallel by ``config.executor``."""
        report, _ = self._train_with(())
        return report

    def _train_with(self, extra: Sequence[ShardTask]) -> tuple[TrainReport, list[ShardResult]]:
        """``train()``, with ``extra`` tasks (e.g. an exactness audit's from-scratch retrain in a scratch folder)
        run in the same pool, first (they are the longest): the audit costs no round of its own."""
        started = time.perf_counter()
        sizes = self.plan.shard_sizes()
        empty = [s for s, n in enumerate(sizes) if n == 0]
        if empty:
            raise PlanError(f"shards {empty} have no data: use fewer shards")
        stale = self.stale_shards()
        tasks = list(extra) + [self.shard_task(s) for s in stale]
        results = run_tasks(train_shard, tasks, self.config.executor, self.config.max_workers,
                            self.config.ray_address, progress=self.config.progress)
        extra_results, results = results[:len(extra)], results[len(extra):]
        report = TrainReport(stale, sum(len(r.stages_trained) for r in results), time.perf_counter() - started,
                             results)
        return report, extra_results

    def unlearn(self, ids: Sequence[str], audit: bool | None = None, replacements: Dataset | None = None,
                replacement_shards: Sequence[int] | None = None) -> UnlearnReport:
        """Forget ``ids`` exactly: retrain each holding shard from the checkpoint before its first affected slice.

        Validates everything before changing anything (unknown / repeated / already forgotten ids, deletion
        capacity, empty shards). Afterwards the forgotten images are dropped and every checkpoint that saw them
        is deleted. With ``audit`` (default ``config.audit_exactness``) one retrained shard is retrained from
        scratch and compared bit for bit: ``report.exact``. The caller decides whether a mismatch fails its step.

        ``replacements`` (with ``replacement_shards``, one shard per row as in ``add``; without it, ``add``'s
        balancing rule) join the last slice of their shards in the same retraining, so forgetting and
        replenishing cost one retrain instead of two. The weights equal those of ``unlearn(ids)``,
        ``add(replacements, replacement_shards)``, ``train()`` bit for bit.
        """
        started = time.perf_counter()
        ids = [str(i) for i in ids]
        if not ids:
            raise ConfigError("the deletion request is empty: pass at least one sample id")
        rows = self.plan.rows_of(ids)
        check_deletion_capacity(self.plan, rows, self.config.max_deletion_fraction)
        first_slice = stage_cost(self.plan, ids)
        stale = self.stale_shards()
        if stale:
            raise CheckpointError(f"shards {stale} are not trained on their current data: call train() before unlearn()")
        replacing = replacements is not None and len(replacements) > 0
        if replacing:
            self._check_new_samples(replacements)
            clash = set(replacements.ids) & set(self.plan.table["id"])
            if clash:
                raise PlanError(f"replacement id {sorted(clash)[0]!r} is already in the plan: new samples need new ids")
        self.plan.mark_deleted(ids)
        for i in ids:
            self._images.pop(i, None)
        if replacing:
            self.add(replacements, shard_of=replacement_shards)
        self.save()
        audited_shard = min(first_slice) if (audit if audit is not None else self.config.audit_exactness) else None
        with tempfile.TemporaryDirectory(prefix="sisa-audit-") as scratch:
            # the audit's from-scratch retrain runs in the same pool as the retraining, not after it
            extra = [self.shard_task(audited_shard, checkpoint_dir=scratch)] if audited_shard is not None else []
            trained, fresh = self._train_with(extra)
            exact = self._equals_stored(audited_shard, scratch, fresh[0]) if fresh else None
        keep = {key for s in range(self.config.num_shards) for key in self.shard_task_keys(s)}
        pruned = self.store.prune(keep)
        return UnlearnReport(points=len(ids), shards_retrained=sorted(trained.shards_trained),
                             slices_retrained=trained.stages_trained, first_slice=first_slice,
                             seconds=time.perf_counter() - started, checkpoints_pruned=len(pruned), exact=exact,
                             audited_shard=audited_shard)

    def sample_forget_set(self, candidates: Sequence[str], n_per_shard: int, order: str = "random",
                          seed: int = 0) -> list[str]:
        """Up to ``n_per_shard`` live ids of ``candidates`` per shard, chosen by ``order`` (``FORGET_ORDERS``)."""
        return sample_forget_set(self.plan, candidates, n_per_shard, order, seed)

    def shards_differing_from_scratch(self) -> list[int]:
        """Retrain every shard from scratch on its current data, in one pool (scratch folders, the store is not
        touched), and return the shards whose final weights differ from the stored ones in any bit ([]: exact)."""
        with tempfile.TemporaryDirectory(prefix="sisa-audit-") as scratch:
            folders = [Path(scratch) / str(shard) for shard in range(self.config.num_shards)]
            tasks = [self.shard_task(shard, checkpoint_dir=str(folder)) for shard, folder in enumerate(folders)]
            _, fresh = self._train_with(tasks)
            return [shard for shard, (folder, result) in enumerate(zip(folders, fresh))
                    if not self._equals_stored(shard, str(folder), result)]

    def audit_exactness(self, shard: int = 0) -> bool:
        """Retrain ``shard`` from scratch on its current data in a scratch folder; True when every weight tensor
        equals the stored final checkpoint bit for bit."""
        with tempfile.TemporaryDirectory(prefix="sisa-audit-") as scratch:
            return self._equals_stored(shard, scratch, train_shard(self.shard_task(shard, checkpoint_dir=scratch)))

    def _equals_stored(self, shard: int, scratch: str, fresh: ShardResult) -> bool:
        """True when the final weights ``fresh`` trained in ``scratch`` equal ``shard``'s stored ones bit for bit."""
        stored = self.store.load(self.final_keys()[shard])["model"]
        weights = CheckpointStore(scratch).load(fresh.final_key)["model"]
        return stored.keys() == weights.keys() and all(torch.equal(stored[k], weights[k]) for k in stored)

    # serving -----------------------------------------------------------------------------------------------
    def shard_models(self) -> list[torch.nn.Module]:
        """The k trained shard models (eval mode); raises ``CheckpointError`` if a shard is not trained yet."""
        models = []
        for shard, key in enumerate(self.final_keys()):
            if not self.store.has(key):
                raise CheckpointError(f"shard {shard} is not trained on its current data: call train() first")
            model = dataclasses.replace(self.spec, weights_path=None).build()
            model.load_state_dict(self.store.load(key)["model"])
            models.append(model.eval())
        return models

    def ensemble(self, aggregation: str | None = None) -> ShardEnsemble:
        """The servable ensemble of the current shard models."""
        info = {"num_slices": self.config.num_slices, "seed": self.config.seed, "final_keys": self.final_keys(),
                "forgotten": int(self.plan.table["deleted"].sum())}
        return ShardEnsemble(self.shard_models(), self.spec, self.class_names, aggregation or self.config.aggregation,
                              self.plan.shard_sizes(), info)

    def shard_sizes(self) -> list[int]:
        return self.plan.shard_sizes()


__all__ = ["SisaConfig", "SisaModel", "TrainReport", "shard_seed"]
