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
from dataclasses import dataclass, replace
from typing import Any, Iterator

from fairforget.components.config import ConfigBase
from fairforget.errors import ConfigError

ARCHITECTURES = ("auto", "latent_mlp", "pixel_unet")
PRIVACY_MODES = ("none", "dp")
AUTOENCODER_DATA = ("private", "public")
PREDICTION_TYPES = ("epsilon", "v_prediction")
LOSS_WEIGHTINGS = ("uniform", "min_snr")
PRECISIONS = ("auto", "fp32", "bf16")
# The DP recipe: with privacy="dp", field ``dp_<name>`` replaces field ``<name>`` (``GeneratorConfig.effective``).
DP_RECIPE = ("train_steps", "batch_size", "learning_rate", "warmup_steps", "denoiser_width", "denoiser_depth",
             "embedding_dim", "latent_dim", "autoencoder_epochs", "autoencoder_perceptual_weight", "prediction_type",
             "loss_weighting", "autoencoder_channels", "denoiser_dropout")


# Fields added after generators were first saved, each with the value that generators saved before it existed were
# trained with: a saved config without the key must not take today's default (``GeneratorConfig.from_saved``).
FIELDS_BEFORE_THEY_EXISTED = {"autoencoder_perceptual_weight": 0.0, "dp_autoencoder_perceptual_weight": 0.0,
                              "dp_latent_dim": 32, "dp_public_pretrain_steps": 0, "public_pretrain_steps": 0,
                              "autoencoder_data": "private", "prediction_type": "epsilon",
                              "loss_weighting": "uniform", "min_snr_gamma": 5.0, "dp_prediction_type": "epsilon",
                              "dp_loss_weighting": "uniform",
                              "dp_autoencoder_channels": (32, 64), "denoiser_dropout": 0.0,
                              "dp_denoiser_dropout": 0.0, "precision": "fp32",
                              "guidance_interval": (0.0, math.inf)}


