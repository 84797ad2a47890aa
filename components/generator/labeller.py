"""A differentially private labeller of public images: how a DP generator learns the classes from S when the
public images come without labels.

A user with unlabelled public images (``public_labels=False``) gets a generator whose public pre-training is
unconditional, and DP-SGD on S alone then barely learns the classes (docs/generator.md: conditional accuracy 0.33
at epsilon 10). The labeller moves the class knowledge of S into the pre-training at a small privacy cost:

1. features: a network trained on the public images alone, without labels (the rotation-prediction trunk of the
   autoencoder's feature-matching loss), maps every image to ``image_features`` (N, F); the standardisation comes
   from the public images;
2. a softmax linear classifier is fitted on S's features and labels with DP-SGD: Poisson sampling at
   ``LABELLER_SAMPLE_RATE``, each record's gradient clipped to norm ``LABELLER_MAX_GRAD_NORM`` (exact per-record
   gradients: a linear model's is the outer product of its input and its residual), Gaussian noise of
   ``noise_multiplier`` times the clipping norm, ``LABELLER_STEPS`` steps;
3. the classifier labels the public images: those it gives a probability of at least ``PSEUDO_LABEL_CONFIDENCE``
   are pre-trained on that class, the others unconditionally.

Steps 1 and 3 are post-processing (public data, or the DP classifier's output), so the labeller costs exactly one
subsampled Gaussian mechanism, ``history`` = [(noise_multiplier, sample rate, steps)], which the accountant
composes with the denoiser's DP-SGD (``composed_noise_multiplier``). Every constant here was fixed on the default
data's public split before any run on S: docs/generator.md, "Public images without labels".
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from fairforget.errors import ConfigError

LABELLER_STEPS = 300
LABELLER_SAMPLE_RATE = 0.25
LABELLER_LEARNING_RATE = 2.0
LABELLER_MAX_GRAD_NORM = 1.0
PSEUDO_LABEL_CONFIDENCE = 0.5
ACCOUNTANT = "prv"
MAX_NOISE_MULTIPLIER = 50.0


@dataclass(frozen=True)
class DPLabeller:
    """A softmax linear classifier over standardised features: ``weights`` float32 (F + 1, C) (the last row the
    bias), the public standardisation ``mean``/``scale`` (F,), and the DP mechanism that fitted it."""

    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    noise_multiplier: float
    sample_rate: float
    steps: int

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """The mechanism as opacus' accountants record it: [(noise_multiplier, sample_rate, steps)]."""
        return [(float(self.noise_multiplier), float(self.sample_rate), int(self.steps))]

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """float32 (N, C) class probabilities of features (N, F)."""
        logits = _with_bias(_standardise(features, self.mean, self.scale)) @ self.weights
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return odds / odds.sum(axis=1, keepdims=True)

    def pseudo_labels(self, features: np.ndarray, confidence: float = PSEUDO_LABEL_CONFIDENCE) -> np.ndarray:
        """int64 (N,): the most probable class, or -1 where its probability is below ``confidence``."""
        probabilities = self.probabilities(features)
        labels = probabilities.argmax(axis=1).astype(np.int64)
        labels[probabilities.max(axis=1) < confidence] = -1
        return labels


