"""Deterministic classifier training and batched prediction on uint8 images.

Images come in as uint8 (N, H, W, C) (the ``Dataset.images`` layout) and are fed to the model as float32
(N, C, H, W) in [0, 1] (no mean/std normalisation).

Training augmentations (``TRAIN_AUGMENTATIONS``; the Moments attack replays this family):
- ``horizontal_flip``: each image is mirrored left-right with probability 0.5;
- ``random_crop``: each image is zero-padded by ``crop_padding`` pixels (default 4) on every side, the padding
  filled with 0 (black, the Fashion-MNIST background; torchvision ``RandomCrop(padding=4, fill=0)`` does the same)
  and an H x W window is cut at a uniformly random offset (dy, dx) in [0, 2 * padding]^2.
The per-image parameters are drawn by ``random_augmentation_params`` and applied by ``apply_augmentation``, so a
caller can replay fixed augmentations (e.g. flip=True, dy=dx=padding is a pure mirror).

Determinism: ``fit_classifier`` and ``train_epochs`` switch on ``torch.use_deterministic_algorithms(True)``, and all
randomness (data order, augmentation) comes from one ``torch.Generator`` seeded by the caller; the initial weights
come from ``build_classifier(..., seed=...)``; the learning rate of every step is a pure function of the config and
the step's index within the ``train_epochs`` call (``scheduled_lr``), so there is no scheduler state to store. On
the CPU two runs with the same seed, data and thread count give bit-identical weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fairforget.components.config import ConfigBase
from fairforget.components.progress import progress as progress_bar
from fairforget.errors import ConfigError

TRAIN_AUGMENTATIONS: dict[str, str] = {
    "horizontal_flip": "mirror left-right with probability 0.5",
    "random_crop": "zero-pad by crop_padding (default 4) px, fill 0, cut an HxW window at a uniform offset",
}

SCHEDULES: dict[str, str] = {
    "constant": "lr at every step",
    "onecycle": "cosine warm-up from lr / 25 to lr over the first 30% of the steps, then cosine down to lr / 1e4",
    "cosine": "cosine from lr down to lr / 1e4",
}


@dataclass(frozen=True)
class TrainConfig(ConfigBase):
    """How one classifier trains. The defaults let every SISA shard of small_cnn (BatchNorm) fit its own
    Fashion-MNIST data, and so memorise it measurably: an audit of a model that fits nothing would certify nothing
    (measurements: docs/sisa.md). No augmentation: flip + crop keeps a shard from fitting its records in this budget.

    ``epochs`` passes over the data; ``optimizer`` is a key of ``OPTIMIZERS``; ``lr`` the (peak) learning rate of
    ``schedule`` (a key of ``SCHEDULES``, restarted by every ``train_epochs`` call, i.e. every SISA stage);
    ``augment`` switches the flip + crop augmentations on; ``label_smoothing`` the cross-entropy's (it lowers
    memorisation); ``num_threads`` pins torch's intra-op threads while training (None = leave as is);
    ``class_weights`` (K,) weighs each class's cross-entropy (re-weighting, e.g. ``rebalancing_weights``; None =
    unweighted).
    """

    epochs: int = 36  # SISA: round(2 * 36 / (R + 1)) = 14 epochs per stage at R = 4 slices
    batch_size: int = 64
    lr: float = 5e-3  # peak of the one-cycle schedule
    weight_decay: float = 1e-4
    optimizer: str = "adam"
    momentum: float = 0.9
    augment: bool = False
    crop_padding: int = 4
    schedule: str = "onecycle"
    label_smoothing: float = 0.0
    num_threads: int | None = None
    class_weights: tuple[float, ...] | None = None

    def validate(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.crop_padding < 0:
            raise ConfigError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if self.class_weights is not None and (len(self.class_weights) == 0
                                               or min(self.class_weights) <= 0):
            raise ConfigError(f"class_weights must be positive numbers, one per class, got {self.class_weights}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; known schedules: {', '.join(sorted(SCHEDULES))}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; known optimizers: {', '.join(sorted(OPTIMIZERS))}")



def _adam(params, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _sgd(params, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.momentum > 0)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"adam": _adam, "sgd": _sgd}


def rebalancing_weights(labels: np.ndarray, target_counts: np.ndarray) -> tuple[float, ...]:
    """Per-class loss weights (K,) under which ``labels`` (N,) weigh as much per class as ``target_counts`` (K,)
    would unweighted: w_k = target_k / count_k, scaled so the weighted total equals N. Classes absent from
    ``labels`` get weight 1 (they contribute nothing)."""
    target = np.asarray(target_counts, dtype=np.float64)
    counts = np.bincount(np.asarray(labels), minlength=len(target)).astype(np.float64)
    weights = np.where(counts > 0, target / np.maximum(counts, 1), 1.0)
    scale = counts.sum() / max(float((weights * counts).sum()), 1e-12)
    return tuple(float(w * scale) for w in weights)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` over ``model``'s parameters."""
    config.validate()
    return OPTIMIZERS[config.optimizer](model.parameters(), config)


