"""``Generator``: a trained conditional diffusion model that turns condition tables into images.

It owns the condition space, the denoiser, the autoencoder and latent statistics (latent design), the scheduler
config, the data version it was trained on (``data_md5``) and its ``version`` (a hash of the training config and
data version). ``save``/``load_generator`` write and read a folder atomically:
``generator.json`` (everything but weights) and ``weights.pt`` (state dicts).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from fairforget.components.atomic import atomic_folder
from fairforget.components.generator.autoencoder import ConvAutoencoder
from fairforget.components.generator.config import GeneratorConfig, torch_threads
from fairforget.components.generator.denoiser import CLASS_VARIABLE, ConditionSpace, LatentDenoiser, PixelUNetDenoiser
from fairforget.components.generator.sample import ddim_sample, to_uint8_images
from fairforget.components.progress import progress as progress_bar
from fairforget.errors import ConfigError

META_FILE = "generator.json"
WEIGHTS_FILE = "weights.pt"


def make_scheduler(config: GeneratorConfig) -> DDPMScheduler:
    """The training scheduler. ``clip_sample`` only in pixel space: latents are not bounded to [-1, 1] and
    clipping the predicted x0 there destroys the samples (see REFERENCES)."""
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                         prediction_type=config.prediction_type, clip_sample=config.architecture == "pixel_unet")


def prediction_target(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """What the denoiser learns to output for clean samples ``x0`` (B, ...) noised with ``eps`` (B, ...) at
    cumulative alphas ``alpha_bar`` (broadcastable to B, ...): ``eps`` itself, or v = sqrt(a) eps - sqrt(1 - a) x0."""
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0
    raise ConfigError(f"unknown prediction_type {prediction_type!r}")


def predicted_noise(output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The noise a denoiser's ``output`` (B, ...) implies for its input ``x_t``: the output itself for epsilon
    prediction; sqrt(a) v + sqrt(1 - a) x_t for v prediction (exact inverse of ``prediction_target``)."""
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * output + (1 - alpha_bar).sqrt() * x_t
    raise ConfigError(f"unknown prediction_type {prediction_type!r}")


def build_networks(config: GeneratorConfig, image_shape: tuple[int, int, int], space: ConditionSpace):
    """(denoiser, autoencoder or None) for a resolved config."""
    if config.architecture == "latent_mlp":
        autoencoder = ConvAutoencoder(image_shape, config.latent_dim, config.autoencoder_channels)
        denoiser = LatentDenoiser(config.latent_dim, config.denoiser_width, config.denoiser_depth,
                                  config.embedding_dim, space.cardinalities, config.denoiser_dropout)
        return denoiser, autoencoder
    if config.architecture == "pixel_unet":
        denoiser = PixelUNetDenoiser(image_shape, config.unet_channels, config.unet_layers_per_block,
                                     config.unet_norm_groups, config.unet_attention, space.cardinalities,
                                     config.denoiser_dropout)
        return denoiser, None
    raise ConfigError(f"unresolved architecture {config.architecture!r}: call config.resolved() first")


