"""bench_replacement: the training sets are what the pipeline builds, and the figures are the ensemble's."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_replacement import format_rows, train_and_test, training_sets
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
    assert list(sets) == ["oversampled", "public-filled", "augmented g0", "synthetic g0 x1", "synthetic g0 x2",
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