def scheduled_lr(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``total_steps`` under ``config.schedule``.

    A pure function of (config, step, total_steps): a schedule restarts with every ``train_epochs`` call, so a
    resumed SISA stage replays exactly the rates of an uninterrupted one (nothing to store in the checkpoint).
    """
    if config.schedule == "constant" or total_steps <= 1:
        return config.lr
    low, start = config.lr / 1e4, config.lr / 25
    progress = step / (total_steps - 1)
    if config.schedule == "onecycle":
        warmup = 0.3
        if progress < warmup:
            return start + (config.lr - start) * 0.5 * (1 - math.cos(math.pi * progress / warmup))
        progress = (progress - warmup) / (1 - warmup)
    return low + (config.lr - low) * 0.5 * (1 + math.cos(math.pi * progress))


def set_deterministic() -> None:
    """Ask torch for deterministic kernels (a no-op cost on the CPU; required for bit-exact unlearning)."""
    torch.use_deterministic_algorithms(True)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ConfigError(f"images must be uint8 (N, H, W, C), got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ConfigError(f"images must be uint8 (N, H, W, C), got dtype {images.dtype}: pass Dataset.images")
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float().div_(255.0)


def random_augmentation_params(
    n: int, generator: torch.Generator, padding: int = 4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image (flip bool (n,), dy int64 (n,), dx int64 (n,)) drawn from ``generator`` in that order."""
    flip = torch.rand(n, generator=generator) < 0.5
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    return flip, dy, dx


def apply_augmentation(
    x: torch.Tensor, flip: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, padding: int = 4
) -> torch.Tensor:
    """Flip (where ``flip``) then crop each image of x (B, C, H, W) from its zero-padded copy at offset (dy, dx).

    ``dy = dx = padding`` is the uncropped image. Returns a new (B, C, H, W) tensor.
    """
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if padding == 0:
        return x
    batch, _, height, width = x.shape
    padded = F.pad(x, (padding, padding, padding, padding), value=0.0)
    rows = (dy[:, None] + torch.arange(height)[None, :])[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(width)[None, :])[:, None, None, :]  # (B, 1, 1, W)
    b = torch.arange(batch)[:, None, None, None]
    c = torch.arange(x.shape[1])[None, :, None, None]
    return padded[b, c, rows, cols]


def augment_batch(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random flip + crop of x (B, C, H, W), parameters from ``generator`` (see the module docstring)."""
    flip, dy, dx = random_augmentation_params(x.shape[0], generator, padding)
    return apply_augmentation(x, flip, dy, dx, padding)


def train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    config: TrainConfig,
    generator: torch.Generator,
    progress: bool = False,
    description: str = "train",
) -> None:
    """Train ``model`` in place for ``epochs`` passes over (images uint8 (N,H,W,C), labels (N,)).

    Data order and augmentations come from ``generator``, which advances; so calling this twice in a row with the
    same objects equals one call with the summed epochs. A last batch of one image is skipped (BatchNorm cannot
    train on it). Zero images is a no-op.
    """
    config.validate()
    labels = np.asarray(labels)
    if len(images) != len(labels):
        raise ConfigError(f"{len(images)} images but {len(labels)} labels: they must be aligned")
    if len(images) == 0 or epochs == 0:
        return
    set_deterministic()
    previous_threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    try:
        x_all = images_to_tensor(images)
        y_all = torch.from_numpy(labels.astype(np.int64))
        weight = None
        if config.class_weights is not None:
            weight = torch.tensor(config.class_weights, dtype=torch.float32)
            if labels.max() >= len(weight):
                raise ConfigError(f"class_weights has {len(weight)} entries but the labels go up to {labels.max()}")
        n = len(x_all)
        steps_per_epoch = n // config.batch_size + int(n % config.batch_size > 1 or n == 1)
        total_steps, step = epochs * steps_per_epoch, 0
        model.train()
        bar = progress_bar(range(epochs), enabled=progress, desc=description, leave=False)
        for _ in bar:
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, config.batch_size):
                idx = order[start:start + config.batch_size]
                if len(idx) < 2 and n > 1:
                    continue
                x = x_all[idx]
                if config.augment:
                    x = augment_batch(x, generator, config.crop_padding)
                loss = F.cross_entropy(model(x), y_all[idx], weight=weight, label_smoothing=config.label_smoothing)
                for group in optimizer.param_groups:
                    group["lr"] = scheduled_lr(config, step, total_steps)
                step += 1
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            bar.set_postfix(loss=loss.item())
    finally:
        torch.set_num_threads(previous_threads)


def fit_classifier(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    seed: int,
    progress: bool = False,
) -> nn.Module:
    """Train ``model`` in place on uint8 (N, H, W, C) images and int labels (N,) for ``config.epochs``; return it.

    Deterministic on the CPU: data order and augmentations come from ``torch.Generator().manual_seed(seed)``.
    For fully seeded runs build the model with ``build_classifier(..., seed=seed)``.
    """
    generator = torch.Generator().manual_seed(int(seed))
    optimizer = make_optimizer(model, config)
    train_epochs(model, optimizer, images, labels, config.epochs, config, generator, progress=progress,
                 description="fit")
    model.eval()
    return model


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """float32 logits (N, K) of uint8 images (N, H, W, C), in eval mode, without gradients, in batches."""
    if len(images) == 0:
        raise ConfigError("predict_logits got no images")
    was_training = model.training
    model.eval()
    try:
        outputs = [model(images_to_tensor(images[start:start + batch_size]))
                   for start in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outputs).numpy().astype(np.float32, copy=False)


def predict_proba(model: nn.Module, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """float64 softmax probabilities (N, K) of uint8 images (N, H, W, C); rows sum to 1. The softmax is taken in
    float64: in float32 a converged model's confident rows saturate at exactly 1.0, so their losses all tie at 0 and
    membership audits lose the signal that lives in those tiny differences."""
    logits = torch.from_numpy(predict_logits(model, images, batch_size)).double()
    return torch.softmax(logits, dim=1).numpy()


def accuracy(probabilities_or_logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax equals the label."""
    return float(np.mean(np.argmax(probabilities_or_logits, axis=1) == np.asarray(labels)))
