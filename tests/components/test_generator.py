"""The guided diffusion generator on 8x8 toy data: tiny networks, 2 DDIM steps, seconds per test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DDIMScheduler

from fairforget.components.dataset import make_toy_dataset
from fairforget.components.generator import (
    ConditionSpace,
    GeneratorConfig,
    generator_version,
    load_generator,
    tiny_config,
    train_generator,
)
from fairforget.components.generator.denoiser import draw_conditions
from fairforget.components.generator.model import make_scheduler
from fairforget.components.generator.sample import ddim_sample
from fairforget.errors import ConfigError


def toy_with_attribute(seed: int = 0):
    """The toy data with an extra attribute ``tone`` (dark/light): light images are brighter, 3:1 dark."""
    ds = make_toy_dataset(seed=seed)
    rng = np.random.default_rng(seed)
    tone = np.where(rng.random(len(ds)) < 0.25, "light", "dark")
    images = ds.images.astype(np.int16)
    images[tone == "light"] += 60
    ds.images = np.clip(images, 0, 255).astype(np.uint8)
    ds.manifest["tone"] = tone
    ds.attributes = ["tone"]
    return ds



@pytest.fixture(scope="module")
def toy():
    return make_toy_dataset()


@pytest.fixture(scope="module", params=["latent_mlp", "pixel_unet"])
def tiny_generator(request, toy):
    return train_generator(toy, config=tiny_config(architecture=request.param), data_md5="md5-toy", progress=False)


def conditions(*classes):
    return pd.DataFrame({"class_name": list(classes)})


def test_sample_shapes_dtype_and_metadata(tiny_generator, toy):
    images = tiny_generator.sample(conditions("a", "b", "c", "d", "a"), seed=3)
    assert images.shape == (5, 8, 8, 1) and images.dtype == np.uint8
    assert tiny_generator.data_md5 == "md5-toy"
    assert tiny_generator.space.names == ("class_name",)
    assert tiny_generator.version == generator_version(tiny_generator.config, "md5-toy", tiny_generator.space)
    assert tiny_generator.training_summary["train_images"] == len(toy.split("train"))


def test_sampling_is_seeded_and_prefix_stable(tiny_generator):
    table = conditions("a", "b", "c", "d")
    first = tiny_generator.sample(table, seed=11)
    np.testing.assert_array_equal(first, tiny_generator.sample(table, seed=11))
    assert not np.array_equal(first, tiny_generator.sample(table, seed=12))
    # sample k's noise is row k of one seeded draw: a prefix of the conditions gives a prefix of the images,
    # whatever the batch size
    np.testing.assert_array_equal(first[:2], tiny_generator.sample(table[:2], seed=11, batch_size=1))


def test_save_load_roundtrip_gives_identical_samples(tiny_generator, tmp_path):
    folder = tiny_generator.save(tmp_path / "gen")
    assert sorted(p.name for p in folder.iterdir()) == ["generator.json", "weights.pt"]
    loaded = load_generator(folder, device="cpu")
    assert loaded.version == tiny_generator.version and loaded.data_md5 == "md5-toy"
    table = conditions("d", "c", "b")
    np.testing.assert_array_equal(loaded.sample(table, seed=5), tiny_generator.sample(table, seed=5))


def test_bad_conditions_and_guidance_are_refused(tiny_generator):
    with pytest.raises(ValueError, match="unknown condition class_name=\\['zebra'\\].*knows"):
        tiny_generator.sample(conditions("a", "zebra"), seed=0)
    with pytest.raises(ValueError, match="lack the columns"):
        tiny_generator.sample(pd.DataFrame({"label": [0]}), seed=0)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        tiny_generator.sample(conditions("a"), seed=0, guidance_scale=-0.5)


def test_per_class_guidance_samples_each_class_at_its_own_scale(tiny_generator):
    table = conditions("a", "b", "c", "d", "a", "c")
    scales = {"a": 1.5, "b": 3.0, "c": 2.0, "d": 4.0}
    mixed = tiny_generator.sample(table, seed=7, guidance_scale=scales)
    # each row is what one scale for the whole table gives that row (same noise row, same condition)
    for name, scale in scales.items():
        rows = (table["class_name"] == name).to_numpy()
        np.testing.assert_array_equal(mixed[rows], tiny_generator.sample(table, seed=7, guidance_scale=scale)[rows])
    # one scale for every class is the scalar guidance, exactly
    np.testing.assert_array_equal(tiny_generator.sample(table, seed=7, guidance_scale=dict.fromkeys("abcd", 2.0)),
                                  tiny_generator.sample(table, seed=7, guidance_scale=2.0))


def test_per_class_guidance_refuses_a_missing_class_or_a_negative_scale(tiny_generator):
    with pytest.raises(ValueError, match="no scale for \\['c'\\]"):
        tiny_generator.sample(conditions("a", "c"), seed=0, guidance_scale={"a": 2.0, "b": 2.0})
    with pytest.raises(ValueError, match="guidance scales must be >= 0"):
        tiny_generator.sample(conditions("a"), seed=0, guidance_scale={"a": -1.0})


def test_config_validation_and_cpu_resolution():
    with pytest.raises(ValueError, match="unknown generator architecture 'gan'"):
        GeneratorConfig(architecture="gan").validate()
    with pytest.raises(ValueError, match="multiple of unet_norm_groups"):
        GeneratorConfig(unet_channels=(30, 64), unet_norm_groups=32).validate()
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        GeneratorConfig(guidance_scale=-1).validate()
    resolved = GeneratorConfig().resolved()
    expected = "pixel_unet" if torch.cuda.is_available() else "latent_mlp"
    assert resolved.architecture == expected
    # sampling-only fields do not change what is trained, so they do not change the reuse hash
    assert GeneratorConfig(guidance_scale=7).identity_record() == GeneratorConfig().identity_record()
    assert GeneratorConfig(train_steps=10).identity_record() != GeneratorConfig().identity_record()
    assert GeneratorConfig.from_dict(GeneratorConfig().to_dict()) == GeneratorConfig()


class ConditionBlindDenoiser(torch.nn.Module):
    """A fixed function of (x, t) that ignores the condition."""

    def forward(self, x, t, codes):
        return 0.3 * x + 0.001 * t.float().view(-1, *([1] * (x.dim() - 1)))


class ConditionShiftDenoiser(torch.nn.Module):
    """eps = 0.1 * x + 0.2 * code: the condition moves the prediction by a known amount."""

    def forward(self, x, t, codes):
        return 0.1 * x + 0.2 * codes[:, :1].float()


def test_guidance_formula_against_a_hand_written_loop():
    config = tiny_config(architecture="latent_mlp")
    noise = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    codes = torch.tensor([[0], [1], [2], [1]])
    nulls = torch.full((4, 1), 4)
    scheduler = DDIMScheduler.from_config(make_scheduler(config).config)
    blind = ConditionBlindDenoiser()
    # a condition-blind model: guidance cannot change anything
    out_1 = ddim_sample(blind, scheduler, noise, codes, nulls, 1.0, 2)
    out_5 = ddim_sample(blind, scheduler, noise, codes, nulls, 5.0, 2)
    torch.testing.assert_close(out_1, out_5)
    # independent recomputation of eps = eps_null + w * (eps_cond - eps_null) with the scheduler's own step
    model, w = ConditionShiftDenoiser(), 2.5
    got = ddim_sample(model, scheduler, noise, codes, nulls, w, 3)
    reference = DDIMScheduler.from_config(make_scheduler(config).config)
    reference.set_timesteps(3)
    x = noise.clone()
    for t in reference.timesteps:
        eps = model(x, t, nulls) + w * (model(x, t, codes) - model(x, t, nulls))
        x = reference.step(eps, t, x, eta=0.0).prev_sample
    torch.testing.assert_close(got, x)
    # one scale per sample: each row follows the formula with its own w
    per_sample = torch.tensor([0.0, 1.0, 2.5, 4.0])
    got = ddim_sample(model, scheduler, noise, codes, nulls, per_sample, 3)
    x = noise.clone()
    for t in reference.timesteps:
        eps = model(x, t, nulls) + per_sample.view(-1, 1) * (model(x, t, codes) - model(x, t, nulls))
        x = reference.step(eps, t, x, eta=0.0).prev_sample
    torch.testing.assert_close(got, x)
    with pytest.raises(ValueError, match="3 guidance scales for a batch of 4"):
        ddim_sample(model, scheduler, noise, codes, nulls, torch.ones(3), 3)


def test_guidance_in_an_interval_guides_only_the_steps_whose_noise_level_lies_in_it():
    """Against a hand-written loop: sigma_t = sqrt((1 - a_t) / a_t) from the scheduler's cumulative alphas, the
    guided formula where lo < sigma_t <= hi, the plain conditional model elsewhere."""
    from fairforget.components.generator.sample import guided_steps

    config = tiny_config(architecture="latent_mlp")
    noise = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    codes, nulls = torch.tensor([[0], [1], [2], [1]]), torch.full((4, 1), 4)
    model, w, steps = ConditionShiftDenoiser(), 3.0, 5
    scheduler = DDIMScheduler.from_config(make_scheduler(config).config)
    scheduler.set_timesteps(steps)
    alphas = scheduler.alphas_cumprod[scheduler.timesteps].double().numpy()
    sigmas = np.sqrt((1 - alphas) / alphas)
    lo, hi = float(np.sort(sigmas)[1]), float(np.sort(sigmas)[3])  # guides 2 of the 5 steps
    assert guided_steps(scheduler, (lo, hi)) == [lo < s <= hi for s in sigmas] and sum(guided_steps(scheduler, (lo, hi))) == 2
    assert all(guided_steps(scheduler, (0.0, float("inf"))))
    got = ddim_sample(model, scheduler, noise, codes, nulls, w, steps, guidance_interval=(lo, hi))
    reference = DDIMScheduler.from_config(make_scheduler(config).config)
    reference.set_timesteps(steps)
    x = noise.clone()
    for t, sigma in zip(reference.timesteps, sigmas):
        eps = model(x, t, codes)
        if lo < sigma <= hi:
            eps = model(x, t, nulls) + w * (eps - model(x, t, nulls))
        x = reference.step(eps, t, x, eta=0.0).prev_sample
    torch.testing.assert_close(got, x)
    # an interval that holds every step is guidance everywhere; one that holds none is the conditional model
    torch.testing.assert_close(ddim_sample(model, scheduler, noise, codes, nulls, w, steps, (0.0, 1e9)),
                               ddim_sample(model, scheduler, noise, codes, nulls, w, steps))
    torch.testing.assert_close(ddim_sample(model, scheduler, noise, codes, nulls, w, steps, (1e8, 1e9)),
                               ddim_sample(model, scheduler, noise, codes, nulls, 1.0, steps))
    with pytest.raises(ConfigError, match="guidance_interval must be"):
        ddim_sample(model, scheduler, noise, codes, nulls, w, steps, (2.0, 1.0))
    with pytest.raises(ConfigError, match="guidance_interval must be"):
        GeneratorConfig(guidance_interval=(-1.0, 2.0)).validate()
    # a sampling setting: it does not change which generator is trained
    assert GeneratorConfig(guidance_interval=(0.5, 5.0)).identity_record() == GeneratorConfig().identity_record()


def test_latent_scheduler_does_not_clip_but_pixel_scheduler_does():
    assert make_scheduler(tiny_config(architecture="latent_mlp").resolved()).config.clip_sample is False
    assert make_scheduler(tiny_config(architecture="pixel_unet").resolved()).config.clip_sample is True


def test_extra_attribute_is_a_condition_and_unknown_values_are_refused():
    ds = toy_with_attribute()
    generator = train_generator(ds, config=tiny_config(), data_md5="x", progress=False)
    assert generator.space.names == ("class_name", "tone")
    assert generator.space.values[1] == ("dark", "light")
    images = generator.sample(pd.DataFrame({"class_name": ["a", "b"], "tone": ["dark", "light"]}), seed=0)
    assert images.shape == (2, 8, 8, 1)
    with pytest.raises(ValueError, match="unknown condition tone=\\['medium'\\]"):
        generator.sample(pd.DataFrame({"class_name": ["a"], "tone": ["medium"]}), seed=0)
    with pytest.raises(ValueError, match="lack the columns \\['tone'\\]"):
        generator.sample(conditions("a"), seed=0)


def test_draw_conditions_follows_the_attribute_mix_of_each_class():
    ds = toy_with_attribute()
    manifest = ds.split("train").manifest
    space = ConditionSpace.from_dataset(ds.class_names, manifest, ["tone"])
    table = draw_conditions(space, manifest, {"a": 4000, "c": 10}, seed=0)
    assert table["class_name"].value_counts().to_dict() == {"a": 4000, "c": 10}
    share = (table[table.class_name == "a"].tone == "light").mean()
    expected = (manifest[manifest.class_name == "a"].tone == "light").mean()
    assert abs(share - expected) < 0.03
    with pytest.raises(ValueError, match="unknown condition class_name"):
        draw_conditions(space, manifest, {"q": 1}, seed=0)


def test_generator_learns_the_classes_of_the_toy_data():
    """A small latent generator trained for a few seconds puts each class's bright square in its quadrant."""
    ds = make_toy_dataset(per_class_train=(48, 48, 48, 48))
    config = tiny_config(latent_dim=8, autoencoder_epochs=60, denoiser_width=64, embedding_dim=32,
                         num_train_timesteps=100, train_steps=600, batch_size=64, ema_decay=0.99, sampling_steps=10,
                         learning_rate=3e-3, guidance_scale=2.0)
    generator = train_generator(ds, config=config, progress=False)
    table = conditions(*np.repeat(["a", "b", "c", "d"], 25))
    images = generator.sample(table, seed=0).astype(np.float64)[..., 0]
    # independent check: the brightest quadrant (the toy data's class pattern) of each generated image
    quadrants = np.stack([images[:, :4, :4].mean((1, 2)), images[:, :4, 4:].mean((1, 2)),
                          images[:, 4:, :4].mean((1, 2)), images[:, 4:, 4:].mean((1, 2))], axis=1)
    accuracy = np.mean(quadrants.argmax(axis=1) == np.repeat(np.arange(4), 25))
    assert accuracy >= 0.9, accuracy


