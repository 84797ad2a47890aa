"""The MLflow pyfunc model of the diffusion generator, logged as "model from code" (no pickled Python object).

MLflow stores this file with the model and the ``fairforget`` package as its code path; the generator itself is
the saved folder packaged as the artifact ``generator`` (config JSON and weights). ``predict`` takes a DataFrame of
conditions (a ``class_name`` column and one column per conditioned attribute) and ``params={"seed": int,
"guidance_scale": float}`` (a negative scale: the generator's own) and returns uint8 (N, H, W, C) images.
"""

import mlflow.pyfunc
import numpy as np
import pandas as pd


class ConditionalGenerator(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from fairforget.components.generator import load_generator

        self.generator = load_generator(context.artifacts["generator"], device="cpu")

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        params = params or {}
        guidance = params.get("guidance_scale")
        return self.generator.sample(pd.DataFrame(model_input), seed=int(params.get("seed", 0)),
                                     guidance_scale=None if guidance is None or guidance < 0 else float(guidance))


mlflow.models.set_model(ConditionalGenerator())