def _standardise(features: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Standardised features divided by sqrt(F): a typical row has norm about 1, the clipping norm's scale."""
    return ((features - mean) / scale / math.sqrt(features.shape[1])).astype(np.float32)


def _with_bias(features: np.ndarray) -> np.ndarray:
    return np.hstack([features, np.ones((len(features), 1), np.float32)])


@torch.no_grad()
def image_features(trunk: torch.nn.Module, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """float32 (N, 5 K): the trunk's K feature maps of uint8 images (N, H, W, C), averaged over the whole image
    and over each quarter (spatial layout matters: a sleeve is where a strap is not)."""
    rows = []
    device = next(trunk.parameters()).device
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size].astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
        maps = trunk(x.to(device))
        pooled = torch.cat([maps.mean(dim=(2, 3)), torch.nn.functional.adaptive_avg_pool2d(maps, 2).flatten(1)], 1)
        rows.append(pooled.cpu().numpy())
    return np.concatenate(rows).astype(np.float32)


def fit_dp_labeller(private_features: np.ndarray, private_labels: np.ndarray, public_features: np.ndarray,
                    num_classes: int, noise_multiplier: float, seed: int) -> DPLabeller:
    """Fit the labeller on S's features (n, F) and labels (n,) with DP-SGD (module docstring); the public features
    (m, F) give only the standardisation. Deterministic given ``seed``. The record's influence on each step is at
    most ``LABELLER_MAX_GRAD_NORM`` and the noise's standard deviation ``noise_multiplier`` times that."""
    n, width = private_features.shape
    mean = public_features.mean(axis=0)
    scale = public_features.std(axis=0) + 1e-6
    x = torch.from_numpy(_with_bias(_standardise(private_features, mean, scale)))
    targets = torch.nn.functional.one_hot(torch.from_numpy(private_labels.astype(np.int64)), num_classes).float()
    weights = torch.zeros(width + 1, num_classes)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(LABELLER_STEPS):
        chosen = torch.rand(n, generator=generator) < LABELLER_SAMPLE_RATE  # Poisson sampling, as accounted
        gradient = clipped_gradient_sum(x[chosen], targets[chosen], weights, LABELLER_MAX_GRAD_NORM)
        gradient += torch.randn(gradient.shape, generator=generator) * noise_multiplier * LABELLER_MAX_GRAD_NORM
        weights -= LABELLER_LEARNING_RATE * gradient / (LABELLER_SAMPLE_RATE * n)
    return DPLabeller(weights.numpy(), mean.astype(np.float32), scale.astype(np.float32), float(noise_multiplier),
                      LABELLER_SAMPLE_RATE, LABELLER_STEPS)


def clipped_gradient_sum(x: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                         max_norm: float) -> torch.Tensor:
    """The sum over a batch of each record's cross-entropy gradient with respect to ``weights`` (F + 1, C), each
    clipped to Frobenius norm ``max_norm``: inputs x (B, F + 1), one-hot targets (B, C). A linear model's
    per-record gradient is outer(x_i, softmax(x_i W) - y_i), of norm |x_i| |softmax(x_i W) - y_i|."""
    residual = torch.softmax(x @ weights, dim=1) - targets
    norms = x.norm(dim=1) * residual.norm(dim=1)
    return x.T @ (residual * torch.clamp(max_norm / (norms + 1e-12), max=1.0)[:, None])


def composed_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """The epsilon at ``delta`` of the subsampled Gaussian mechanisms of ``history`` run one after another
    (opacus' PRV accountant)."""
    from opacus.accountants import create_accountant

    accountant = create_accountant(mechanism=ACCOUNTANT)
    accountant.history = list(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta=delta))


def composed_noise_multiplier(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                              earlier: list[tuple[float, float, int]] = (), tolerance: float = 0.01) -> float:
    """The smallest noise multiplier (to ``tolerance`` in epsilon) such that ``steps`` steps of Poisson sampling at
    ``sample_rate`` after the mechanisms ``earlier`` are together (``target_epsilon``, ``delta``)-DP. Raises
    ``ConfigError`` when ``earlier`` alone spends the target or more than ``MAX_NOISE_MULTIPLIER`` is needed."""
    earlier = list(earlier)
    spent = composed_epsilon(earlier, delta) if earlier else 0.0
    if spent >= target_epsilon:
        raise ConfigError(f"the labeller alone spends epsilon {spent:.2f} of the {target_epsilon} budget: lower "
                          "pseudo_label_epsilon or raise dp_epsilon")
    low, high = 0.0, 1.0
    while composed_epsilon(earlier + [(high, sample_rate, steps)], delta) > target_epsilon:
        low, high = high, 2 * high
        if high > MAX_NOISE_MULTIPLIER:
            raise ConfigError(f"epsilon {target_epsilon} cannot be reached with {steps} steps at sampling rate "
                              f"{sample_rate:.3f} (it needs a noise multiplier > {MAX_NOISE_MULTIPLIER:.0f}): raise "
                              "dp_epsilon, or lower the generator's train_steps or batch_size")
    while True:
        middle = (low + high) / 2
        epsilon = composed_epsilon(earlier + [(middle, sample_rate, steps)], delta)
        if epsilon <= target_epsilon:
            high = middle
            if target_epsilon - epsilon <= tolerance:
                return high
        else:
            low = middle
        if high - low < 1e-4:
            return high


@functools.lru_cache(maxsize=16)  # the bisection costs seconds; the budget check and training both ask
def labeller_noise_multiplier(epsilon: float, delta: float) -> float:
    """The labeller's noise multiplier when it alone is (``epsilon``, ``delta``)-DP."""
    return composed_noise_multiplier(epsilon, delta, LABELLER_SAMPLE_RATE, LABELLER_STEPS)