@dataclass
class Generator:
    """A trained generator. ``sample(conditions, seed)`` -> uint8 (N, H, W, C) images.

    Guarantees: the same conditions, seed, guidance scale and steps give the same images on the same device;
    sample k's initial noise is row k of one seeded draw, so a prefix of conditions gives a prefix of images.
    """

    config: GeneratorConfig
    space: ConditionSpace
    image_shape: tuple[int, int, int]
    denoiser: torch.nn.Module
    autoencoder: ConvAutoencoder | None
    latent_mean: np.ndarray | None
    latent_std: np.ndarray | None
    data_md5: str
    version: str
    training_summary: dict

    @property
    def device(self) -> str:
        return self.config.device

    def _sample_shape(self) -> tuple[int, ...]:
        if self.autoencoder is not None:
            return (self.config.latent_dim,)
        height, width, channels = self.image_shape
        return (channels, height, width)

    def sample(self, conditions: pd.DataFrame, seed: int, guidance_scale: float | Mapping[str, float] | None = None,
               steps: int | None = None, batch_size: int | None = None, progress: bool = False,
               guidance_interval: tuple[float, float] | None = None) -> np.ndarray:
        """Images for each row of ``conditions`` (one column per ``space.names``): uint8 (N, H, W, C).

        ``guidance_scale``: one scale for every row, a mapping class name -> scale (per-class guidance), or None
        for the generator's own (``config.guidance_scale``). ``guidance_interval``: the noise levels (lo, hi] where
        guidance applies (``ddim_sample``), None for the config's. A row's image depends only on its condition, its
        row of the seeded noise and its scale.

        Raises ``ValueError`` for an unknown condition value, a missing column, a negative guidance scale or a
        mapping that misses a class of ``conditions``.
        """
        guidance = self.guidance_per_row(conditions, guidance_scale)
        steps = self.config.sampling_steps if steps is None else int(steps)
        if not 1 <= steps <= self.config.num_train_timesteps:
            raise ConfigError(f"steps must lie in [1, {self.config.num_train_timesteps}], got {steps}")
        batch_size = batch_size or self.config.sample_batch_size
        interval = self.config.guidance_interval if guidance_interval is None else tuple(guidance_interval)
        codes = self.space.encode(conditions)
        height, width, channels = self.image_shape
        if len(codes) == 0:
            return np.zeros((0, height, width, channels), dtype=np.uint8)
        noise_rng = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((len(codes), *self._sample_shape()), generator=noise_rng)
        scheduler = DDIMScheduler.from_config(make_scheduler(self.config).config)
        out = []
        self.denoiser.eval()
        with torch_threads(self.config.num_threads):
            for start in progress_bar(range(0, len(codes), batch_size), enabled=progress, desc="sampling",
                                      leave=False):
                chunk = torch.from_numpy(codes[start:start + batch_size]).to(self.device)
                nulls = torch.from_numpy(self.space.null_codes(len(chunk))).to(self.device)
                scales = guidance if isinstance(guidance, float) else torch.from_numpy(guidance[start:start + batch_size])
                x = ddim_sample(self.denoiser, scheduler, noise[start:start + batch_size].to(self.device), chunk,
                                nulls, scales, steps, interval)
                out.append(to_uint8_images(self.decode(x)))
        return np.concatenate(out)

    def guidance_per_row(self, conditions: pd.DataFrame,
                         guidance_scale: float | Mapping[str, float] | None) -> float | np.ndarray:
        """The guidance of ``sample``: a float for one scale (or None: the config's), float32 (N,) scales for a
        mapping, one per row of ``conditions`` from its class. Raises ``ValueError`` for a negative scale or a class
        the mapping lacks."""
        if guidance_scale is None:
            guidance_scale = self.config.guidance_scale
        if not isinstance(guidance_scale, Mapping):
            guidance_scale = float(guidance_scale)
            if guidance_scale < 0:
                raise ConfigError(f"guidance_scale must be >= 0, got {guidance_scale}: 0 is unconditional, 1 plain "
                                  "conditional, larger values follow the condition more closely")
            return guidance_scale
        negative = {c: w for c, w in guidance_scale.items() if not float(w) >= 0}
        if negative:
            raise ConfigError(f"guidance scales must be >= 0, got {negative}")
        if CLASS_VARIABLE not in conditions.columns:
            raise ConfigError(f"conditions lack the column {CLASS_VARIABLE!r}, which per-class guidance reads")
        classes = conditions[CLASS_VARIABLE].astype(str)
        missing = sorted(set(classes) - {str(c) for c in guidance_scale})
        if missing:
            raise ConfigError(f"per-class guidance has no scale for {missing[:5]}: give one for every class "
                              f"(it has {sorted(guidance_scale)})")
        scales = {str(c): float(w) for c, w in guidance_scale.items()}
        return classes.map(scales).to_numpy(dtype=np.float32)

    @torch.no_grad()
    def to_model_space(self, images: np.ndarray) -> torch.Tensor:
        """float32 images (N, C, H, W) in [0, 1] -> what the denoiser works on (CPU tensor): standardised latents
        (N, latent_dim) in the latent design, pixels in [-1, 1] (N, C, H, W) in the pixel design."""
        if self.autoencoder is None:
            return torch.from_numpy(np.asarray(images, dtype=np.float32)) * 2.0 - 1.0
        from fairforget.components.generator.autoencoder import encode_images

        latents = encode_images(self.autoencoder, np.asarray(images, dtype=np.float32), device=self.device)
        return torch.from_numpy((latents - self.latent_mean) / self.latent_std)

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space samples -> float images (N, C, H, W) in [0, 1]."""
        if self.autoencoder is None:
            return (x + 1.0) / 2.0
        mean = torch.as_tensor(self.latent_mean, device=x.device)
        std = torch.as_tensor(self.latent_std, device=x.device)
        return self.autoencoder.decode(x * std + mean)

    def to(self, device: str) -> "Generator":
        """Move the networks to ``device`` (e.g. a GPU-trained generator loaded on a CPU)."""
        from dataclasses import replace

        self.denoiser.to(device)
        if self.autoencoder is not None:
            self.autoencoder.to(device)
        self.config = replace(self.config, device=device)
        return self

    def metadata(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "space": self.space.to_dict(),
            "image_shape": list(self.image_shape),
            "latent_mean": None if self.latent_mean is None else [float(v) for v in self.latent_mean],
            "latent_std": None if self.latent_std is None else [float(v) for v in self.latent_std],
            "data_md5": self.data_md5,
            "version": self.version,
            "training_summary": self.training_summary,
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the generator to ``folder`` atomically (temporary sibling folder, then rename)."""
        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            state = {"denoiser": {k: v.cpu() for k, v in self.denoiser.state_dict().items()}}
            if self.autoencoder is not None:
                state["autoencoder"] = {k: v.cpu() for k, v in self.autoencoder.state_dict().items()}
            torch.save(state, tmp / WEIGHTS_FILE)
            (tmp / META_FILE).write_text(json.dumps(self.metadata(), indent=2, sort_keys=True) + "\n")
        return folder


def load_generator(folder: str | os.PathLike, device: str | None = None) -> Generator:
    """Read a generator written by ``Generator.save``; ``device`` defaults to CUDA when available, else CPU."""
    folder = Path(folder)
    for name in (META_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing: train the generator first (`mlflow run . -e "
                                    "train_generator --env-manager local`) or give the folder it was saved to")
    meta = json.loads((folder / META_FILE).read_text())
    config = GeneratorConfig.from_saved(meta["config"])
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    from dataclasses import replace

    config = replace(config, device=device)
    space = ConditionSpace.from_dict(meta["space"])
    image_shape = tuple(meta["image_shape"])
    denoiser, autoencoder = build_networks(config, image_shape, space)
    state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    denoiser.load_state_dict(state["denoiser"])
    denoiser.to(device).eval()
    if autoencoder is not None:
        autoencoder.load_state_dict(state["autoencoder"])
        autoencoder.to(device).eval()
    as_array = lambda v: None if v is None else np.asarray(v, dtype=np.float32)  # noqa: E731
    return Generator(config, space, image_shape, denoiser, autoencoder, as_array(meta["latent_mean"]),
                     as_array(meta["latent_std"]), meta["data_md5"], meta["version"], meta.get("training_summary", {}))
