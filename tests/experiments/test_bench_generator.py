"""The generator benchmark's config overrides: typed like the field, unknown fields refused."""

from __future__ import annotations

import pytest

from experiments.bench_generator import config_with_overrides
from fairforget.errors import ConfigError


def test_overrides_are_parsed_as_the_fields_type():
    config = config_with_overrides(["latent_dim=32", "autoencoder_perceptual_weight=0.5"])
    assert config.latent_dim == 32 and isinstance(config.latent_dim, int)
    assert config.autoencoder_perceptual_weight == 0.5 and config.train_steps == 4000
    config = config_with_overrides(["autoencoder_channels=32-64", "unet_attention=false"])
    assert config.autoencoder_channels == (32, 64) and config.unet_attention is False


def test_unknown_fields_and_bad_values_are_refused():
    with pytest.raises(SystemExit, match="unknown GeneratorConfig field 'latent'"):
        config_with_overrides(["latent=64"])
    with pytest.raises(ConfigError, match="autoencoder_perceptual_weight must be >= 0"):
        config_with_overrides(["autoencoder_perceptual_weight=-1"])
    with pytest.raises(SystemExit, match="unet_attention takes true or false"):
        config_with_overrides(["unet_attention=no"])
