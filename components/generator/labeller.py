"""A differentially private labeller of public images: how a DP generator learns the classes from S when the
public images come without labels.

A user with unlabelled public images (``public_labels=False``) gets a generator whose public pre-training is
unconditional, and DP-SGD on S alone then barely learns the classes (docs/generator.md: conditional accuracy 0.33
at epsilon 10). The labeller moves the class knowledge of S into the pre-training at a small privacy cost:

1. features: a network trained on the public images alone, without labels (the rotation-prediction trunk of the
   autoencoder's feature-matching loss), maps every image to ``image_features`` (N, F); the public images alone
   give the whitening ``public_whitening``: their top ``LABELLER_COMPONENTS`` principal directions, each scaled
   to unit variance on them;
2. DP class centroids (a nearest-class-mean classifier, i.e. linear discriminant analysis with the public
   covariance): each record of S, whitened and clipped to norm ``clip_norm`` (the typical norm, sqrt of the
   dimension), adds (x / clip_norm, 1) to its class's row of a (C, k + 1) table of sums and counts, so one record
   moves the table by at most sqrt(2); the table is released once with Gaussian noise of standard deviation
   ``noise_multiplier`` times sqrt(2) on every entry, and a class's centroid is its noisy sum over its noisy count;
3. the labeller labels the public images by the softmax of minus half the squared distances to the centroids (the
   posterior of unit-variance Gaussians with equal priors: the public split is what gets labelled): those it
   gives a probability of at least ``PSEUDO_LABEL_CONFIDENCE`` are pre-trained on that class, the others
   unconditionally.

Steps 1 and 3 are post-processing (public data, or the DP table), so the labeller costs exactly one Gaussian
mechanism, ``history`` = [(noise_multiplier, 1.0, 1)] (sampling rate 1, one step), which the accountant composes
with the denoiser's DP-SGD (``composed_noise_multiplier``). One release, nothing iterated: unlike a linear model
fitted by DP-SGD, which is stopped before it converges by the noise its steps add (docs/generator.md, "Public
images without labels"), the centroids are a closed form. The constants were chosen on the default data's public
split alone (a half of it subsampled to S's class design standing in for S, scored on the other half).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from fairforget.errors import ConfigError

LABELLER_COMPONENTS = 64
PSEUDO_LABEL_CONFIDENCE = 0.5
RECORD_SENSITIVITY = math.sqrt(2.0)  # a record adds (x / clip_norm, 1), |x| <= clip_norm, to one row of the table
ACCOUNTANT = "prv"
MAX_NOISE_MULTIPLIER = 50.0


@dataclass(frozen=True)
class DPLabeller:
    """Nearest-class-mean classifier in a public whitening: ``centroids`` float32 (C, k) in whitened coordinates,
    the public ``mean`` (F,) and ``projection`` float32 (F, k) (x -> (x - mean) @ projection has unit variance
    per coordinate on the public images), and the Gaussian mechanism that released the centroids."""

    centroids: np.ndarray
    mean: np.ndarray
    projection: np.ndarray
    noise_multiplier: float

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """The mechanism as opacus' accountants record it: [(noise_multiplier, sample_rate, steps)]: one release
        of the whole table (rate 1, one step)."""
        return [(float(self.noise_multiplier), 1.0, 1)]

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """float32 (N, C) class probabilities of features (N, F): softmax of -|z - centroid|^2 / 2."""
        z = (features - self.mean) @ self.projection
        logits = -0.5 * ((z[:, None, :] - self.centroids[None]) ** 2).sum(axis=2)
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return (odds / odds.sum(axis=1, keepdims=True)).astype(np.float32)

    def pseudo_labels(self, features: np.ndarray, confidence: float = PSEUDO_LABEL_CONFIDENCE) -> np.ndarray:
        """int64 (N,): the most probable class, or -1 where its probability is below ``confidence``."""
        probabilities = self.probabilities(features)
        labels = probabilities.argmax(axis=1).astype(np.int64)
        labels[probabilities.max(axis=1) < confidence] = -1
        return labels


def public_whitening(public_features: np.ndarray, components: int = LABELLER_COMPONENTS
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The public images' mean (F,) and whitening projection float32 (F, k), k = min(components, F, m - 1): their
    top principal directions, each divided by its standard deviation on them. Uses nothing of S."""
    mean = public_features.mean(axis=0)
    centred = (public_features - mean).astype(np.float64)
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    k = min(components, public_features.shape[1], len(public_features) - 1)
    scale = np.maximum(singular[:k] / math.sqrt(len(public_features)), 1e-8)
    return mean.astype(np.float32), (directions[:k].T / scale).astype(np.float32)


def class_table(z: np.ndarray, labels: np.ndarray, num_classes: int, clip_norm: float) -> np.ndarray:
    """float64 (C, k + 1): per class, the sum over its records of z_i / clip_norm (each z_i first clipped to norm
    ``clip_norm``) and, in the last column, the count. A record moves the table by at most sqrt(2) (L2)."""
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    scaled = z / np.maximum(norms, clip_norm)  # z_i / clip_norm, clipped: norm <= 1
    table = np.zeros((num_classes, z.shape[1] + 1))
    np.add.at(table, labels, np.hstack([scaled, np.ones((len(z), 1))]))
    return table


@torch.no_grad()
def image_features(trunk: torch.nn.Module, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """float32 (N, F): the trunk's feature maps of uint8 images (N, H, W, C), flattened (channels x the trunk's
    pooled grid: where a part is matters, a sleeve is where a strap is not)."""
    rows = []
    device = next(trunk.parameters()).device
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size].astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
        rows.append(trunk(x.to(device)).flatten(1).cpu().numpy())
    return np.concatenate(rows).astype(np.float32)


def fit_dp_labeller(private_features: np.ndarray, private_labels: np.ndarray, public_features: np.ndarray,
                    num_classes: int, noise_multiplier: float, seed: int,
                    components: int = LABELLER_COMPONENTS,
                    whitening: tuple[np.ndarray, np.ndarray] | None = None) -> DPLabeller:
    """The DP class centroids of S's features (n, F) and labels (n,) in the ``components``-dimensional whitening of
    the public features (m, F) (module docstring; ``whitening``: that whitening already computed by
    ``public_whitening``, for callers that fit several labellers on the same public features). Deterministic given
    ``seed``. One record changes the released table by at most ``RECORD_SENSITIVITY`` and the noise's standard
    deviation is ``noise_multiplier`` times that."""
    mean, projection = whitening if whitening is not None else public_whitening(public_features, components)
    k = projection.shape[1]
    clip_norm = math.sqrt(k)  # a public image's expected squared norm is k in the whitening
    table = class_table((private_features - mean) @ projection, private_labels, num_classes, clip_norm)
    rng = np.random.default_rng(seed)
    noisy = table + rng.normal(0.0, noise_multiplier * RECORD_SENSITIVITY, table.shape)
    centroids = clip_norm * noisy[:, :k] / np.maximum(noisy[:, k:], 1.0)
    return DPLabeller(centroids.astype(np.float32), mean, projection, float(noise_multiplier))


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
    """The labeller's noise multiplier when it alone is (``epsilon``, ``delta``)-DP (one release)."""
    return composed_noise_multiplier(epsilon, delta, 1.0, 1)