def test_generator_trains_on_real_train_images_only():
    ds = make_toy_dataset()
    train = ds.split("train")
    fake = train.select(np.arange(len(train)) < 3)
    fake.manifest["id"] = [f"syn-{i}" for i in range(3)]
    fake.manifest["origin"] = "synthetic"
    with pytest.warns(UserWarning, match="learns from the real ones only"):
        generator = train_generator(ds.concat(fake), config=tiny_config(train_steps=2), progress=False)
    assert generator.training_summary["train_images"] == len(train)


def test_the_perceptual_network_is_a_frozen_trunk_of_feature_maps():
    from fairforget.components.generator.autoencoder import fit_perceptual_network

    toy = make_toy_dataset()
    train = toy.split("train")
    trunk = fit_perceptual_network(train.images, train.labels, toy.num_classes, epochs=1, seed=0)
    features = trunk(torch.from_numpy(train.to_float_tensor_array()[:5]))
    assert features.shape == (5, 64, 4, 4) and not trunk.training
    assert not any(p.requires_grad for p in trunk.parameters())


def test_the_autoencoder_loss_adds_the_weighted_feature_matching_term():
    import copy

    import torch.nn.functional as F

    from fairforget.components.generator.autoencoder import ConvAutoencoder, fit_autoencoder

    images = make_toy_dataset().split("train").to_float_tensor_array()[:32]
    torch.manual_seed(0)
    model = ConvAutoencoder((8, 8, 1), 4, (4, 8))
    fit_autoencoder(model, images, epochs=30, batch_size=8, learning_rate=1e-2, seed=0, progress=False)
    initial = copy.deepcopy(model)  # trained a little, so that its reconstructions differ from image to image
    features = torch.nn.Conv2d(1, 3, 3).requires_grad_(False)  # any frozen images -> features map
    # learning rate 0: every batch is scored at the initial weights, and the epoch's mean over 4 shuffled batches of
    # 8 is the loss of all 32 images (each target's features, computed once, must follow its image into its batch)
    history = fit_autoencoder(model, images, epochs=1, batch_size=8, learning_rate=0.0, seed=0,
                              progress=False, perceptual=features, perceptual_weight=2.5)
    x = torch.from_numpy(images)
    with torch.no_grad():
        recon = initial(x)
        expected = (F.mse_loss(recon, x) + 0.1 * F.l1_loss(recon, x)
                    + 2.5 * F.mse_loss(features(recon), features(x)))
    assert history[0] == pytest.approx(expected.item(), rel=1e-5)


