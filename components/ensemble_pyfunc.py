"""The MLflow pyfunc model of the aggregated classifier, logged as "model from code".

MLflow stores this file with the model, so loading it needs no fairforget code: only torch and the TorchScript
ensemble packaged as the artifact ``ensemble``. ``predict`` takes float32 (N, C, H, W) in [0, 1] and returns
float32 (N, K) class probabilities.
"""

import mlflow.pyfunc
import numpy as np


class AggregatedClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import torch

        self._torch = torch
        self._module = torch.jit.load(context.artifacts["ensemble"], map_location="cpu").eval()

    def predict(self, context, model_input, params=None):
        images = np.asarray(model_input, dtype=np.float32)
        with self._torch.no_grad():
            return self._module(self._torch.from_numpy(images)).numpy()


mlflow.models.set_model(AggregatedClassifier())