@dataclass(frozen=True)
class GeneratorConfig(ConfigBase):
    """Every knob of the generator. ``resolved()`` fixes ``architecture`` and ``device``."""

    architecture: str = "auto"
    # latent_mlp: autoencoder
    latent_dim: int = 64
    # channels at full and half resolution. (64, 128) rather than (32, 64) sharpens the generator (CAS ratio 0.931 ->
    # 0.945, FID 8.2 -> 7.6) but alone lets the membership audit find 2.5x as many of S's records at 1% FPR; with
    # denoiser_dropout 0.1 it keeps that quality at the narrow generator's leak; the generator trains in 560-702 s on
    # 2 cores against 359 s (docs/generator.md, "A wider autoencoder" and "Dropout in the denoiser")
    autoencoder_channels: tuple[int, ...] = (64, 128)
    # 60: at 30 the autoencoder was under-trained (its reconstructions' FID 16.4 -> 7.7 at 60 epochs; the generator's
    # FID 13.8 -> 10.9, diversity ratio 0.71 -> 0.80, Shirt 0.60 -> 0.83) for about 1 more minute (docs/generator.md)
    autoencoder_epochs: int = 60
    autoencoder_batch_size: int = 128
    autoencoder_learning_rate: float = 2e-3
    # feature-matching (perceptual) loss of the autoencoder: weight (0 = pixels only) and the epochs of the small_cnn
    # whose features it matches (trained on the autoencoder's own images). With latent 64 it took the CAS ratio from
    # 0.79 to 0.92 and FID from 48 to 13 for about 1.5 more minutes of training (docs/generator.md)
    autoencoder_perceptual_weight: float = 1.0
    autoencoder_perceptual_epochs: int = 10
    # what the autoencoder (and its feature network) learn from: "private" = S; "public" = the public reference split
    # only, as in the DP recipe, so that only the denoiser holds anything of S (docs/generator.md)
    autoencoder_data: str = "private"
    # latent_mlp: denoiser
    denoiser_width: int = 512
    denoiser_depth: int = 4
    # dropout on the hidden layer of each denoiser block (latent MLP) or in each resnet block (pixel UNet) while
    # training, the small-data regulariser of Ho et al. 2020 (0.1 on CIFAR-10); 0 = none. 0.1 lowers the audit's TPR
    # at 1% FPR from 0.139 to 0.059 with the wide autoencoder and lifts the CAS ratio (docs/generator.md)
    denoiser_dropout: float = 0.1
    embedding_dim: int = 256
    # pixel_unet
    unet_channels: tuple[int, ...] = (64, 128, 256)
    unet_layers_per_block: int = 2
    unet_norm_groups: int = 32
    unet_attention: bool = True
    # diffusion training
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    train_steps: int = 4000
    batch_size: int = 256
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    # non-private: steps of pre-training of the denoiser on the public reference split's latents (encoded by the
    # autoencoder fitted on S) before its train_steps on S; 0 = S only. Public images carry what S lacks (e.g. the
    # minority classes' variety), at the cost of a generator that no longer learns from S alone (docs/generator.md)
    public_pretrain_steps: int = 0
    # what the denoiser predicts: "epsilon" (the noise) or "v_prediction" (v = sqrt(a) eps - sqrt(1 - a) x0,
    # Salimans & Ho 2022); the DDIM sampler and the generator audit read it from here
    prediction_type: str = "v_prediction"
    # per-timestep weight of the loss: "uniform", or "min_snr" (Hang et al. 2023: min(SNR(t), min_snr_gamma) / SNR(t)
    # for epsilon, / (SNR(t) + 1) for v; the low-noise steps, easy and in conflict with the others, count less).
    # v + min_snr (was epsilon + uniform): FID 11.1 -> 8.2, CAS ratio 0.918 -> 0.931, conditional accuracy
    # 0.959 -> 0.972 at the same training cost (one judge, docs/generator.md)
    loss_weighting: str = "min_snr"
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    condition_dropout: float = 0.1
    # sampling
    sampling_steps: int = 30
    guidance_scale: float = 3.0
    # the noise levels (lo, hi] (sigma = sqrt((1 - a_t) / a_t)) of the sampling steps that are guided; the others
    # use the plain conditional model (Kynkaanniemi et al. 2024: guidance at high noise costs diversity). (0, 4.5]
    # leaves the 3 noisiest of 30 DDIM steps unguided: FID 7.1 -> 4.6 and 7.5 -> 5.3 on two seed-0 generators,
    # conditional accuracy >= 0.95 kept; over three seeds FID 9.7 -> 5.8, CAS ratio 0.941 -> 0.965, and the accuracy
    # drop after every original is replaced 4.7 -> 2.0 points (docs/generator.md, "Guidance in a limited interval").
    # (0, inf): every step, the former default.
    guidance_interval: tuple[float, float] = (0.0, 4.5)
    sample_batch_size: int = 1000
    seed: int = 0
    device: str = "auto"
    # arithmetic of training: "fp32", or "bf16" (torch.autocast: matrix products and convolutions in bfloat16, the
    # weights, optimiser and losses in float32); "auto" = bf16 where the device computes it natively (a CUDA GPU
    # with bf16, a CPU with AVX512-BF16 or AMX), else fp32. bf16 trains the default generator 1.4x faster on this
    # project's CPUs at the same quality (benchmarks/bench_precision.py; docs/generator.md, "Training in
    # bfloat16"). A DP generator always trains in fp32 (opacus' per-record clipping is not tested under autocast).
    # Sampling and encoding stay fp32.
    precision: str = "auto"
    # torch intra-op threads while training/sampling (0 = leave torch's setting: every core). Every core by default:
    # alone on 2 cores, 2 threads train 1.75x faster than 1. On a machine shared with other jobs pass 1: there two
    # spin-waiting OpenMP threads ran 2-3x slower than one (both measured, docs/generator.md). The study pins 1.
    num_threads: int = 0
    # privacy: "none", or "dp" (DP-SGD through opacus for the denoiser; the autoencoder learns from the public
    # reference split only). dp_delta well below 1/|S| (a mechanism that publishes one record outright is
    # (0, 1/|S|)-DP); None = 1 / (10 |S|) capped at 1e-5. The DP recipe fields below apply with privacy="dp" only,
    # where ``effective()`` puts them in place of train_steps, batch_size, ... : DP-SGD wants large batches (the
    # noise is per step) and a smaller denoiser (the noise is per parameter), and the public split is larger than S;
    # measured in docs/generator.md (3x faster than the plain recipe under DP-SGD, same quality).
    privacy: str = "none"
    dp_epsilon: float = 10.0
    dp_delta: float | None = 1e-5
    dp_max_grad_norm: float = 1.0
    dp_train_steps: int = 1200
    dp_batch_size: int = 1024
    # 5e-4 (was 2e-3): DP-SGD fine-tunes a denoiser pre-trained on public data; at 2e-3 the noisy steps pulled it
    # away from that starting point (conditional accuracy 0.90 against 0.99 before them), at 5e-4 they keep it
    # (0.986, CAS ratio 0.919, FID 10.5 at epsilon 10; docs/generator.md)
    dp_learning_rate: float = 5e-4
    dp_warmup_steps: int = 50
    dp_denoiser_width: int = 256
    dp_denoiser_depth: int = 3
    dp_denoiser_dropout: float = 0.0
    dp_embedding_dim: int = 128
    dp_latent_dim: int = 32
    # 24 epochs with feature matching (was 12, pixels only): the same 240k image passes as the non-private
    # autoencoder's 60 epochs on S; it learns public images only, so it costs no privacy. FID 50.9 -> 13.5, CAS ratio
    # 0.82 -> 0.88 at epsilon 10 (docs/generator.md)
    dp_autoencoder_epochs: int = 24
    dp_autoencoder_perceptual_weight: float = 1.0
    dp_autoencoder_channels: tuple[int, ...] = (32, 64)
    # the DP recipe was measured with the epsilon objective; v + min_snr is unmeasured under DP-SGD
    dp_prediction_type: str = "epsilon"
    dp_loss_weighting: str = "uniform"
    # DP: steps of non-private pre-training of the denoiser on the public reference split (plain batch_size and
    # learning_rate) before DP-SGD fine-tunes it on S (Ghalebikesabi et al. 2023: public pre-training, then DP
    # fine-tuning); 0 = DP-SGD from scratch (DPDM). S still reaches only the DP-SGD steps, so epsilon is unchanged.
    dp_public_pretrain_steps: int = 4000

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line fix for any out-of-range value."""
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"unknown generator architecture {self.architecture!r}; known: {', '.join(ARCHITECTURES)}")
        for name in ("autoencoder_perceptual_weight", "dp_autoencoder_perceptual_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"{name} must be >= 0 (0 = no feature-matching loss), got {getattr(self, name)}")
        for name in ("latent_dim", "autoencoder_epochs", "autoencoder_perceptual_epochs", "autoencoder_batch_size", "denoiser_width",
                     "denoiser_depth", "embedding_dim", "num_train_timesteps", "train_steps", "batch_size",
                     "sampling_steps", "sample_batch_size", "unet_layers_per_block", "unet_norm_groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
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
        for name in ("denoiser_dropout", "dp_denoiser_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must lie in [0, 1) (0 = none; 0.1 is usual), got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if any(c % self.unet_norm_groups for c in self.unet_channels):
            raise ConfigError(f"every unet_channels value {self.unet_channels} must be a multiple of "
                              f"unet_norm_groups={self.unet_norm_groups}")
        if not isinstance(self.num_threads, int) or self.num_threads < 0:
            raise ConfigError(f"num_threads must be a non-negative integer (0 = torch's default), got {self.num_threads!r}")
        if self.autoencoder_data not in AUTOENCODER_DATA:
            raise ConfigError(f"autoencoder_data must be one of {', '.join(AUTOENCODER_DATA)}, got "
                              f"{self.autoencoder_data!r}")
        for prefix in ("", "dp_"):
            if getattr(self, f"{prefix}prediction_type") not in PREDICTION_TYPES:
                raise ConfigError(f"{prefix}prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got "
                                  f"{getattr(self, f'{prefix}prediction_type')!r}")
            if getattr(self, f"{prefix}loss_weighting") not in LOSS_WEIGHTINGS:
                raise ConfigError(f"{prefix}loss_weighting must be one of {', '.join(LOSS_WEIGHTINGS)}, got "
                                  f"{getattr(self, f'{prefix}loss_weighting')!r}")
        for name in ("autoencoder_channels", "dp_autoencoder_channels"):
            channels = getattr(self, name)
            if not (isinstance(channels, tuple) and len(channels) >= 1
                    and all(isinstance(c, int) and c >= 1 for c in channels)):
                raise ConfigError(f"{name} must be a tuple of positive integers, e.g. (64, 128), got {channels!r}")
        if not (math.isfinite(self.min_snr_gamma) and self.min_snr_gamma > 0):
            raise ConfigError(f"min_snr_gamma must be a positive number (5 is usual), got {self.min_snr_gamma}")
        if self.privacy not in PRIVACY_MODES:
            raise ConfigError(f"unknown generator privacy {self.privacy!r}; known: {', '.join(PRIVACY_MODES)}")
        if not (isinstance(self.dp_epsilon, (int, float)) and math.isfinite(self.dp_epsilon) and self.dp_epsilon > 0):
            raise ConfigError(f"dp_epsilon must be a positive number, got {self.dp_epsilon!r}: it is the privacy "
                              "budget (smaller is more private; 1 to 10 is usual)")
        if self.dp_delta is not None and not 0.0 < self.dp_delta < 1.0:
            raise ConfigError(f"dp_delta must lie in (0, 1), got {self.dp_delta}: use well below 1/|S| (default 1e-5)")
        for name in (f"dp_{field}" for field in DP_RECIPE if field not in ("learning_rate",
                                                                           "autoencoder_perceptual_weight",
                                                                           "prediction_type", "loss_weighting",
                                                                           "autoencoder_channels",
                                                                           "denoiser_dropout")):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"generator {name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("public_pretrain_steps", "dp_public_pretrain_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"{name} must be a non-negative integer (0 = no public pre-training), "
                                  f"got {getattr(self, name)!r}")
        if not self.dp_max_grad_norm > 0:
            raise ConfigError(f"dp_max_grad_norm must be positive, got {self.dp_max_grad_norm}")
        if self.privacy == "dp" and self.architecture == "pixel_unet":
            raise ConfigError("privacy=dp needs architecture=latent_mlp (a DP-SGD pixel UNet is out of the CPU budget "
                              "and untested): pass architecture=latent_mlp")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.privacy == "dp" and self.precision == "bf16":
            raise ConfigError("privacy=dp trains in fp32 (opacus' per-record clipping is not tested under bf16 "
                              "autocast): pass precision=auto or fp32")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")

    def effective(self) -> "GeneratorConfig":
        """The config that is trained: with privacy="dp" the DP recipe (``dp_train_steps``, ``dp_batch_size``, ...)
        in place of the plain fields; otherwise unchanged."""
        if self.privacy != "dp":
            return self
        return replace(self, **{field: getattr(self, f"dp_{field}") for field in DP_RECIPE})

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
        """The config a saved generator was trained with: ``from_dict`` with every field the record predates set to
        what it meant then (``FIELDS_BEFORE_THEY_EXISTED``), not to today's default."""
        return cls.from_dict({**FIELDS_BEFORE_THEY_EXISTED, **record})

    def identity_record(self) -> dict[str, Any]:
        """The fields that decide what is trained (sampling-only fields and the device excluded): hashed to
        decide whether an existing generator can be reused."""
        record = self.resolved().effective().to_dict()
        for key in ("device", "guidance_scale", "guidance_interval", "sampling_steps", "sample_batch_size",
                    "num_threads"):
            record.pop(key)
        if record["architecture"] == "latent_mlp":
            for key in [k for k in record if k.startswith("unet_")]:
                record.pop(key)
        else:
            for key in [k for k in record if (k.startswith(("autoencoder_", "denoiser_")) and k != "denoiser_dropout")
                        or k == "latent_dim"]:
                record.pop(key)
        if record.get("precision") == "fp32":  # the identities from before the option stay valid
            record.pop("precision")
        if record.get("denoiser_dropout") == 0:  # none: identities from before the option stay valid
            record.pop("denoiser_dropout")
        if record.get("autoencoder_perceptual_weight") == 0:  # off: identities from before the option stay valid
            record.pop("autoencoder_perceptual_weight")
            record.pop("autoencoder_perceptual_epochs")
        for field in DP_RECIPE:  # already in place (DP) or unused (non-private)
            record.pop(f"dp_{field}")
        if record["privacy"] == "dp" or record.get("autoencoder_data") == "private":  # DP: always public;
            record.pop("autoencoder_data")                            # private: the identities from before it
        if record["privacy"] == "dp" or record["public_pretrain_steps"] == 0:  # DP has its own; 0: identities
            record.pop("public_pretrain_steps")                                  # from before the option stay valid
        if record["loss_weighting"] == "uniform":  # gamma unused
            record.pop("min_snr_gamma")
        for key, before in (("prediction_type", "epsilon"), ("loss_weighting", "uniform")):
            if record[key] == before:  # the identities from before the option stay valid
                record.pop(key)
        if record["privacy"] == "none":  # the non-private generator's identity predates the DP fields
            for key in ("privacy", "dp_epsilon", "dp_delta", "dp_max_grad_norm", "dp_public_pretrain_steps"):
                record.pop(key)
        return record


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
    base = dict(latent_dim=8, autoencoder_channels=(8, 16), dp_autoencoder_channels=(8, 16), autoencoder_epochs=20,
                denoiser_width=32, denoiser_depth=2, embedding_dim=16, unet_channels=(8, 16), unet_layers_per_block=1,
                unet_norm_groups=4, unet_attention=False, num_train_timesteps=50, train_steps=30, batch_size=32,
                warmup_steps=5, ema_decay=0.9, sampling_steps=2, sample_batch_size=64, device="cpu", num_threads=1,
                dp_public_pretrain_steps=10, autoencoder_perceptual_epochs=2, precision="fp32")
    base.update(overrides)
    return GeneratorConfig(**base)
