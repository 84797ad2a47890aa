"""The DP labeller of unlabelled public images (``pseudo_label_epsilon``): its centroids against a direct
recomputation, its sensitivity, its accounting against independent accountants (and the analytic Gaussian
mechanism), and what the public pre-training is given (no public label)."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from fairforget.components.dataset import make_toy_dataset
from fairforget.components.generator import GeneratorConfig, tiny_config, train_generator
from fairforget.components.generator.labeller import (
    RECORD_SENSITIVITY,
    class_table,
    composed_noise_multiplier,
    fit_dp_labeller,
    labeller_noise_multiplier,
    public_whitening,
)
from fairforget.errors import ConfigError


@pytest.fixture(scope="module")
def toy():
    return make_toy_dataset(per_class_train=(24, 24, 24, 24), per_class_other=16, seed=0)


def _config(**overrides):
    return tiny_config(**{"privacy": "dp", "train_steps": 20, "autoencoder_epochs": 3, "batch_size": 16,
                          "warmup_steps": 5, "public_labels": False, "pseudo_label_epsilon": 2.0,
                          "dp_epsilon": 8.0, "public_pretrain_steps": 10, **overrides})


def test_without_noise_the_centroids_are_the_class_means_of_the_clipped_whitened_features():
    rng = np.random.default_rng(0)
    public = rng.normal(0, 1, (400, 6)) * np.array([5, 3, 2, 1, 0.5, 0.1]) + 7
    features = rng.normal(0, 1, (90, 6)) * np.array([5, 3, 2, 1, 0.5, 0.1]) + 7
    features[0] *= 40  # an outlier, clipped
    labels = np.repeat([0, 1, 2], 30)
    labeller = fit_dp_labeller(features, labels, public, 3, noise_multiplier=0.0, seed=0)
    mean, projection = public_whitening(public)
    whitened_public = (public - mean) @ projection
    assert np.allclose(whitened_public.std(axis=0), 1, atol=1e-3)  # unit variance on the public images
    z = (features - mean) @ projection
    clip = math.sqrt(projection.shape[1])
    z = np.stack([row * min(1.0, clip / np.linalg.norm(row)) for row in z])  # clipped one record at a time
    expected = np.stack([z[labels == c].mean(axis=0) for c in range(3)])
    assert np.allclose(labeller.centroids, expected, atol=1e-4)
    assert labeller.history == [(0.0, 1.0, 1)]


def test_one_record_moves_the_released_table_by_at_most_the_sensitivity():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, (50, 4))
    labels = rng.integers(0, 3, 50)
    full = class_table(z, labels, 3, clip_norm=2.0)
    for i in range(len(z)):  # remove each record in turn
        keep = np.arange(len(z)) != i
        change = np.linalg.norm(full - class_table(z[keep], labels[keep], 3, clip_norm=2.0))
        assert change <= RECORD_SENSITIVITY + 1e-9
    assert full[:, -1].tolist() == np.bincount(labels, minlength=3).tolist()


def test_the_labeller_learns_separable_classes_and_noise_costs_accuracy():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 8))
    labels = rng.integers(0, 3, 600)
    features = (centres[labels] + rng.normal(0, 1, (600, 8))).astype(np.float32)
    public = (centres[rng.integers(0, 3, 300)] + rng.normal(0, 1, (300, 8))).astype(np.float32)
    accurate = fit_dp_labeller(features, labels, public, 3, noise_multiplier=1.0, seed=0)
    drowned = fit_dp_labeller(features, labels, public, 3, noise_multiplier=5000.0, seed=0)
    assert np.mean(accurate.pseudo_labels(features, confidence=0.0) == labels) > 0.95
    assert np.mean(drowned.pseudo_labels(features, confidence=0.0) == labels) < 0.8
    assert accurate.history == [(1.0, 1.0, 1)]
    unsure = accurate.pseudo_labels(features, confidence=0.999)
    assert (unsure == -1).any() and set(unsure.tolist()) <= {-1, 0, 1, 2}


def test_the_labellers_noise_is_the_analytic_gaussian_mechanisms():
    """One release at sensitivity 1 and noise sigma is (epsilon, delta)-DP exactly when
    Phi(1/(2 sigma) - epsilon sigma) - e^epsilon Phi(-1/(2 sigma) - epsilon sigma) <= delta (Balle and Wang
    2018): the accountant's noise for epsilon 2 meets it, 5% less noise does not."""
    from scipy.stats import norm

    def delta_of(sigma, epsilon):
        return norm.cdf(0.5 / sigma - epsilon * sigma) - math.exp(epsilon) * norm.cdf(-0.5 / sigma - epsilon * sigma)

    sigma = labeller_noise_multiplier(2.0, 1e-5)
    assert delta_of(sigma, 2.0) <= 1e-5 * 1.01
    assert delta_of(sigma * 0.95, 2.0) > 1e-5