def test_the_autoencoder_width_is_part_of_the_identity_and_must_be_positive():
    wide, narrow = GeneratorConfig(), GeneratorConfig(autoencoder_channels=(32, 64))
    assert wide.autoencoder_channels == (64, 128)  # the measured default (docs/generator.md, "A wider autoencoder")
    assert wide.identity_record()["autoencoder_channels"] == [64, 128] != narrow.identity_record()["autoencoder_channels"]
    with pytest.raises(ConfigError, match="autoencoder_channels must be a tuple of positive integers"):
        GeneratorConfig(autoencoder_channels=(64, 0)).validate()
    with pytest.raises(ConfigError, match="autoencoder_channels"):
        GeneratorConfig(autoencoder_channels=()).validate()


def test_denoiser_dropout_acts_in_training_only_keeps_the_layout_and_is_seeded(toy):
    from fairforget.components.generator.denoiser import LatentDenoiser

    torch.manual_seed(0)
    plain = LatentDenoiser(8, 32, 2, 16, (4,))
    torch.manual_seed(0)
    dropped = LatentDenoiser(8, 32, 2, 16, (4,), dropout=0.5)
    assert list(plain.state_dict()) == list(dropped.state_dict())  # generators saved before it load as they were
    torch.nn.init.normal_(dropped.output[-1].weight)  # the zero-initialised output would hide the hidden layer
    z, t, c = torch.randn(6, 8), torch.tensor([3, 10, 20, 30, 40, 49]), torch.zeros(6, 1, dtype=torch.long)
    dropped.eval()
    assert torch.equal(dropped(z, t, c), dropped(z, t, c))
    dropped.train()
    assert not torch.equal(dropped(z, t, c), dropped(z, t, c))
    config = tiny_config(denoiser_dropout=0.3)
    first = train_generator(toy, config=config, progress=False)
    torch.rand(7)  # the global random state moves between the two trainings
    second = train_generator(toy, config=config, progress=False)
    np.testing.assert_array_equal(first.sample(conditions("a", "b"), seed=1), second.sample(conditions("a", "b"), seed=1))
    assert GeneratorConfig().identity_record()["denoiser_dropout"] == 0.1  # the default
    assert GeneratorConfig(denoiser_dropout=0.0).identity_record()["denoiser_dropout"] == 0.0
    assert GeneratorConfig(architecture="pixel_unet", denoiser_dropout=0.1).identity_record()["denoiser_dropout"] == 0.1
    with pytest.raises(ConfigError, match="denoiser_dropout must lie in"):
        GeneratorConfig(denoiser_dropout=1.0).validate()


