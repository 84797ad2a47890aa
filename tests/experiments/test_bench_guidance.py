"""The guidance sweep: one judge for every scale, and each column is what the pipeline's evaluation reports."""

from __future__ import annotations

import dataclasses

import numpy as np

import pytest

from experiments.bench_guidance import SWEPT, label, parse_per_class, sweep
from fairforget.components.dataset import make_toy_dataset
from fairforget.components.generator import tiny_config, train_generator
from fairforget.components.quality import QualityConfig, evaluate_generator, train_reference_classifier


def test_each_scale_is_judged_like_the_pipeline_by_one_judge(monkeypatch):
    dataset = make_toy_dataset()
    generator = train_generator(dataset, config=tiny_config(), progress=False)
    quality = QualityConfig(reference_epochs=1, cas_epochs=1, eval_per_class=6, kid_subset_size=10, kid_subsets=2,
                            grid_per_class=2)
    judge = train_reference_classifier(dataset, quality)
    scales_sampled = []
    sample = generator.sample

    def recording_sample(conditions, seed, guidance_scale=None, **options):
        scales_sampled.append(guidance_scale)
        return sample(conditions, seed, guidance_scale=guidance_scale, **options)

    monkeypatch.setattr(generator, "sample", recording_sample)
    rows = sweep(generator, dataset, [0.0, 2.0], quality, judge=judge)
    assert list(rows) == [0.0, 2.0]
    # every image of a column is drawn at that column's scale (the tiny generator barely reacts to guidance, so
    # this is checked at the call rather than on the images)
    half = len(scales_sampled) // 2
    assert scales_sampled == [0.0] * half + [2.0] * half
    direct = evaluate_generator(generator, dataset, dataclasses.replace(quality, guidance_scale=2.0),
                                reference_classifier=judge)
    for key in SWEPT:
        assert np.isfinite(rows[2.0][key]), key
        if key in direct.metrics:
            assert rows[2.0][key] == direct.metrics[key], key
    assert rows[2.0]["conditional_accuracy_min"] == min(direct.per_class_accuracy.values())


def test_a_per_class_column_samples_each_class_at_its_scale(monkeypatch):
    dataset = make_toy_dataset()
    generator = train_generator(dataset, config=tiny_config(), progress=False)
    quality = QualityConfig(reference_epochs=1, cas_epochs=1, eval_per_class=6, kid_subset_size=10, kid_subsets=2,
                            grid_per_class=2)
    scales = parse_per_class("2:b=5,d=0.5", dataset.class_names)
    assert scales == {"a": 2.0, "b": 5.0, "c": 2.0, "d": 0.5}
    per_row = []
    sample = generator.sample

    def recording_sample(conditions, seed, guidance_scale=None, **options):
        per_row.extend(zip(conditions["class_name"], generator.guidance_per_row(conditions, guidance_scale)))
        return sample(conditions, seed, guidance_scale=guidance_scale, **options)

    monkeypatch.setattr(generator, "sample", recording_sample)
    rows = sweep(generator, dataset, [scales], quality, judge=train_reference_classifier(dataset, quality))
    assert list(rows) == [label(scales)] == ["per-class 2:b=5,d=0.5"]
    assert per_row and all(scale == scales[name] for name, scale in per_row)
    assert all(np.isfinite(rows[label(scales)][key]) for key in SWEPT)
    with pytest.raises(ValueError, match="unknown class 'zebra'"):
        parse_per_class("2:zebra=4", dataset.class_names)


def test_each_interval_column_samples_with_its_interval_and_the_own_interval_keeps_the_plain_key(monkeypatch):
    from experiments.bench_guidance import sweep_intervals
    from fairforget.components.generator.model import Generator

    dataset = make_toy_dataset()
    generator = train_generator(dataset, config=tiny_config(guidance_interval=(0.0, float("inf"))), progress=False)
    quality = QualityConfig(reference_epochs=1, cas_epochs=1, eval_per_class=6, kid_subset_size=10, kid_subsets=2,
                            grid_per_class=2)
    used = []
    sample = Generator.sample

    def recording_sample(self, conditions, seed, **options):
        used.append(tuple(self.config.guidance_interval))
        return sample(self, conditions, seed, **options)

    monkeypatch.setattr(Generator, "sample", recording_sample)
    rows = sweep_intervals(generator, dataset, [2.0], [(0.0, float("inf")), (0.0, 4.5)], quality,
                           judge=train_reference_classifier(dataset, quality))
    assert list(rows) == [2.0, "guidance 2 in (0,4.5]"]
    half = len(used) // 2
    assert used == [(0.0, float("inf"))] * half + [(0.0, 4.5)] * half
    assert generator.config.guidance_interval == (0.0, float("inf"))  # the generator itself is left as it was


def test_the_public_evaluation_scores_on_public_images_only():
    """``--public-evaluation``: the judge's images and the scored images are disjoint halves of the public reference
    split; no test or audit image remains, and S (train) is untouched."""
    from experiments.bench_guidance import public_evaluation

    dataset = make_toy_dataset()
    view = public_evaluation(dataset, seed=0)
    ids = {name: set(dataset.split(name).ids) for name in ("train", "test", "audit", "reference")}
    judged, scored = set(view.split("reference").ids), set(view.split("test").ids)
    assert judged and scored and not judged & scored
    assert judged | scored == ids["reference"]
    assert set(view.split("train").ids) == ids["train"]
    assert not set(view.ids) & (ids["test"] | ids["audit"])
    # rows keep their images
    position = {i: k for k, i in enumerate(dataset.ids)}
    for row, sample_id in enumerate(view.ids):
        assert np.array_equal(view.images[row], dataset.images[position[sample_id]])
