"""The DP benchmark trains the recipe it is given: overrides reach the DP generator, its point records them, and the
saved generator is the one that was judged."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.bench_dp_generator import measure_dp, without_public_classes
from fairforget.components.dataset import make_toy_dataset
from fairforget.components.generator import load_generator, tiny_config
from fairforget.components.quality import QualityConfig, train_reference_classifier


def test_a_dp_recipe_override_is_trained_recorded_and_saved(tmp_path):
    dataset = make_toy_dataset()
    judge = train_reference_classifier(dataset, QualityConfig(reference_epochs=1), split="audit")
    base = tiny_config(privacy="dp", autoencoder_epochs=3, train_steps=4, batch_size=16, latent_dim=4)
    point = measure_dp(50.0, dataset, tmp_path, judge, base=base, save_dir=tmp_path / "generators")

    assert point["recipe"]["autoencoder_epochs"] == 3 and point["recipe"]["latent_dim"] == 4
    assert point["summary"]["dp_steps"] == 4 and point["summary"]["privacy"] == "dp"
    assert json.loads((tmp_path / "eps-50.json").read_text())["recipe"] == point["recipe"]
    saved = load_generator(tmp_path / "generators" / "eps-50", device="cpu")
    assert saved.config.privacy == "dp" and saved.config.latent_dim == 4 and saved.config.autoencoder_epochs == 3
    table = pd.DataFrame({"class_name": ["a", "c"]})
    assert saved.sample(table, seed=0).shape[0] == 2
    # a saved point is reused, not retrained: same figures without training
    again = measure_dp(50.0, dataset, tmp_path, judge, base=replace(base, latent_dim=8))
    assert again == json.loads(json.dumps(point, default=float))
    assert np.isfinite(point["metrics"]["generator/mia/auc"])


def test_the_positive_control_hides_a_class_from_the_public_split_only():
    dataset = make_toy_dataset()
    held_out = dataset.class_names.index("c")
    reduced = without_public_classes(dataset, ("c",))

    reference = reduced.split("reference")
    assert held_out not in set(reference.labels.tolist()) and len(reference) > 0
    for split in ("train", "test", "audit"):
        assert reduced.split(split).ids.tolist() == dataset.split(split).ids.tolist()
    removed = (dataset.split("reference").labels == held_out).sum()
    assert len(reduced) == len(dataset) - removed > 0
    with pytest.raises(ValueError, match="Shirtz is not a class"):
        without_public_classes(dataset, ("Shirtz",))


def test_a_dp_generator_of_the_positive_control_learns_the_public_split_without_the_class(tmp_path):
    dataset = make_toy_dataset()
    judge = train_reference_classifier(dataset, QualityConfig(reference_epochs=1), split="audit")
    base = tiny_config(privacy="dp", autoencoder_epochs=1, train_steps=2, batch_size=16, latent_dim=4,
                       public_pretrain_steps=2)
    point = measure_dp(50.0, dataset, tmp_path, judge, base=base, public_without=("c",))

    public = dataset.split("reference")
    assert point["public_without"] == ["c"]
    # the autoencoder saw the public images of the other classes only
    assert point["summary"]["autoencoder_images"] == len(public) - (public.labels == dataset.class_names.index("c")).sum()
    # judged on the full data: the hidden class is still sampled and scored
    assert 0.0 <= point["metrics"]["generator/conditional_accuracy/c"] <= 1.0
    assert 0.0 <= point["metrics"]["generator/reconstruction_accuracy/c"] <= 1.0


def test_the_reconstruction_check_judges_real_images_after_the_round_trip():
    from experiments.bench_dp_generator import reconstruction_accuracy

    dataset = make_toy_dataset()
    test = dataset.split("test")

    class Generator:  # a perfect autoencoder: the round trip returns the images themselves
        def to_model_space(self, images):
            import torch

            return torch.from_numpy(images)

        def decode(self, x):
            return x

    class Judge(torch.nn.Module):  # says "c" for every image
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), 2), 4).float()

    figures = reconstruction_accuracy(Generator(), dataset, ("c", "a"), Judge())
    assert figures == {"generator/reconstruction_accuracy/c": 1.0, "generator/reconstruction_accuracy/a": 0.0}
    assert (test.labels == 2).any()


def test_the_held_out_grid_shows_real_images_then_each_saved_generator(tmp_path):
    from experiments.bench_dp_generator import held_out_grid
    from fairforget.components.generator import train_generator

    dataset = make_toy_dataset()
    train_generator(dataset, config=tiny_config(), progress=False).save(tmp_path / "g" / "eps-1")
    (tmp_path / "figures").mkdir()
    path = held_out_grid({"eps-1": tmp_path / "g" / "eps-1"}, dataset, "c", tmp_path, per_row=3)
    assert path == tmp_path / "figures" / "held_out_c.png" and path.stat().st_size > 0


def test_the_denoiser_only_control_skips_the_class_in_the_pre_training_only():
    from experiments.bench_dp_generator import pretraining_without
    from fairforget.components.generator import train as train_module

    dataset = make_toy_dataset()
    seen = []
    real = train_module.fit_denoiser

    def spy(denoiser, data, codes, space, config, progress=True):
        seen.append(sorted(set(codes[:, 0].tolist())))
        return real(denoiser, data, codes, space, config, progress)

    train_module.fit_denoiser = spy
    try:
        with pretraining_without(("c",)):
            generator = train_generator_dp(dataset)
    finally:
        train_module.fit_denoiser = real
    assert seen == [[0, 1, 3]]  # the pre-training saw every class but c
    assert generator.training_summary["autoencoder_images"] == len(dataset.split("reference"))  # all of them
    assert train_module.fit_denoiser is real


def train_generator_dp(dataset):
    from fairforget.components.generator import train_generator

    config = tiny_config(privacy="dp", dp_epsilon=50.0, autoencoder_epochs=1, train_steps=2, batch_size=16,
                         latent_dim=4, public_pretrain_steps=2)
    return train_generator(dataset, config=config, progress=False)