def test_precision_resolves_to_what_the_device_computes_natively_and_dp_stays_fp32(monkeypatch):
    from fairforget.components.generator import config as config_module
    from fairforget.components.generator.config import dp_preset

    for native in (True, False):
        monkeypatch.setattr(config_module, "native_bf16", lambda device, native=native: native)
        assert GeneratorConfig(precision="auto", device="cpu").resolved().precision == ("bf16" if native else "fp32")
        assert dp_preset(precision="auto", device="cpu").resolved().precision == "fp32"
    assert GeneratorConfig(precision="bf16", device="cpu").resolved().precision == "bf16"  # asked for: kept
    # bf16 and fp32 generators are different generators
    assert GeneratorConfig(precision="fp32").identity_record()["precision"] == "fp32"
    assert GeneratorConfig(precision="bf16").identity_record()["precision"] == "bf16"
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16"):
        GeneratorConfig(precision="fp16").validate()
    with pytest.raises(ConfigError, match="privacy=dp trains in fp32"):
        dp_preset(precision="bf16").validate()


@pytest.mark.parametrize("architecture", ["latent_mlp", "pixel_unet"])
def test_bf16_training_is_seeded_keeps_float32_weights_and_learns_like_fp32(toy, architecture):
    """Under bf16 autocast the weights stay float32 (saved and sampled as before), two trainings with one seed are
    identical, and the losses land near fp32's (the arithmetic rounds, it does not break the objective)."""
    runs = [train_generator(toy, config=tiny_config(architecture=architecture, precision=precision), progress=False)
            for precision in ("bf16", "bf16", "fp32")]
    bf16, again, fp32 = runs
    assert bf16.config.precision == "bf16" and bf16.training_summary["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in bf16.denoiser.parameters())
    for a, b in zip(bf16.denoiser.state_dict().values(), again.denoiser.state_dict().values()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(bf16.denoiser.state_dict().values(),
                                                     fp32.denoiser.state_dict().values()))  # autocast did act
    assert bf16.training_summary["denoiser_loss"] == pytest.approx(fp32.training_summary["denoiser_loss"], rel=0.25)
    if architecture == "latent_mlp":
        assert bf16.training_summary["autoencoder_rmse"] == pytest.approx(fp32.training_summary["autoencoder_rmse"],
                                                                          rel=0.25)
    images = bf16.sample(conditions("a", "b"), seed=0)
    assert images.dtype == np.uint8 and images.shape[0] == 2


def test_the_perceptual_loss_changes_the_identity_only_when_on():
    plain = GeneratorConfig(latent_dim=32, autoencoder_perceptual_weight=0.0).identity_record()
    sharp = GeneratorConfig().identity_record()
    assert plain["autoencoder_perceptual_weight"] == 0.0 and plain != sharp
    assert sharp["autoencoder_perceptual_weight"] == 1.0 and sharp["autoencoder_perceptual_epochs"] == 10
    assert sharp["latent_dim"] == 64


def test_the_dp_preset_is_its_own_measured_recipe_and_a_command_line_can_change_it():
    """The DP generator's recipe was measured on its own (docs/generator.md): latent 32, 24 feature-matching
    autoencoder epochs on the public split, DP-SGD at learning rate 5e-4. It is a preset (``dp_preset``), not
    mirrored fields: an override changes what is trained (it was silently ignored while the recipe was mirrored),
    and a generator of another DP recipe is another generator."""
    from fairforget.components.generator.config import dp_preset, recipe

    dp = dp_preset()
    assert (dp.latent_dim, dp.autoencoder_epochs, dp.autoencoder_perceptual_weight, dp.learning_rate) == (32, 24, 1.0,
                                                                                                           5e-4)
    assert (dp.privacy, dp.autoencoder_data, dp.public_pretrain_steps) == ("dp", "public", 4000)
    assert recipe("dp", latent_dim=16).latent_dim == 16 and recipe("none") == GeneratorConfig()
    assert dp_preset(autoencoder_channels=(16, 16)).identity_record() != dp.identity_record()
    former = dp_preset(autoencoder_epochs=12, autoencoder_perceptual_weight=0.0, learning_rate=2e-3)
    assert former.identity_record() != dp.identity_record()
    assert dp.identity_record()["dp_epsilon"] == 10.0 and "dp_epsilon" not in GeneratorConfig().identity_record()
    with pytest.raises(ConfigError, match="start from dp_preset"):
        GeneratorConfig(privacy="dp").validate()
    with pytest.raises(ConfigError, match="autoencoder_perceptual_weight must be >= 0"):
        GeneratorConfig(autoencoder_perceptual_weight=-1.0).validate()


def test_the_identity_is_every_field_that_decides_the_weights_and_a_schema_version():
    """Declared per field (``param(identity=...)``): sampling and runtime fields stay out, fields of the other
    architecture stay out, privacy parameters count for a DP generator only; the schema version is in it."""
    from dataclasses import fields

    from fairforget.components.generator.config import IDENTITY_SCHEMA

    record = GeneratorConfig(device="cpu").identity_record()
    assert record["identity_schema"] == IDENTITY_SCHEMA
    for f in fields(GeneratorConfig):
        expected = (f.metadata["identity"] and f.metadata["architecture"] in (None, "latent_mlp")
                    and not f.metadata["private_only"])
        assert (f.name in record) is expected, f.name
    for name in ("guidance_scale", "sampling_steps", "num_threads", "device", "unet_channels"):
        assert name not in record
    assert "latent_dim" not in GeneratorConfig(architecture="pixel_unet", device="cpu").identity_record()


def test_a_saved_config_of_the_first_schema_loads_as_what_it_was_trained():
    """Before the DP recipe became a preset, a DP generator's config held mirrored ``dp_<name>`` fields (what was
    trained) beside plain ones (unused): the upgrade puts the mirrored values in place."""
    plain = {k: v for k, v in GeneratorConfig().to_dict().items()}
    schema_1 = {**plain, "privacy": "dp", "latent_dim": 64, "dp_latent_dim": 32, "dp_train_steps": 1200,
                "dp_public_pretrain_steps": 4000, "public_pretrain_steps": 0, "dp_autoencoder_channels": [32, 64]}
    loaded = GeneratorConfig.from_saved(schema_1)
    assert (loaded.latent_dim, loaded.train_steps, loaded.public_pretrain_steps) == (32, 1200, 4000)
    assert loaded.autoencoder_channels == (32, 64) and loaded.autoencoder_data == "public"
    assert GeneratorConfig.from_saved(GeneratorConfig().to_dict()) == GeneratorConfig()


def test_a_generator_saved_before_the_feature_matching_option_loads_as_what_it_was_trained(tmp_path):
    """Its saved config has no autoencoder_perceptual_weight: it was trained with pixel loss, whatever today's
    default. (Its identity is of the first schema: the pipeline trains a new one rather than reuse it.)"""
    import json

    from fairforget.components.generator import load_generator

    dataset = make_toy_dataset()
    generator = train_generator(dataset, config=tiny_config(autoencoder_perceptual_weight=0.0,
                                                            prediction_type="epsilon", loss_weighting="uniform",
                                                            denoiser_dropout=0.0),
                                progress=False)
    folder = generator.save(tmp_path / "generator")
    meta = json.loads((folder / "generator.json").read_text())
    for key in ("autoencoder_perceptual_weight", "autoencoder_perceptual_epochs", "public_pretrain_steps",
                "autoencoder_data", "prediction_type", "loss_weighting", "min_snr_gamma", "denoiser_dropout",
                "precision", "guidance_interval"):
        meta["config"].pop(key)
    (folder / "generator.json").write_text(json.dumps(meta))
    loaded = load_generator(folder, device="cpu")
    assert GeneratorConfig().autoencoder_perceptual_weight > 0  # the default it must not take
    assert loaded.config.autoencoder_perceptual_weight == 0.0
    assert loaded.config.public_pretrain_steps == 0 and loaded.config.autoencoder_data == "private"
    assert (loaded.config.prediction_type, loaded.config.loss_weighting) == ("epsilon", "uniform")
    assert GeneratorConfig().denoiser_dropout > 0 and loaded.config.denoiser_dropout == 0.0
    assert loaded.config.precision == "fp32" and loaded.config.guidance_interval == (0.0, float("inf"))
    assert loaded.version == generator.version  # the name it was saved under


@pytest.mark.parametrize("architecture", ["latent_mlp", "pixel_unet"])
def test_public_pre_training_learns_from_the_reference_split_then_from_s(architecture, monkeypatch):
    """public_pretrain_steps: the denoiser's first fit sees the reference split's images (as latents of the
    autoencoder fitted on S, or as pixels) for that many steps, the second sees S for train_steps; 0 = S only."""
    from fairforget.components.generator import generator_version
    from fairforget.components.generator import train as train_module

    dataset = make_toy_dataset()
    fits = []
    real = train_module.fit_denoiser

    def recording_fit(denoiser, data, codes, space, config, progress):
        fits.append((len(data), config.train_steps))
        return real(denoiser, data, codes, space, config, progress)

    monkeypatch.setattr(train_module, "fit_denoiser", recording_fit)
    config = tiny_config(architecture=architecture, public_pretrain_steps=7)
    generator = train_generator(dataset, config=config, progress=False)
    reference, train = len(dataset.split("reference")), len(dataset.split("train"))
    assert fits == [(reference, 7), (train, config.train_steps)]
    assert generator.training_summary["public_pretrain_steps"] == 7
    fits.clear()
    plain = train_generator(dataset, config=tiny_config(architecture=architecture), progress=False)
    assert fits == [(train, config.train_steps)] and "public_pretrain_steps" not in plain.training_summary
    # another thing trained, another version
    assert generator.version != plain.version
    assert tiny_config(architecture=architecture).identity_record()["public_pretrain_steps"] == 0
    assert generator_version(plain.config, plain.data_md5, plain.space) == plain.version


def test_a_public_autoencoder_learns_from_the_reference_split_and_the_denoiser_from_s(monkeypatch):
    """autoencoder_data="public": the autoencoder and its feature network see only the reference split (as in the DP
    recipe), the denoiser S's latents; "private" (the default) lets the autoencoder learn S."""
    from fairforget.components.generator import train as train_module

    dataset = make_toy_dataset()
    seen = {}
    real_autoencoder, real_denoiser = train_module.fit_autoencoder, train_module.fit_denoiser

    def recording_autoencoder(model, images, *args, **kwargs):
        seen["autoencoder"] = len(images)
        return real_autoencoder(model, images, *args, **kwargs)

    def recording_denoiser(denoiser, data, *args, **kwargs):
        seen["denoiser"] = len(data)
        return real_denoiser(denoiser, data, *args, **kwargs)

    monkeypatch.setattr(train_module, "fit_autoencoder", recording_autoencoder)
    monkeypatch.setattr(train_module, "fit_denoiser", recording_denoiser)
    generator = train_generator(dataset, config=tiny_config(autoencoder_data="public"), progress=False)
    reference, train = len(dataset.split("reference")), len(dataset.split("train"))
    assert seen == {"autoencoder": reference, "denoiser": train}
    assert generator.training_summary["autoencoder_images"] == reference
    assert generator.sample(conditions("a", "b"), seed=0).shape == (2, 8, 8, 1)
    assert tiny_config().identity_record()["autoencoder_data"] == "private"
    assert tiny_config(autoencoder_data="public").identity_record()["autoencoder_data"] == "public"
    without = dataset.select(dataset.manifest["split"].to_numpy() != "reference")
    with pytest.raises(ConfigError, match="reference split"):
        train_generator(without, config=tiny_config(autoencoder_data="public"), progress=False)
    with pytest.raises(ConfigError, match="autoencoder_data must be one of private, public"):
        GeneratorConfig(autoencoder_data="shared").validate()


def test_public_pre_training_needs_a_reference_split():
    dataset = make_toy_dataset()
    without = dataset.select(dataset.manifest["split"].to_numpy() != "reference")
    with pytest.raises(ConfigError, match="public_pretrain_steps=0"):
        train_generator(without, config=tiny_config(public_pretrain_steps=5), progress=False)
    with pytest.raises(ConfigError, match="public_pretrain_steps must be a non-negative integer"):
        tiny_config(public_pretrain_steps=-1).validate()


def test_v_prediction_target_and_its_implied_noise_invert_each_other():
    """v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022); the noise it implies for x_t is eps again."""
    from fairforget.components.generator.model import predicted_noise, prediction_target

    rng = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, 4, 4, generator=rng), torch.randn(5, 3, 4, 4, generator=rng)
    a = torch.tensor([0.999, 0.9, 0.5, 0.1, 0.001]).view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = prediction_target(x0, eps, a, "v_prediction")
    torch.testing.assert_close(v, a.sqrt() * eps - (1 - a).sqrt() * x0)
    torch.testing.assert_close(predicted_noise(v, x_t, a, "v_prediction"), eps, atol=1e-5, rtol=1e-5)
    assert prediction_target(x0, eps, a, "epsilon") is eps and predicted_noise(eps, x_t, a, "epsilon") is eps
    # and the scheduler the sampler uses reads the same convention
    scheduler = make_scheduler(tiny_config(prediction_type="v_prediction").resolved())
    t = torch.tensor([1, 25, 49])
    alphas = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(scheduler.get_velocity(x0[:3], eps[:3], t),
                               prediction_target(x0[:3], eps[:3], alphas, "v_prediction"))


