"""Guided diffusion generator (the paper's Section III-B): config, networks, training, sampling."""

from components.generator.config import GeneratorConfig, tiny_config
from components.generator.denoiser import CLASS_VARIABLE, ConditionSpace
from components.generator.model import Generator, load_generator
from components.generator.train import generator_version, train_generator

__all__ = ["CLASS_VARIABLE", "ConditionSpace", "Generator", "GeneratorConfig", "generator_version",
           "load_generator", "tiny_config", "train_generator"]
