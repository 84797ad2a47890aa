"""Image classifiers the shards (and the attack's reference models) train: a registry from name to builder.

``build_classifier(name, num_classes, in_channels, image_size)`` returns an untrained ``torch.nn.Module`` that maps
float32 (N, C, H, W) images in [0, 1] to logits (N, K).

- ``small_cnn`` (default): two 3x3 conv blocks (32 and 64 channels, BatchNorm, ReLU, 2x2 max pool) and a 128-unit
  head, about 0.15M parameters at 28x28. Built for Fashion-MNIST 28x28x1: an 800-image shard trains in seconds on a
  2-core CPU. BatchNorm is what lets every SISA shard fit its own data (>= 0.98 train accuracy with the default
  ``TrainConfig``; 0.91 without it at 30 one-cycle epochs). An adaptive average pool before the head makes it
  accept any image size >= 4 px (the 8x8 test images too).
- ``resnet18``: torchvision's ResNet-18 (``weights=None``: nothing can be downloaded) adapted to 32x32 inputs the
  usual CIFAR way: a 3x3 stride-1 stem and no max pool. ``weights_path`` loads a local ``state_dict`` file
  (e.g. a model trained elsewhere); its classifier head must match ``num_classes``.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn

from fairforget.errors import ConfigError


class SmallCNN(nn.Module):
    """conv(3x3, w) -> [BN] -> ReLU -> maxpool2 -> conv(3x3, 2w) -> [BN] -> ReLU -> maxpool2 -> avgpool to 4x4
    -> hidden -> K. ``batch_norm`` puts a BatchNorm2d after each conv (whose bias it then replaces); its running
    statistics are buffers, so they are part of ``state_dict`` (and of every SISA checkpoint)."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32, hidden: int = 128,
                 batch_norm: bool = True) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=not batch_norm)
            norm = [nn.BatchNorm2d(cout)] if batch_norm else []
            return [conv, *norm, nn.ReLU(inplace=True), nn.MaxPool2d(2)]

        self.features = nn.Sequential(
            *block(in_channels, width),
            *block(width, 2 * width),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 16, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _build_small_cnn(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    if image_size < 4:
        raise ConfigError(f"small_cnn needs images of at least 4x4 pixels, got {image_size}")
    return SmallCNN(num_classes, in_channels)


def _build_resnet18(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    # CIFAR-style stem: 32x32 inputs keep their resolution through the first stage (He et al. 2016, Sec. 4.2).
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


CLASSIFIERS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "small_cnn": _build_small_cnn,
    "resnet18": _build_resnet18,
}


def build_classifier(
    name: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    seed: int | None = None,
    weights_path: str | os.PathLike | None = None,
) -> nn.Module:
    """An untrained classifier ``name`` (a key of ``CLASSIFIERS``) for (N, in_channels, image_size, image_size).

    ``seed`` makes the initial weights a function of the seed alone (the global RNG is left untouched);
    ``weights_path`` loads a local ``state_dict`` file over the initial weights.
    """
    if name not in CLASSIFIERS:
        raise ConfigError(f"unknown classifier {name!r}; known classifiers: {', '.join(sorted(CLASSIFIERS))}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    if in_channels < 1:
        raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
    if seed is None:
        model = CLASSIFIERS[name](num_classes, in_channels, image_size)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLASSIFIERS[name](num_classes, in_channels, image_size)
    if weights_path is not None:
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f"weights file {weights_path} does not exist: give a local state_dict file")
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ConfigError(f"weights file {weights_path} does not fit {name} with {num_classes} classes: {err}") from err
    return model
