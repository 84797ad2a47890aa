"""Configuration of the guided diffusion generator: one dataclass, defaults written once.

Two architectures, picked by ``architecture`` (``auto`` resolves to ``pixel_unet`` when CUDA is available, else
``latent_mlp``):

- ``latent_mlp`` (the CPU design): a small convolutional autoencoder maps each image to a ``latent_dim`` vector;
  a residual MLP denoiser (diffusers ``Timesteps``/``TimestepEmbedding`` time embedding, FiLM-modulated blocks)
  learns the diffusion of the standardised latents. Training and sampling cost a few minutes and a few ms per
  image on two CPU cores.
- ``pixel_unet`` (the GPU design): a diffusers ``UNet2DModel`` on the pixels in [-1, 1], conditioned through
  ``class_embed_type="identity"`` with the same condition embedding.

Both train with the diffusers ``DDPMScheduler`` (v-prediction with Min-SNR weights by default; ``prediction_type``,
``loss_weighting``) and sample with ``DDIMScheduler`` and
classifier-free guidance: the condition is replaced by the null condition with probability
``condition_dropout`` in training, and at sampling ``eps = eps_null + w * (eps_cond - eps_null)``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterator

from fairforget.components.config import ConfigBase
from fairforget.errors import ConfigError

ARCHITECTURES = ("auto", "latent_mlp", "pixel_unet")
PRIVACY_MODES = ("none", "dp")
AUTOENCODER_DATA = ("private", "public")
PREDICTION_TYPES = ("epsilon", "v_prediction")
LOSS_WEIGHTINGS = ("uniform", "min_snr")
PRECISIONS = ("auto", "fp32", "bf16")
GROUPS = ("architecture", "autoencoder", "denoiser", "diffusion", "sampling", "runtime", "privacy")
# Version of the identity record (``GeneratorConfig.identity_record``): raised when the meaning of a field changes,
# so a cached generator trained under another meaning is never reused. 2: the DP recipe became a preset. (A new
# field needs no new version: it joins the record of the generators it applies to.)
IDENTITY_SCHEMA = 2


def param(default: Any, help: str, *, group: str, identity: bool = True, architecture: str | None = None,
          choices: tuple[str, ...] | None = None, private_only: bool = False):
    """A ``GeneratorConfig`` field with its one declaration: default, help text (one line: what and why), the
    ``group`` it belongs to (``GROUPS``), whether it decides what is trained (``identity``; sampling and runtime
    fields do not), the ``architecture`` it applies to (None: both), its ``choices`` and whether it matters only
    for a DP generator (``private_only``). Command lines and the identity hash are built from these."""
    assert group in GROUPS, group
    return field(default=default, metadata={"help": help, "group": group, "identity": identity,
                                            "architecture": architecture, "choices": choices,
                                            "private_only": private_only})


@dataclass(frozen=True)
class GeneratorConfig(ConfigBase):
    """Every knob of the generator, each declared once (``param``): its default, help text, group and role in the
    identity hash. ``dp_preset()`` is the DP recipe; ``resolved()`` fixes ``architecture``, ``device`` and
    ``precision`` for this machine. Why each default was chosen, with its measurements:
    docs/experiments/2026-12-06-generator-lab-log.md."""

    architecture: str = param("auto", "latent_mlp (CPU design), pixel_unet (GPU design), or auto: pixel_unet where "
                              "CUDA is available", group="architecture", choices=ARCHITECTURES)
    # the autoencoder of the latent design
    latent_dim: int = param(64, "size of the latent vector the autoencoder maps each image to", group="autoencoder",
                            architecture="latent_mlp")
    autoencoder_channels: tuple[int, ...] = param(
        (64, 128), "channels of the autoencoder at full and half resolution (wider: sharper samples, slower)",
        group="autoencoder", architecture="latent_mlp")
    autoencoder_epochs: int = param(60, "epochs of the autoencoder", group="autoencoder", architecture="latent_mlp")
    autoencoder_batch_size: int = param(128, "batch size of the autoencoder", group="autoencoder",
                                        architecture="latent_mlp")
    autoencoder_learning_rate: float = param(2e-3, "learning rate of the autoencoder", group="autoencoder",
                                             architecture="latent_mlp")
    autoencoder_perceptual_weight: float = param(
        1.0, "weight of the autoencoder's feature-matching loss (0: pixel loss only, faster and blurrier)",
        group="autoencoder", architecture="latent_mlp")
    autoencoder_perceptual_epochs: int = param(
        10, "epochs of the small_cnn whose features the feature-matching loss compares", group="autoencoder",
        architecture="latent_mlp")
    autoencoder_data: str = param(
        "private", "what the autoencoder learns from: private (S) or public (the reference split only, so that "
        "only the denoiser holds anything of S)", group="autoencoder", architecture="latent_mlp",
        choices=AUTOENCODER_DATA)
    # the denoiser
    denoiser_width: int = param(512, "hidden width of the latent MLP denoiser", group="denoiser",
                                architecture="latent_mlp")
    denoiser_depth: int = param(4, "residual blocks of the latent MLP denoiser", group="denoiser",
                                architecture="latent_mlp")
    denoiser_dropout: float = param(0.1, "dropout in the denoiser's blocks while training (a regulariser against "
                                    "memorising S; 0: none)", group="denoiser")
    embedding_dim: int = param(256, "size of the time and condition embeddings", group="denoiser")
    unet_channels: tuple[int, ...] = param((64, 128, 256), "channels of the pixel UNet per resolution",
                                           group="denoiser", architecture="pixel_unet")
    unet_layers_per_block: int = param(2, "resnet layers per UNet block", group="denoiser", architecture="pixel_unet")
    unet_norm_groups: int = param(32, "group-norm groups of the UNet (divides every channel count)",
                                  group="denoiser", architecture="pixel_unet")
    unet_attention: bool = param(True, "attention blocks at the UNet's lowest resolution", group="denoiser",
                                 architecture="pixel_unet")
    # diffusion training
    num_train_timesteps: int = param(1000, "timesteps of the DDPM noise schedule", group="diffusion")
    beta_schedule: str = param("squaredcos_cap_v2", "diffusers beta schedule", group="diffusion")
    train_steps: int = param(4000, "optimiser steps of the denoiser on S", group="diffusion")
    batch_size: int = param(256, "batch size of the denoiser (DP: the expected Poisson batch)", group="diffusion")
    learning_rate: float = param(1e-3, "peak learning rate of the denoiser", group="diffusion")
    warmup_steps: int = param(200, "linear warm-up steps of the learning rate", group="diffusion")
    public_pretrain_steps: int = param(
        0, "steps of pre-training of the denoiser on the public reference split before S (0: S only)",
        group="diffusion")
    prediction_type: str = param("v_prediction", "what the denoiser predicts: v_prediction or epsilon (the noise)",
                                 group="diffusion", choices=PREDICTION_TYPES)
    loss_weighting: str = param("min_snr", "per-timestep loss weight: min_snr (Hang et al. 2023) or uniform",
                                group="diffusion", choices=LOSS_WEIGHTINGS)
    min_snr_gamma: float = param(5.0, "gamma of the min_snr weighting", group="diffusion")
    ema_decay: float = param(0.999, "decay of the EMA of the denoiser's weights (the EMA is what samples)",
                             group="diffusion")
    condition_dropout: float = param(0.1, "probability of the null condition while training (classifier-free "
                                     "guidance)", group="diffusion")
    seed: int = param(0, "seed of every random draw of training", group="diffusion")
    # sampling
    sampling_steps: int = param(30, "DDIM sampling steps", group="sampling", identity=False)
    guidance_scale: float = param(3.0, "classifier-free guidance weight w (0: unguided)", group="sampling",
                                  identity=False)
    guidance_interval: tuple[float, float] = param(
        (0.0, 4.5), "guide only the sampling steps whose noise level sigma lies in (lo, hi] (0,inf: every step; "
        "Kynkaanniemi et al. 2024)", group="sampling", identity=False)
    sample_batch_size: int = param(1000, "images generated per forward pass", group="sampling", identity=False)
    # runtime
    device: str = param("auto", "auto, cpu or cuda[:N]", group="runtime", identity=False)
    precision: str = param("auto", "arithmetic of training: fp32, bf16 (autocast), or auto: bf16 where the device "
                           "computes it natively", group="runtime", choices=PRECISIONS)
    num_threads: int = param(0, "torch threads while training and sampling (0: every core; 1 on a machine shared "
                             "with other jobs)", group="runtime", identity=False)
    # privacy
    privacy: str = param("none", "none, or dp: the denoiser trained with DP-SGD (opacus) on S, the autoencoder on "
                         "public data (start from dp_preset())", group="privacy", choices=PRIVACY_MODES)
    dp_epsilon: float = param(10.0, "target epsilon of the DP generator (smaller is more private)", group="privacy",
                              private_only=True)
    dp_delta: float | None = param(1e-5, "delta of the DP generator, well below 1/|S| (None: 1/(10|S|), at most "
                                   "1e-5)", group="privacy", private_only=True)
    dp_max_grad_norm: float = param(1.0, "per-record gradient clipping norm of DP-SGD", group="privacy",
                                    private_only=True)
    public_labels: bool = param(
        True, "a DP generator uses the public split's labels (its denoiser's class-conditional pre-training and its "
        "autoencoder's feature network): the labelled-public variant; false (the DP recipe): the public images "
        "alone, the classes learned from S under DP", group="privacy", private_only=True)
    pseudo_label_epsilon: float = param(
        0.0, "with public_labels=false: the epsilon of S's DP class centroids that label the public images for the "
        "denoiser's pre-training (0: unconditional pre-training); composed with the DP-SGD so that both together "
        "meet dp_epsilon (the DP recipe: a fifth of dp_epsilon)", group="privacy", private_only=True)

    def validate(self) -> None:
        """Raise ``ConfigError`` with a one-line fix for any out-of-range value."""
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                if f.name in ("architecture", "privacy"):
                    raise ConfigError(f"unknown generator {f.name} {getattr(self, f.name)!r}; known: "
                                      f"{', '.join(choices)}")
                raise ConfigError(f"generator {f.name} must be one of {', '.join(choices)}, got "
                                  f"{getattr(self, f.name)!r}")
        if not (math.isfinite(self.autoencoder_perceptual_weight) and self.autoencoder_perceptual_weight >= 0):
            raise ConfigError(f"autoencoder_perceptual_weight must be >= 0 (0 = no feature-matching loss), got "
                              f"{self.autoencoder_perceptual_weight}")
        for name in ("latent_dim", "autoencoder_epochs", "autoencoder_perceptual_epochs", "autoencoder_batch_size",
                     "denoiser_width", "denoiser_depth", "embedding_dim", "num_train_timesteps", "train_steps",
                     "batch_size", "warmup_steps", "sampling_steps", "sample_batch_size", "unet_layers_per_block",
                     "unet_norm_groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "warmup_steps" else 1):
                raise ConfigError(f"generator {name} must be a positive integer, got {value!r}")
        if self.sampling_steps > self.num_train_timesteps:
            raise ConfigError(f"sampling_steps ({self.sampling_steps}) cannot exceed num_train_timesteps "
                              f"({self.num_train_timesteps})")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ConfigError(f"condition_dropout must lie in [0, 1), got {self.condition_dropout}: "
                              "classifier-free guidance needs some dropout (0.1 is usual)")
        if self.guidance_scale < 0:
            raise ConfigError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        interval = self.guidance_interval
        if not (isinstance(interval, tuple) and len(interval) == 2 and 0 <= interval[0] < interval[1]):
            raise ConfigError(f"guidance_interval must be (lo, hi) with 0 <= lo < hi, the noise levels of the guided "
                              f"sampling steps ((0, inf): every step), got {interval!r}")
        if not 0.0 <= self.denoiser_dropout < 1.0:
            raise ConfigError(f"denoiser_dropout must lie in [0, 1) (0 = none; 0.1 is usual), got "
                              f"{self.denoiser_dropout}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if any(c % self.unet_norm_groups for c in self.unet_channels):
            raise ConfigError(f"every unet_channels value {self.unet_channels} must be a multiple of "
                              f"unet_norm_groups={self.unet_norm_groups}")
        if not isinstance(self.num_threads, int) or self.num_threads < 0:
            raise ConfigError(f"num_threads must be a non-negative integer (0 = torch's default), got "
                              f"{self.num_threads!r}")
        channels = self.autoencoder_channels
        if not (isinstance(channels, tuple) and len(channels) >= 1 and all(isinstance(c, int) and c >= 1
                                                                           for c in channels)):
            raise ConfigError(f"autoencoder_channels must be a tuple of positive integers, e.g. (64, 128), got "
                              f"{channels!r}")
        if not (math.isfinite(self.min_snr_gamma) and self.min_snr_gamma > 0):
            raise ConfigError(f"min_snr_gamma must be a positive number (5 is usual), got {self.min_snr_gamma}")
        if not isinstance(self.public_pretrain_steps, int) or self.public_pretrain_steps < 0:
            raise ConfigError(f"public_pretrain_steps must be a non-negative integer (0 = no public pre-training), "
                              f"got {self.public_pretrain_steps!r}")
        if not (isinstance(self.dp_epsilon, (int, float)) and math.isfinite(self.dp_epsilon) and self.dp_epsilon > 0):
            raise ConfigError(f"dp_epsilon must be a positive number, got {self.dp_epsilon!r}: it is the privacy "
                              "budget (smaller is more private; 1 to 10 is usual)")
        if self.dp_delta is not None and not 0.0 < self.dp_delta < 1.0:
            raise ConfigError(f"dp_delta must lie in (0, 1), got {self.dp_delta}: use well below 1/|S| (default 1e-5)")
        if not self.dp_max_grad_norm > 0:
            raise ConfigError(f"dp_max_grad_norm must be positive, got {self.dp_max_grad_norm}")
        if not (math.isfinite(self.pseudo_label_epsilon) and 0 <= self.pseudo_label_epsilon < self.dp_epsilon):
            raise ConfigError(f"pseudo_label_epsilon must lie in [0, dp_epsilon={self.dp_epsilon}), got "
                              f"{self.pseudo_label_epsilon}: it is the labeller's part of the budget (0: none)")
        if self.privacy == "dp" and self.architecture == "pixel_unet":
            raise ConfigError("privacy=dp needs architecture=latent_mlp (a DP-SGD pixel UNet is out of the CPU budget "
                              "and untested): pass architecture=latent_mlp")
        if self.privacy == "dp" and self.autoencoder_data != "public":
            raise ConfigError("privacy=dp needs autoencoder_data=public (the autoencoder is trained without DP, so it "
                              "may learn public images only): start from dp_preset()")
        if self.privacy == "dp" and self.precision == "bf16":
            raise ConfigError("privacy=dp trains in fp32 (opacus' per-record clipping is not tested under bf16 "
                              "autocast): pass precision=auto or fp32")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")

    def resolved(self) -> "GeneratorConfig":
        """The config with ``architecture``, ``device`` and ``precision`` fixed for this machine (validated)."""
        import torch

        self.validate()
        cuda = torch.cuda.is_available()
        device = self.device if self.device != "auto" else ("cuda" if cuda else "cpu")
        architecture = self.architecture
        if architecture == "auto" and self.privacy == "dp":
            architecture = "latent_mlp"
        if architecture == "auto":
            architecture = "pixel_unet" if device.startswith("cuda") else "latent_mlp"
        precision = self.precision
        if precision == "auto":
            precision = "bf16" if self.privacy != "dp" and native_bf16(device) else "fp32"
        return replace(self, architecture=architecture, device=device, precision=precision)

    @classmethod
    def from_saved(cls, record: dict[str, Any]) -> "GeneratorConfig":
        """The config a saved generator was trained with (``from_dict``); a record of the first schema (one that
        lacks a field of today's or holds a ``dp_<name>`` mirror) upgraded by ``upgrade_schema_1``."""
        current = {f.name for f in fields(cls)}
        return cls.from_dict(record if set(record) == current else upgrade_schema_1(record))

    def identity_record(self) -> dict[str, Any]:
        """What decides the trained weights, hashed to decide whether a cached generator can be reused: the schema
        version and every ``identity`` field of the resolved config that applies to its architecture (and, for a
        DP generator only, its privacy parameters)."""
        resolved = self.resolved()
        values = resolved.to_dict()
        record = {"identity_schema": IDENTITY_SCHEMA}
        for f in fields(resolved):
            meta = f.metadata
            if not meta["identity"] or meta["architecture"] not in (None, resolved.architecture):
                continue
            if meta["private_only"] and resolved.privacy != "dp":
                continue
            record[f.name] = values[f.name]
        return record


# The DP recipe: DP-SGD wants large batches (the noise is per step) and a smaller denoiser (the noise is per
# parameter); the autoencoder learns the public reference split only, which is larger than S; the denoiser is
# pre-trained there (plain batch size and learning rate) before DP-SGD fine-tunes it on S (Ghalebikesabi et al.
# 2023). Chosen on the data the docs name (docs/generator.md, "Privacy of the generator"); the sampling guidance on
# the public split alone (``experiments.bench_guidance --public-evaluation``; docs/generator.md, "Guidance of the DP
# recipe").
DP_PRESET: dict[str, Any] = {
    "privacy": "dp", "autoencoder_data": "public", "train_steps": 1200, "batch_size": 1024, "learning_rate": 5e-4,
    "warmup_steps": 50, "denoiser_width": 256, "denoiser_depth": 3, "denoiser_dropout": 0.0, "embedding_dim": 128,
    "latent_dim": 32, "autoencoder_epochs": 24, "autoencoder_perceptual_weight": 1.0, "autoencoder_channels": (32, 64),
    "prediction_type": "epsilon", "loss_weighting": "uniform", "public_pretrain_steps": 4000, "public_labels": False,
    "guidance_scale": 2.0,
}

# The DP recipe's public images come without labels; S's DP class centroids label them (labeller.py), at this share
# of dp_epsilon unless pseudo_label_epsilon is given (2 of the default 10: docs/generator.md, "Public images
# without labels").
LABELLER_BUDGET_SHARE = 0.2


# The privacy mode every command line (and MLproject's generator_privacy) starts from. DP: a classifier trained on
# its samples is (epsilon, delta)-DP with respect to every original the generator saw, forgotten ones included
# (post-processing), and on the default data the DP make run certifies its forgotten originals where the
# non-private one does not (docs/generator.md, "Which default"). ``GeneratorConfig()`` itself is the plain recipe.
DEFAULT_PRIVACY = "dp"


# The DP recipe without S, the control that shows whether S matters: what differs from the recipe. One DP-SGD step
# on S (what the generator draws from its public pre-training alone) and no DP labeller of the public images.
PUBLIC_ONLY: dict[str, Any] = {"train_steps": 1, "pseudo_label_epsilon": 0.0}


def dp_preset(**overrides: Any) -> GeneratorConfig:
    """The DP generator's recipe (``DP_PRESET``) with ``overrides`` on top; without public labels and without a
    ``pseudo_label_epsilon`` of its own, the labeller gets ``LABELLER_BUDGET_SHARE`` of ``dp_epsilon``."""
    return GeneratorConfig(**with_labeller_share({**DP_PRESET, **overrides}, overrides))


def with_labeller_share(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a DP config's fields) with ``pseudo_label_epsilon`` = ``LABELLER_BUDGET_SHARE`` of their
    ``dp_epsilon`` when the public images are unlabelled and ``overrides`` do not set it."""
    if not values.get("public_labels", True) and "pseudo_label_epsilon" not in overrides:
        values["pseudo_label_epsilon"] = LABELLER_BUDGET_SHARE * values.get("dp_epsilon", GeneratorConfig.dp_epsilon)
    return values


def recipe(privacy: str = DEFAULT_PRIVACY, **overrides: Any) -> GeneratorConfig:
    """The default recipe of a ``privacy`` mode ("none": ``GeneratorConfig()``, "dp": ``dp_preset()``; default
    ``DEFAULT_PRIVACY``) with ``overrides`` on top: what a command line builds before its own options."""
    return dp_preset(**overrides) if privacy == "dp" else GeneratorConfig(**{"privacy": privacy, **overrides})


# Generators saved before the DP recipe became a preset carry its mirrored fields ``dp_<name>`` and, for fields added
# after the first saves, no key at all (they were trained with the value each had then).
SCHEMA_1_DP_FIELDS = ("dp_train_steps", "dp_batch_size", "dp_learning_rate", "dp_warmup_steps", "dp_denoiser_width",
                      "dp_denoiser_depth", "dp_denoiser_dropout", "dp_embedding_dim", "dp_latent_dim",
                      "dp_autoencoder_epochs", "dp_autoencoder_perceptual_weight", "dp_autoencoder_channels",
                      "dp_prediction_type", "dp_loss_weighting", "dp_public_pretrain_steps")
SCHEMA_1_ABSENT_MEANT = {"autoencoder_perceptual_weight": 0.0, "public_pretrain_steps": 0,
                         "autoencoder_data": "private", "prediction_type": "epsilon", "loss_weighting": "uniform",
                         "min_snr_gamma": 5.0, "denoiser_dropout": 0.0, "precision": "fp32",
                         "guidance_interval": (0.0, math.inf), "dp_public_pretrain_steps": 0,
                         "public_labels": True}


def upgrade_schema_1(record: dict[str, Any]) -> dict[str, Any]:
    """A saved config of the first schema as today's fields: absent keys take the value they meant then; a DP
    generator's mirrored ``dp_<name>`` values (what it was trained with) replace the plain ones."""
    old = {**SCHEMA_1_ABSENT_MEANT, **record}
    upgraded = {k: v for k, v in old.items() if k not in SCHEMA_1_DP_FIELDS}
    if old.get("privacy") == "dp":
        for name in SCHEMA_1_DP_FIELDS:
            if name in old:
                upgraded[name.removeprefix("dp_")] = old[name]
        upgraded["autoencoder_data"] = "public"
    return upgraded


def native_bf16(device: str) -> bool:
    """Whether ``device`` ("cpu" or "cuda[:N]") computes bfloat16 matrix products natively (a CUDA GPU with bf16;
    a CPU whose oneDNN reports bf16 support: AVX512-BF16 or AMX). Elsewhere bf16 is emulated and slower than fp32."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_autocast(device: str, precision: str):
    """The autocast context of training steps on ``device`` at ``precision``: bfloat16 under "bf16", else a no-op.
    Weights, gradients and optimiser state stay float32."""
    import torch

    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextlib.contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Run the block with ``num_threads`` torch intra-op threads (0: unchanged), restoring the previous value.
    One thread avoids the spin-wait collapse of two OpenMP threads on a CPU shared with other jobs."""
    import torch

    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def tiny_config(**overrides: Any) -> GeneratorConfig:
    """A configuration that trains in seconds on 8x8 test images (tests only)."""
    base = dict(latent_dim=8, autoencoder_channels=(8, 16), autoencoder_epochs=20, denoiser_width=32,
                denoiser_depth=2, embedding_dim=16, unet_channels=(8, 16), unet_layers_per_block=1, unet_norm_groups=4,
                unet_attention=False, num_train_timesteps=50, train_steps=30, batch_size=32, warmup_steps=5,
                ema_decay=0.9, sampling_steps=2, sample_batch_size=64, device="cpu", num_threads=1,
                autoencoder_perceptual_epochs=2, precision="fp32")
    if overrides.get("privacy") == "dp":  # the DP recipe's choices that are not sizes (tiny sizes are kept)
        base.update(autoencoder_data="public", public_pretrain_steps=10, prediction_type="epsilon",
                    loss_weighting="uniform", denoiser_dropout=0.0, public_labels=False)
    base.update(overrides)
    if overrides.get("privacy") == "dp":
        base = with_labeller_share(base, overrides)
    return GeneratorConfig(**base)