def test_min_snr_weights_every_timestep_by_its_clipped_snr_in_x0_units():
    """Min-SNR-gamma (Hang et al. 2023): the weighted loss equals min(SNR, gamma) times the squared x0 error, for
    epsilon and v prediction alike, recomputed here from a denoiser that is off by a known x0 error."""
    from fairforget.components.generator.train import loss_weight

    a = torch.tensor([0.9999, 0.99, 0.8, 0.3, 0.01])
    snr = a / (1 - a)
    for prediction_type in ("epsilon", "v_prediction"):
        config = GeneratorConfig(prediction_type=prediction_type, loss_weighting="min_snr", min_snr_gamma=5.0)
        # an x0 estimate off by d gives an epsilon error of sqrt(SNR) d and a v error of sqrt(SNR + 1) d
        d = 0.3
        error = (snr.sqrt() * d) ** 2 if prediction_type == "epsilon" else ((snr + 1).sqrt() * d) ** 2
        torch.testing.assert_close(loss_weight(a, config) * error, torch.minimum(snr, torch.tensor(5.0)) * d ** 2)
    assert torch.equal(loss_weight(a, GeneratorConfig(loss_weighting="uniform")), torch.ones(5))
    with pytest.raises(ConfigError, match="min_snr_gamma"):
        GeneratorConfig(loss_weighting="min_snr", min_snr_gamma=0.0).validate()
    with pytest.raises(ConfigError, match="prediction_type"):
        GeneratorConfig(prediction_type="x0").validate()


