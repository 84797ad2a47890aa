"""bench_replacement: the training sets are what the pipeline builds, and the figures are the ensemble's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from experiments.bench_replacement import (
    format_rows,
    format_summary,
    set_groups,
    summarize_seeds,
    train_and_test,
    training_sets,
)
from fairforget.components.baselines import copy_source, oversampled_training_set
from fairforget.components.dataset import make_toy_dataset
from fairforget.components.generator import tiny_config, train_generator
from fairforget.components.sisa.model import SisaConfig
from fairforget.components.training import TrainConfig


@pytest.fixture(scope="module")
def toy_and_generator():
    dataset = make_toy_dataset(per_class_other=16)  # enough public images to fill every class of S*
    return dataset, train_generator(dataset, config=tiny_config(), progress=False)


def test_sets_share_s_star_counts_and_synthetic_sets_hold_no_original(toy_and_generator, monkeypatch):
    dataset, generator = toy_and_generator
    scales_sampled = []
    sample = generator.sample

    def recording_sample(conditions, seed, guidance_scale=None, **options):
        scales_sampled.append((guidance_scale, len(conditions)))
        return sample(conditions, seed, guidance_scale=guidance_scale, **options)

    monkeypatch.setattr(generator, "sample", recording_sample)
    sets = training_sets(dataset, generator, scales=[0.0, 2.0], multiples=[1.0, 2.0])
    assert list(sets) == ["oversampled", "oversampled in shards", "public-filled", "augmented g0", "synthetic g0 x1", "synthetic g0 x2",
                          "augmented g2", "synthetic g2 x1", "synthetic g2 x2"]
    train = dataset.split("train")
    s_star = np.bincount(sets["augmented g2"].labels, minlength=dataset.num_classes)
    assert s_star.sum() > len(train)  # the toy S is biased: Algorithm 1 adds samples
    for name in ("oversampled", "public-filled", "augmented g0", "synthetic g0 x1", "synthetic g2 x1"):
        assert np.bincount(sets[name].labels, minlength=dataset.num_classes).tolist() == s_star.tolist(), name
    for name in ("synthetic g0 x2", "synthetic g2 x2"):
        assert np.bincount(sets[name].labels, minlength=dataset.num_classes).tolist() == (2 * s_star).tolist()
    # S* keeps every original; the synthetic sets hold none; oversampling adds only copies of real images
    assert set(train.ids) <= set(sets["augmented g2"].ids)
    for name in ("synthetic g0 x1", "synthetic g2 x2"):
        assert (sets[name].manifest["origin"] == "synthetic").all() and not set(train.ids) & set(sets[name].ids)
    assert (sets["oversampled"].manifest["origin"] == "real").all()
    # the public baseline adds distinct real images of the public split only, as training rows
    public = sets["public-filled"]
    added = public.select(~public.manifest["id"].isin(train.ids))
    assert len(added) == len(set(added.ids)) == s_star.sum() - len(train)
    assert set(added.ids) <= set(dataset.split("reference").ids) and (public.manifest["split"] == "train").all()
    # every synthetic image of a set is drawn at that set's scale
    assert {scale for scale, _ in scales_sampled} == {0.0, 2.0}
    assert sum(n for scale, n in scales_sampled if scale == 2.0) == (
        len(sets["augmented g2"]) - len(train) + len(sets["synthetic g2 x1"]) + len(sets["synthetic g2 x2"]))


def test_figures_are_the_ensembles_on_the_test_split(toy_and_generator, tmp_path):
    dataset, _ = toy_and_generator
    config = SisaConfig(num_shards=2, num_slices=1, executor="serial", train=TrainConfig(epochs=3))
    row = train_and_test(dataset.split("train"), dataset.split("test"), config, tmp_path / "model", "small")
    test = dataset.split("test")
    sizes = test.manifest["superclass"].value_counts()
    # overall accuracy is the test-count-weighted mean of the superclass accuracies, and the minority figure is
    # the named superclass's
    assert row["acc/test"] == pytest.approx(sum(row["per_superclass"][k] * n for k, n in sizes.items()) / len(test))
    assert row["acc/minority"] == row["per_superclass"]["small"]
    assert row["acc/worst_class"] == min(row["per_class"].values())
    assert row["train_size"] == len(dataset.split("train")) and 0.0 <= row["shard_fit_accuracy"] <= 1.0
    assert not (tmp_path / "model").exists()


def test_table_shows_each_figure_against_the_baseline():
    base = {"acc/test": 0.8, "acc/minority": 0.7, "acc/worst_class": 0.5, "train_size": 10, "shard_fit_accuracy": 1.0}
    other = dict(base, **{"acc/test": 0.75, "acc/minority": 0.72})
    table = format_rows({"oversampled": base, "synthetic g3 x1": other})
    assert "| synthetic g3 x1 | 10 | 1.000 | 0.7500 (-0.0500) | 0.7200 (+0.0200) | 0.5000 (+0.0000) |" in table
    assert "| oversampled | 10 | 1.000 | 0.8000 | 0.7000 | 0.5000 |" in table


def test_oversampling_in_shards_keeps_each_copy_with_its_original(toy_and_generator, tmp_path):
    dataset, _ = toy_and_generator
    train, test = dataset.split("train"), dataset.split("test")
    counts = np.bincount(train.labels, minlength=dataset.num_classes)
    oversampled = oversampled_training_set(train, np.full(dataset.num_classes, 3 * counts.max()))
    assert set_groups("oversampled", oversampled) is None
    groups = set_groups("oversampled in shards", oversampled)
    assert len(set(groups)) == len(train) and set(groups) == set(train.ids)
    assert all(copy_source(i) == g for i, g in zip(oversampled.ids, groups))
    config = SisaConfig(num_shards=2, num_slices=1, executor="serial", train=TrainConfig(epochs=1))
    spread = train_and_test(oversampled, test, config, tmp_path / "a", "small")
    local = train_and_test(oversampled, test, config, tmp_path / "b", "small", groups=groups)
    plain = train_and_test(train, test, config, tmp_path / "c", "small")
    # in shards, each shard learns from as many distinct records as without copies; dealt freely, from more
    assert local["originals_per_shard"] == plain["originals_per_shard"] == len(train) / 2
    assert spread["originals_per_shard"] > local["originals_per_shard"]
    synthetic = train.select(np.zeros(len(train), bool)).concat(dataclasses.replace(
        train, manifest=train.manifest.assign(origin="synthetic", id=[f"s{i}" for i in range(len(train))])))
    assert train_and_test(synthetic, test, config, tmp_path / "d", "small")["originals_per_shard"] == 0.0


def test_the_seed_summary_is_the_mean_and_sd_of_each_figure_and_of_its_difference_to_the_baseline():
    def row(test, minority, worst):
        return {"acc/test": test, "acc/minority": minority, "acc/worst_class": worst, "originals_per_shard": 10.0}

    rows_by_seed = {0: {"oversampled": row(0.8, 0.7, 0.5), "augmented g3": row(0.82, 0.71, 0.4)},
                    1: {"oversampled": row(0.6, 0.5, 0.3), "augmented g3": row(0.64, 0.55, 0.4)}}
    summary = summarize_seeds(rows_by_seed)
    assert summary["augmented g3"]["acc/test"]["mean"] == pytest.approx(0.73)
    assert summary["augmented g3"]["acc/test"]["sd"] == pytest.approx(np.std([0.82, 0.64], ddof=1))
    assert summary["augmented g3"]["acc/minority"]["diff_mean"] == pytest.approx(0.03)
    assert summary["augmented g3"]["acc/minority"]["diff_sd"] == pytest.approx(np.std([0.01, 0.05], ddof=1))
    assert summary["augmented g3"]["acc/worst_class"]["diff_mean"] == pytest.approx(0.0)
    table = format_summary(summary)
    assert "| augmented g3 | 10 | 0.7300 +- 0.1273 (+0.0300 +- 0.0141) |" in table
