"""Classifiers, deterministic training, augmentations and batched prediction (toy data, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairforget.components.models import CLASSIFIERS, build_classifier
from fairforget.components.training import (
    TrainConfig,
    apply_augmentation,
    fit_classifier,
    images_to_tensor,
    predict_logits,
    predict_proba,
    rebalancing_weights,
)

FAST = TrainConfig(epochs=2, batch_size=8, augment=True, crop_padding=1, num_threads=1)


def weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


SIZES = [(1, 8), (3, 16), (1, 28), (3, 32), (3, 53), (3, 64), (1, 128)]


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("channels,size", SIZES)
def test_classifiers_map_images_of_any_supported_size_to_logits(name, channels, size):
    model = build_classifier(name, 10, channels, size, seed=0)
    out = model.eval()(torch.zeros(2, channels, size, size))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("channels,size", SIZES)
def test_the_autoencoder_reconstructs_images_of_any_supported_size(channels, size):
    """Odd sizes (53) once crashed the encoder: its linear layer expected ceil(53/4)^2 features, the strided
    convolutions left floor(53/4)^2. Non-square images work as well."""
    from fairforget.components.generator.autoencoder import ConvAutoencoder

    for height, width in ((size, size), (size, max(4, size // 2 + 1))):
        model = ConvAutoencoder((height, width, channels), latent_dim=8, channels=(4, 8)).eval()
        images = torch.rand(2, channels, height, width)
        assert model.encode(images).shape == (2, 8)
        assert model(images).shape == images.shape


@pytest.mark.parametrize("channels,size", [(3, 53), (1, 28)])
def test_the_onnx_export_matches_torch_at_odd_and_gray_sizes(channels, size, tmp_path):
    from fairforget.components.export import EnsembleModule, export_onnx, onnx_predict

    module = EnsembleModule([build_classifier("small_cnn", 4, channels, size, seed=s).eval() for s in (0, 1)])
    images = np.random.default_rng(0).random((3, channels, size, size), dtype=np.float32)
    path = export_onnx(module, torch.from_numpy(images[:1]), tmp_path / "m.onnx")
    with torch.no_grad():
        expected = module(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(onnx_predict(path, images), expected, atol=1e-5)


def test_resnet18_is_adapted_to_32px():
    model = build_classifier("resnet18", 10, 3, 32)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)


def test_unknown_classifier_lists_known_ones():
    with pytest.raises(ValueError, match="small_cnn"):
        build_classifier("vgg", 10, 1, 28)
    assert set(CLASSIFIERS) == {"small_cnn", "resnet18"}


def test_seed_fixes_initial_weights_without_touching_global_rng():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_classifier("small_cnn", 4, 1, 8, seed=7)
    assert torch.equal(before, torch.get_rng_state())
    assert weights_equal(a, build_classifier("small_cnn", 4, 1, 8, seed=7))
    assert not weights_equal(a, build_classifier("small_cnn", 4, 1, 8, seed=8))


def test_local_weights_file_is_loaded(tmp_path):
    source = build_classifier("small_cnn", 4, 1, 8, seed=3)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    loaded = build_classifier("small_cnn", 4, 1, 8, seed=0, weights_path=tmp_path / "w.pt")
    assert weights_equal(source, loaded)
    with pytest.raises(ValueError, match="does not fit"):
        build_classifier("small_cnn", 5, 1, 8, weights_path=tmp_path / "w.pt")
    with pytest.raises(FileNotFoundError):
        build_classifier("small_cnn", 4, 1, 8, weights_path=tmp_path / "missing.pt")


def test_training_is_deterministic_given_the_seed(toy_dataset):
    train = toy_dataset.split("train")

    def run(seed):
        model = build_classifier("small_cnn", 4, 1, 8, seed=0)
        return fit_classifier(model, train.images, train.labels, FAST, seed=seed)

    first, second, other = run(1), run(1), run(2)
    assert weights_equal(first, second)
    assert not weights_equal(first, other)


def test_small_cnn_learns_the_toy_classes(toy_dataset):
    train, test = toy_dataset.split("train"), toy_dataset.split("test")
    model = build_classifier("small_cnn", 4, 1, 8, seed=0)
    config = TrainConfig(epochs=6, batch_size=8, augment=False)
    fit_classifier(model, train.images, train.labels, config, seed=0)
    accuracy = np.mean(np.argmax(predict_proba(model, test.images), axis=1) == test.labels)
    assert accuracy >= 0.9


def test_rebalancing_weights_give_each_class_its_target_mass():
    labels = np.array([0] * 80 + [1] * 20 + [2] * 10)
    weights = np.array(rebalancing_weights(labels, np.array([80, 60, 30])))
    mass = weights * np.bincount(labels)
    assert np.allclose(mass / mass.sum(), np.array([80, 60, 30]) / 170)
    assert np.isclose(mass.sum(), len(labels))  # the weighted total stays N


def test_class_weights_shift_the_classifier_towards_a_class(toy_dataset):
    train, test = toy_dataset.split("train"), toy_dataset.split("test")

    def predicted_share_of_class_3(weights):
        config = TrainConfig(epochs=1, batch_size=8, augment=False, num_threads=1, class_weights=weights)
        model = fit_classifier(build_classifier("small_cnn", 4, 1, 8, seed=0), train.images, train.labels, config,
                               seed=0)
        return np.mean(predict_logits(model, test.images).argmax(axis=1) == 3), model

    plain_share, plain = predicted_share_of_class_3(None)
    ones_share, ones = predicted_share_of_class_3((1.0, 1.0, 1.0, 1.0))
    heavy_share, _ = predicted_share_of_class_3((1.0, 1.0, 1.0, 50.0))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(plain.state_dict().values(), ones.state_dict().values()))
    assert heavy_share > plain_share
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(class_weights=(1.0, 0.0)).validate()


def test_predictions_are_batched_softmax_of_the_model(toy_dataset):
    images = toy_dataset.split("test").images
    model = build_classifier("small_cnn", 4, 1, 8, seed=0)
    logits = predict_logits(model, images, batch_size=5)
    with torch.no_grad():
        direct = model.eval()(torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255)).numpy()
    np.testing.assert_allclose(logits, direct, rtol=1e-5, atol=1e-5)
    assert logits.dtype == np.float32 and logits.shape == (len(images), 4)
    proba = predict_proba(model, images)
    expected = np.exp(direct - direct.max(1, keepdims=True))
    np.testing.assert_allclose(proba, expected / expected.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_augmentation_flip_and_crop_match_numpy():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 6, 6, 1), dtype=np.uint8)
    x = images_to_tensor(images)
    pad = 2
    flip = torch.tensor([True, False, False])
    dy = torch.tensor([pad, 0, 4])
    dx = torch.tensor([pad, 0, 1])
    out = apply_augmentation(x, flip, dy, dx, padding=pad).numpy()
    reference = x.numpy()
    padded = np.pad(reference, ((0, 0), (0, 0), (pad, pad), (pad, pad)))  # zero fill
    np.testing.assert_array_equal(out[0], reference[0][..., ::-1])
    np.testing.assert_array_equal(out[1], padded[1, :, 0:6, 0:6])
    np.testing.assert_array_equal(out[2], padded[2, :, 4:10, 1:7])


def test_bad_images_are_refused():
    model = build_classifier("small_cnn", 4, 1, 8)
    with pytest.raises(ValueError, match="uint8"):
        predict_logits(model, np.zeros((2, 8, 8, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="aligned"):
        fit_classifier(model, np.zeros((2, 8, 8, 1), np.uint8), np.zeros(3, np.int64), FAST, seed=0)
    with pytest.raises(ValueError, match="optimizer"):
        fit_classifier(model, np.zeros((2, 8, 8, 1), np.uint8), np.zeros(2, np.int64),
                       TrainConfig(optimizer="lbfgs"), seed=0)


@pytest.mark.parametrize("height,width", [(53, 53), (30, 17), (28, 28)])
def test_the_pixel_unet_pads_sides_its_levels_cannot_halve_and_crops_back(height, width):
    from fairforget.components.generator.denoiser import PixelUNetDenoiser

    model = PixelUNetDenoiser((height, width, 3), (8, 16, 16), 1, 4, False, [4]).eval()
    x = torch.randn(2, 3, height, width)
    with torch.no_grad():
        out = model(x, torch.tensor([3, 5]), torch.tensor([[0], [1]]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert [s % 4 for s in model.unet.config.sample_size] == [0, 0]