def test_a_v_prediction_min_snr_generator_trains_samples_and_is_audited_in_noise_units(toy):
    """The options change the identity; such a generator samples finite images, and the audit's
    denoising error is the squared error of the noise its output implies."""
    from fairforget.components.generator.audit import denoising_errors

    from fairforget.components.generator.config import dp_preset

    former = GeneratorConfig(prediction_type="epsilon", loss_weighting="uniform").identity_record()
    assert former != GeneratorConfig().identity_record()
    assert GeneratorConfig().identity_record()["prediction_type"] == "v_prediction"
    # the DP recipe keeps the objective it was measured with, whatever the non-private default
    assert (dp_preset().prediction_type, dp_preset().loss_weighting) == ("epsilon", "uniform")
    config = tiny_config(prediction_type="v_prediction", loss_weighting="min_snr")
    generator = train_generator(toy, config=config, data_md5="md5-toy", progress=False)
    plain = tiny_config(prediction_type="epsilon", loss_weighting="uniform")
    assert generator.version != train_generator(toy, config=plain, data_md5="md5-toy", progress=False).version
    images = generator.sample(conditions("a", "b", "c"), seed=0)
    assert images.shape[0] == 3 and images.dtype == np.uint8
    train = toy.split("train").select(np.arange(len(toy.split("train"))) < 4)
    errors = denoising_errors(generator, train, timesteps=(20,), noise_draws=1, seed=3)
    # recompute record 0's error by hand: the same seeded noise, the denoiser's v turned into noise
    z = generator.to_model_space(train.to_float_tensor_array())
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(3))
    a = make_scheduler(generator.config).alphas_cumprod[20]
    x_t = a.sqrt() * z + (1 - a).sqrt() * noise
    codes = torch.from_numpy(generator.space.encode(conditions(*[toy.class_names[i] for i in train.labels])))
    with torch.no_grad():
        v = generator.denoiser(x_t, torch.full((len(z),), 20), codes)
    expected = ((a.sqrt() * v + (1 - a).sqrt() * x_t) - noise).pow(2).flatten(1).mean(1).double().numpy()
    np.testing.assert_allclose(errors[:, 0], expected, rtol=1e-4)


def test_the_generator_audit_leaves_out_audit_images_the_generator_trained_on(monkeypatch):
    """Canaries that trained the generator come from the audit split: those images are no non-members of it."""
    from fairforget.components.generator import audit as generator_audit

    data = make_toy_dataset(per_class_other=40)
    seen = list(data.split("audit").ids[:12])
    captured = {}
    monkeypatch.setattr(generator_audit, "audit_generator",
                        lambda generator, members, non_members, config: captured.setdefault("non", non_members))
    generator_audit.audit_generator_on_splits(None, data, seen_images=seen)
    assert len(captured["non"]) > 0 and not set(seen) & set(captured["non"].ids)
