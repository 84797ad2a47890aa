"""The DP benchmark trains the recipe it is given: overrides reach the DP generator, its point records them, and the
saved generator is the one that was judged."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd

from benchmarks.bench_dp_generator import measure_dp
from fairforget.components.dataset import make_toy_dataset
from fairforget.components.generator import load_generator, tiny_config
from fairforget.components.quality import QualityConfig, train_reference_classifier


def test_a_dp_recipe_override_is_trained_recorded_and_saved(tmp_path):
    dataset = make_toy_dataset()
    judge = train_reference_classifier(dataset, QualityConfig(reference_epochs=1), split="audit")
    base = replace(tiny_config(), dp_autoencoder_epochs=3, dp_train_steps=4, dp_batch_size=16, dp_latent_dim=4)
    point = measure_dp(50.0, dataset, tmp_path, judge, base=base, save_dir=tmp_path / "generators")

    assert point["recipe"]["dp_autoencoder_epochs"] == 3 and point["recipe"]["dp_latent_dim"] == 4
    assert point["summary"]["dp_steps"] == 4 and point["summary"]["privacy"] == "dp"
    assert json.loads((tmp_path / "eps-50.json").read_text())["recipe"] == point["recipe"]
    saved = load_generator(tmp_path / "generators" / "eps-50", device="cpu")
    assert saved.config.privacy == "dp" and saved.config.latent_dim == 4 and saved.config.autoencoder_epochs == 3
    table = pd.DataFrame({"class_name": ["a", "c"]})
    assert saved.sample(table, seed=0).shape[0] == 2
    # a saved point is reused, not retrained: same figures without training
    again = measure_dp(50.0, dataset, tmp_path, judge, base=replace(base, dp_latent_dim=8))
    assert again == json.loads(json.dumps(point, default=float))
    assert np.isfinite(point["metrics"]["generator/mia/auc"])
