"""Self-contained exports of the aggregated SISA classifier: TorchScript and ONNX.

Both take float32 (N, C, H, W) in [0, 1] (the ``training.images_to_tensor`` layout) and return float32 (N, K)
class probabilities aggregated over the k shard models: the mean of their softmax outputs (``mean_softmax``), or
the fraction of shards voting for each class (``majority_vote``). Neither needs fairforget's code to run:
TorchScript needs only torch, ONNX only onnxruntime.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from torch import nn

from fairforget.components.atomic import atomic_file

from fairforget.errors import ConfigError


class EnsembleModule(nn.Module):
    """k shard models and an aggregation rule as one module: (N, C, H, W) -> (N, K) probabilities."""

    def __init__(self, models: Sequence[nn.Module], aggregation: str = "mean_softmax"):
        super().__init__()
        if aggregation not in ("mean_softmax", "majority_vote"):
            raise ConfigError(f"unknown aggregation {aggregation!r}; known: mean_softmax, majority_vote")
        self.shards = nn.ModuleList(models)
        self.vote = aggregation == "majority_vote"
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([torch.softmax(model(x), dim=1) for model in self.shards])  # (k, N, K)
        if self.vote:
            num_classes = probabilities.shape[-1]
            votes = torch.nn.functional.one_hot(probabilities.argmax(dim=-1), num_classes).to(x.dtype)
            return votes.mean(dim=0)
        return probabilities.mean(dim=0)


def export_torchscript(module: EnsembleModule, example: torch.Tensor, path: str | os.PathLike) -> Path:
    """Trace ``module`` on ``example`` (float32 (n, C, H, W)) and save it atomically to ``path``."""
    path = Path(path)
    with torch.no_grad():
        traced = torch.jit.trace(module.eval(), example, check_trace=False)
    with atomic_file(path) as tmp:
        traced.save(str(tmp))
    return path


def export_onnx(module: EnsembleModule, example: torch.Tensor, path: str | os.PathLike, opset: int = 18) -> Path:
    """Export ``module`` to ONNX with a dynamic batch dimension (input ``images``, output ``probabilities``)."""
    path = Path(path)
    import onnx

    with atomic_file(path) as tmp, torch.no_grad():
        torch.onnx.export(module.eval(), (example,), str(tmp), input_names=["images"], output_names=["probabilities"],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, opset_version=opset,
                          dynamo=True, verbose=False)
        onnx.checker.check_model(str(tmp))
    return path


def onnx_predict(path: str | os.PathLike, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Run an exported ensemble with onnxruntime on float32 (N, C, H, W); returns (N, K)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = [session.run(["probabilities"], {"images": images[i:i + batch_size].astype(np.float32)})[0]
               for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs)
