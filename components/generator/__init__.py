"""Guided diffusion generator (the paper's Section III-B): config, networks, training, sampling."""

from fairforget.components.generator.config import GeneratorConfig, dp_preset, recipe, tiny_config
from fairforget.components.generator.denoiser import CLASS_VARIABLE, ConditionSpace
from fairforget.components.generator.model import Generator, load_generator
from fairforget.components.generator.train import generator_version, train_generator

__all__ = ["CLASS_VARIABLE", "ConditionSpace", "Generator", "GeneratorConfig", "dp_preset", "generator_version",
           "load_generator", "recipe", "tiny_config", "train_generator"]