def test_the_labeller_and_the_dp_sgd_together_spend_the_budget_an_independent_accountant_finds(toy):
    from opacus.accountants import PRVAccountant, RDPAccountant

    summary = train_generator(toy, config=_config(), progress=False).training_summary
    labeller = (summary["dp_label_noise_multiplier"], summary["dp_label_sample_rate"], summary["dp_label_steps"])
    denoiser = (summary["dp_noise_multiplier"], summary["dp_sample_rate"], summary["dp_steps"])
    assert labeller[1:] == (1.0, 1) and denoiser[2] == 20
    prv = PRVAccountant()
    prv.history = [labeller]
    assert prv.get_epsilon(summary["dp_delta"]) == pytest.approx(2.0, abs=0.05)  # the labeller alone
    prv.history = [labeller, denoiser]
    assert prv.get_epsilon(summary["dp_delta"]) == pytest.approx(summary["dp_epsilon"], rel=0.02)
    assert summary["dp_epsilon"] <= 8.0 * 1.02
    rdp = RDPAccountant()  # an upper bound of the same composition
    rdp.history = [labeller, denoiser]
    assert rdp.get_epsilon(summary["dp_delta"]) >= summary["dp_epsilon"] * 0.98
    alone = composed_noise_multiplier(8.0, summary["dp_delta"], denoiser[1], denoiser[2])
    assert denoiser[0] > alone  # the denoiser pays for the labeller with more noise
    assert 0 <= summary["pseudo_labelled_fraction"] <= 1


def test_the_pseudo_labelled_pre_training_never_sees_a_public_label(toy, monkeypatch):
    """The public split's labels shuffled: the pre-training is given exactly the same images and codes, so no
    public label reaches it; the codes carry classes (from S, through the DP labeller), not the null code only."""
    from fairforget.components.generator import train as train_module

    given = []
    real = train_module.fit_denoiser

    def spy(denoiser, data, codes, space, config, progress):
        given.append((data.clone(), codes.copy(), space))
        return real(denoiser, data, codes, space, config, progress)

    monkeypatch.setattr(train_module, "fit_denoiser", spy)
    toy = replace(toy, attributes=["superclass"])  # an attribute too: its public values must not leak either
    public = np.flatnonzero((toy.manifest["split"] == "reference").to_numpy())
    manifest = toy.manifest.copy()
    columns = ["label", "class_name", "superclass"]
    manifest.loc[public, columns] = manifest.loc[np.random.default_rng(1).permutation(public), columns].to_numpy()
    assert not np.array_equal(manifest["label"], toy.manifest["label"])
    config = _config(train_steps=2)
    train_generator(toy, config=config, progress=False)
    train_generator(replace(toy, manifest=manifest), config=config, progress=False)
    (data, codes, space), (data_shuffled, codes_shuffled, _) = given
    assert torch.equal(data, data_shuffled) and np.array_equal(codes, codes_shuffled)
    assert len(data) == len(public)
    assert (codes[:, 0] < space.cardinalities[0]).any()  # some public images carry a class
    assert (codes[:, 1] < space.cardinalities[1]).any()  # and the superclass of that class in S


@pytest.mark.parametrize("overrides, message", [
    (dict(privacy="dp", public_labels=False, pseudo_label_epsilon=10.0, dp_epsilon=10.0),
     "pseudo_label_epsilon must lie in"),
    (dict(privacy="dp", public_labels=False, pseudo_label_epsilon=-1.0), "pseudo_label_epsilon must lie in"),
])
def test_bad_labeller_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        GeneratorConfig(**overrides).validate()
    assert "\n" not in str(error.value)


def test_a_labeller_that_alone_spends_the_budget_is_refused():
    with pytest.raises(ConfigError, match="the labeller alone spends"):
        composed_noise_multiplier(1.0, 1e-5, 0.1, 100, earlier=[(0.5, 1.0, 1)])
    assert math.isfinite(composed_noise_multiplier(10.0, 1e-5, 0.1, 100, earlier=[(2.0, 1.0, 1)]))


def test_the_labeller_runs_only_for_a_dp_generator_without_public_labels():
    from fairforget.components.generator.train import labeller_history

    assert len(labeller_history(_config(), 96)) == 1
    assert labeller_history(_config(public_labels=True), 96) == []  # the public labels are used instead
    assert labeller_history(_config(pseudo_label_epsilon=0.0), 96) == []  # unconditional pre-training
    assert labeller_history(tiny_config(pseudo_label_epsilon=2.0), 96) == []  # a non-private generator
