"""Generator quality metrics checked against independent recomputations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairforget.components.dataset import make_toy_dataset
from fairforget.components.generator import tiny_config, train_generator
from fairforget.components.models import build_classifier
from fairforget.components.quality import (
    QualityConfig,
    classifier_features,
    diversity_ratios,
    evaluate_generator,
    frechet_distance,
    kernel_inception_distance,
    mean_pairwise_distance,
    near_copy_fraction,
    nearest_neighbour_distances,
    sample_grid,
)


def test_frechet_distance_matches_the_eigenvalue_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(loc=0.5, size=(300, 5)) @ rng.normal(size=(5, 5))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S_a S_b)^{1/2}) = sum of square roots of the eigenvalues of S_a S_b (real, non-negative)
    trace_root = np.sum(np.sqrt(np.clip(np.linalg.eigvals(cov_a @ cov_b).real, 0, None)))
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_mean_pairwise_distance_matches_scipy_pdist():
    from scipy.spatial.distance import pdist

    features = np.random.default_rng(5).normal(size=(37, 6))
    assert mean_pairwise_distance(features) == pytest.approx(pdist(features).mean(), rel=1e-9)


def test_diversity_ratio_on_constructed_cases():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(200, 8))
    real_labels = np.repeat([0, 1], 100)
    # class 0: the real images' own distribution scaled by 0.5 -> pairwise distances halve exactly
    # class 1: one image repeated -> no diversity at all
    synthetic = np.concatenate([0.5 * real[:100], np.repeat(real[100:101], 50, axis=0)])
    synthetic_labels = np.repeat([0, 1], [100, 50])
    ratios = diversity_ratios(synthetic, synthetic_labels, real, real_labels, num_classes=3)
    assert ratios[0] == pytest.approx(0.5, rel=1e-9)
    assert ratios[1] == pytest.approx(0.0, abs=1e-6)
    assert 2 not in ratios  # no images of class 2 on either side: left out, not a division by zero
    # real images judged against themselves: exactly 1
    assert diversity_ratios(real, real_labels, real, real_labels, 2) == pytest.approx({0: 1.0, 1: 1.0})


def test_kid_matches_a_naive_unbiased_mmd():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 4)), rng.normal(loc=0.3, size=(30, 4))

    def k(x, y):
        return (x @ y / 4 + 1) ** 3

    m = 30
    same_a = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    same_b = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    cross = sum(k(a[i], b[j]) for i in range(m) for j in range(m)) / (m * m)
    mean, std = kernel_inception_distance(a, b, subset_size=30, subsets=3, seed=0)
    assert mean == pytest.approx(same_a + same_b - 2 * cross, rel=1e-9)  # full-size subsets: every draw is equal
    assert std == pytest.approx(0.0, abs=1e-9)


def test_nearest_neighbours_and_near_copies_against_brute_force():
    rng = np.random.default_rng(2)
    real = rng.integers(0, 256, size=(40, 6, 6, 1), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(15, 6, 6, 1), dtype=np.uint8)
    got = nearest_neighbour_distances(queries, real, chunk=4)
    flat_q = queries.reshape(15, -1) / 255.0
    flat_r = real.reshape(40, -1) / 255.0
    brute = np.sort(np.sqrt(((flat_q[:, None] - flat_r[None]) ** 2).sum(-1)), axis=1)[:, :2]
    np.testing.assert_allclose(got, brute, rtol=1e-9)
    # copies of training images with a pixel of noise are near-copies; fresh random images are not
    copies = real[:10].astype(np.int16)
    copies[:, 0, 0, 0] += 3
    copies = np.clip(copies, 0, 255).astype(np.uint8)
    assert near_copy_fraction(nearest_neighbour_distances(copies, real)) == 1.0
    assert near_copy_fraction(got) == 0.0
    assert near_copy_fraction(np.array([[1.0, 3.5], [1.0, 2.9]])) == 0.5  # the rule is d1 < d2 / 3


def test_classifier_features_are_the_penultimate_layer():
    model = build_classifier("small_cnn", 4, 1, 8, seed=0).eval()
    images = np.random.default_rng(3).integers(0, 256, size=(7, 8, 8, 1), dtype=np.uint8)
    features = classifier_features(model, images, batch_size=3)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    with torch.no_grad():
        expected = model.head[:-1](model.features(x)).double().numpy()
    assert features.shape == (7, 128)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


def test_evaluate_generator_reports_every_metric_and_a_grid():
    ds = make_toy_dataset()
    generator = train_generator(ds, config=tiny_config(), progress=False)
    report = evaluate_generator(generator, ds, QualityConfig(reference_epochs=1, cas_epochs=1, eval_per_class=6,
                                                            kid_subset_size=10, kid_subsets=2, grid_per_class=3))
    m = report.metrics
    for key in ("conditional_accuracy", "cas", "cas_real_baseline", "cas_ratio", "fid", "fid_real_vs_real", "kid",
                "near_copy_fraction", "nn_distance_median", "reference_classifier_test_accuracy", "diversity_ratio",
                "diversity_ratio_min"):
        assert key in m and np.isfinite(m[key]), key
    assert 0 <= m["conditional_accuracy"] <= 1 and 0 <= m["near_copy_fraction"] <= 1
    assert m["cas_ratio"] == pytest.approx(m["cas"] / m["cas_real_baseline"])
    # per class: the test-count-weighted mean of the per-class CAS is the CAS
    counts = np.bincount(ds.split("test").labels, minlength=ds.num_classes)
    assert sum(m[f"cas/{c}"] * n for c, n in zip(ds.class_names, counts)) / counts.sum() == pytest.approx(m["cas"])
    assert m["eval_images"] == 24 and m["guidance_scale"] == generator.config.guidance_scale
    assert set(report.per_class_accuracy) == set(ds.class_names)
    metrics = report.as_metrics()
    assert metrics["generator/fid"] == m["fid"] and "generator/conditional_accuracy/a" in metrics
    assert len(report.figure.axes) == 4 * (2 * 3 + 1)


def test_sample_grid_puts_real_left_and_synthetic_right():
    ds = make_toy_dataset()
    train = ds.split("train")
    synthetic = np.full((8, 8, 8, 1), 255, dtype=np.uint8)
    figure = sample_grid(train, synthetic, np.repeat(np.arange(4), 2), per_class=2)
    axes = np.array(figure.axes).reshape(4, 5)
    left = axes[0, 0].images[0].get_array()
    right = axes[0, 3].images[0].get_array()
    np.testing.assert_array_equal(left, train.images[train.labels == 0][0][..., 0])
    assert np.all(np.asarray(right) == 255)
    assert not axes[0, 2].images  # the gap column


def test_quality_config_validation():
    with pytest.raises(ValueError, match="eval_per_class"):
        QualityConfig(eval_per_class=1).validate()
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        QualityConfig(guidance_scale=-1.0).validate()
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        QualityConfig(guidance_scale={"Shirt": 4.0, "Bag": -1.0}).validate()
    QualityConfig(guidance_scale={"Shirt": 4.0, "Bag": 1.0}).validate()
