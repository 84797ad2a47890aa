"""Querying a model once per (image, fixed augmentation) and the per-sample signals every attack reads.

A *predict* callable is anything mapping uint8 images (N, H, W, C) to class probabilities (N, K) float, rows
summing to 1: a torch module (``torch_predictor``), the SISA ensemble, an MLflow pyfunc taking float32
(N, C, H, W) in [0, 1] (``float_array_predictor(model.predict)``), or a logits function (``probabilities_from_logits``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fairforget.components.mia.augmentations import FixedAugmentation
from fairforget.components.progress import progress as progress_bar
from fairforget.errors import ConfigError

Predict = Callable[[np.ndarray], np.ndarray]

_PROBABILITY_TOLERANCE = 1e-3


def float_array_predictor(predict_float: Callable[[np.ndarray], object]) -> Predict:
    """Adapt a model taking float32 (N, C, H, W) in [0, 1] (e.g. ``mlflow.pyfunc.load_model(uri).predict``)."""

    def predict(images_u8: np.ndarray) -> np.ndarray:
        batch = images_u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        return np.asarray(predict_float(batch), dtype=np.float64)

    return predict


def probabilities_from_logits(predict_logits: Predict) -> Predict:
    """Turn a callable returning logits (N, K) into one returning softmax probabilities (N, K)."""

    def predict(images_u8: np.ndarray) -> np.ndarray:
        logits = np.asarray(predict_logits(images_u8), dtype=np.float64)
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    return predict


class MemoizedPredict:
    """A predict callable that remembers its answers, keyed by the bytes of the batch it was given: for models
    that do not change while they are queried again and again (RMIA's reference models, queried by every audit of
    a run with the same images in the same batches). Answers are returned as copies."""

    def __init__(self, predict: Predict) -> None:
        self.predict = predict
        self._answers: dict[bytes, np.ndarray] = {}

    def __call__(self, images_u8: np.ndarray) -> np.ndarray:
        import hashlib

        images_u8 = np.ascontiguousarray(images_u8)
        key = hashlib.blake2b(images_u8.tobytes(), digest_size=16).digest() + repr(images_u8.shape).encode()
        if key not in self._answers:
            self._answers[key] = np.asarray(self.predict(images_u8), dtype=np.float64)
        return self._answers[key].copy()


class TorchPredictor:
    """A trained torch classifier (float32 (N, C, H, W) in [0, 1] -> logits) as a predict callable; ``.model``
    keeps the module (e.g. to save it). The softmax is taken in float64, so that confident predictions keep
    distinct losses."""

    def __init__(self, model, batch_size: int = 256) -> None:
        self.model = model
        self.batch_size = batch_size

    def __call__(self, images_u8: np.ndarray) -> np.ndarray:
        from fairforget.components.training import predict_logits

        logits = predict_logits(self.model, images_u8, self.batch_size).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def torch_predictor(model, batch_size: int = 256) -> TorchPredictor:
    """``TorchPredictor(model, batch_size)``."""
    return TorchPredictor(model, batch_size)


@dataclass
class QueryOutputs:
    """What the target (and the reference models) answered for each image under each fixed augmentation.

    ``probabilities``: float64 (N, T, K), copy t = 0 is the un-augmented image; ``labels``: int64 (N,);
    ``reference_probabilities``: float64 (R, N, T, K) or None when no reference model was queried.
    """

    probabilities: np.ndarray
    labels: np.ndarray
    reference_probabilities: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, rows: np.ndarray) -> QueryOutputs:
        rows = np.asarray(rows)
        reference = None if self.reference_probabilities is None else self.reference_probabilities[:, rows]
        return QueryOutputs(self.probabilities[rows], self.labels[rows], reference)

    @cached_property
    def losses(self) -> np.ndarray:
        """Cross-entropy l_t = -log p_y of every copy, float64 (N, T); computed once, shared by the attacks."""
        return true_class_loss(self.probabilities, self.labels)

    @cached_property
    def true_class_probability(self) -> np.ndarray:
        """p_y of every copy, float64 (N, T)."""
        return np.take_along_axis(self.probabilities, self.labels[:, None, None], axis=2)[..., 0]


def true_class_loss(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """-log p_y, float64 of shape ``probabilities.shape[:-1]``, for probabilities (N, ..., K) and labels (N,).

    When p_y > 1/2 the loss is computed as -log1p(-sum_{k != y} p_k), which keeps its resolution for confident
    predictions where p_y itself rounds to 1 (members of an overfit model), so that they do not all tie at 0.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    labels = labels.reshape(labels.shape + (1,) * (probabilities.ndim - 1 - labels.ndim))
    is_true = np.broadcast_to(labels, probabilities.shape[:-1])[..., None] == np.arange(probabilities.shape[-1])
    p_true = np.sum(probabilities, axis=-1, where=is_true)
    p_rest = np.clip(np.sum(probabilities, axis=-1, where=~is_true), 0.0, 1.0)
    confident = p_true > 0.5
    return np.where(confident, -np.log1p(-np.minimum(p_rest, 0.5)), -np.log(np.maximum(p_true, 1e-300)))


def _check_outputs(outputs: np.ndarray, expected_rows: int, num_classes: int) -> np.ndarray:
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 2 or outputs.shape[0] != expected_rows:
        raise ConfigError(f"the model returned shape {outputs.shape} for {expected_rows} images: it must return "
                          f"(N, K) class probabilities")
    if outputs.shape[1] != num_classes:
        raise ConfigError(f"the model predicts {outputs.shape[1]} classes but the data has {num_classes}: audit it "
                          f"against the data version it was trained on")
    if not np.isfinite(outputs).all():
        raise ConfigError("the model returned NaN or infinite outputs")
    if (outputs < -_PROBABILITY_TOLERANCE).any() or np.abs(outputs.sum(axis=1) - 1.0).max() > _PROBABILITY_TOLERANCE:
        raise ConfigError("the model's outputs are not probabilities (negative, or rows not summing to 1): wrap a "
                          "logits function with probabilities_from_logits(...)")
    return np.clip(outputs, 0.0, 1.0)


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Pin torch's intra-op threads to ``num_threads`` inside the block (None: leave them)."""
    if num_threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def query_model(
    predict: Predict,
    images: np.ndarray,
    augmentations: Sequence[FixedAugmentation],
    num_classes: int,
    batch_size: int = 1024,
    description: str = "query",
    show_progress: bool = True,
) -> np.ndarray:
    """float64 (N, T, K): ``predict`` on every image under each of the T fixed augmentations, in batches."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ConfigError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    out = np.empty((len(images), len(augmentations), num_classes), dtype=np.float64)
    steps = [(t, start) for t in range(len(augmentations)) for start in range(0, len(images), batch_size)]
    for t, start in progress_bar(steps, enabled=show_progress, desc=description, leave=False):
        chunk = augmentations[t].apply(images[start:start + batch_size])
        out[start:start + len(chunk), t] = _check_outputs(predict(chunk), len(chunk), num_classes)
    return out
