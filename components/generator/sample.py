"""The sampling loop, written out: DDIM with classifier-free guidance.

For each DDIM timestep t (``scheduler.timesteps``, from noisy to clean):
    eps_cond = denoiser(x_t, t, condition);  eps_null = denoiser(x_t, t, null condition)   (or v: prediction_type)
    eps = eps_null + w * (eps_cond - eps_null)          # classifier-free guidance (Ho & Salimans 2022)
    x_{t-1} = scheduler.step(eps, t, x_t)                # DDIM update, eta = 0 (deterministic); the scheduler
                                                         # reads eps or v by its prediction_type (guidance is linear)
Both halves go through the network as one doubled batch. ``w = 1`` is the plain conditional model (one pass),
``w = 0`` the unconditional one. ``w`` may also be one scale per sample (a (B,) tensor: per-class guidance).

Guidance in a limited interval (Kynkaanniemi et al. 2024): with ``guidance_interval = (lo, hi)`` the guided update
is used only at the steps whose noise level sigma_t = sqrt((1 - a_t) / a_t) (a_t the cumulative alpha) lies in
(lo, hi]; every other step is the plain conditional model (w = 1, one pass). Guidance at high noise pulls the
samples of a class towards few modes (less diversity), and at low noise it barely changes them; (0, inf) is
guidance at every step.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import DDIMScheduler
from torch import nn

from fairforget.errors import ConfigError


@torch.no_grad()
def ddim_sample(denoiser: nn.Module, scheduler: DDIMScheduler, noise: torch.Tensor, codes: torch.Tensor,
                null_codes: torch.Tensor, guidance_scale: float | torch.Tensor, steps: int,
                guidance_interval: tuple[float, float] = (0.0, math.inf)) -> torch.Tensor:
    """Denoise ``noise`` (B, ...) into samples under ``codes`` (B, J); returns a tensor shaped like ``noise``.

    ``guidance_scale``: one scale for the batch, or a (B,) tensor with one scale per sample. ``guidance_interval``:
    the noise levels (lo, hi] where guidance applies (``guided_steps``). A sample's result depends only on its own
    noise, code and scale, not on the rest of the batch."""
    if isinstance(guidance_scale, torch.Tensor):
        scales = guidance_scale.to(device=noise.device, dtype=noise.dtype).reshape(-1)
        if scales.numel() != noise.shape[0]:
            raise ConfigError(f"{scales.numel()} guidance scales for a batch of {noise.shape[0]}: give one per sample")
        if bool((scales < 0).any()):
            raise ConfigError(f"guidance_scale must be >= 0, got {float(scales.min())}")
        uniform = float(scales[0]) if bool((scales == scales[0]).all()) else None
        weight = scales.reshape(-1, *([1] * (noise.dim() - 1)))
    else:
        if guidance_scale < 0:
            raise ConfigError(f"guidance_scale must be >= 0, got {guidance_scale}")
        uniform, weight = float(guidance_scale), float(guidance_scale)
    scheduler.set_timesteps(steps)
    guided = guided_steps(scheduler, guidance_interval)
    x = noise * scheduler.init_noise_sigma
    batch = x.shape[0]
    for t, guide in zip(scheduler.timesteps, guided):
        if uniform == 1.0 or not guide:
            eps = denoiser(x, t.expand(batch).to(x.device), codes)
        elif uniform == 0.0:
            eps = denoiser(x, t.expand(batch).to(x.device), null_codes)
        else:
            both = denoiser(torch.cat([x, x]), t.expand(2 * batch).to(x.device), torch.cat([codes, null_codes]))
            eps_cond, eps_null = both.chunk(2)
            eps = eps_null + weight * (eps_cond - eps_null)
        x = scheduler.step(eps, t, x, eta=0.0).prev_sample
    return x


def guided_steps(scheduler: DDIMScheduler, guidance_interval: tuple[float, float]) -> list[bool]:
    """For each of ``scheduler.timesteps`` (set already): whether its noise level sigma_t = sqrt((1 - a_t) / a_t)
    lies in ``guidance_interval`` = (lo, hi]. Raises ``ConfigError`` unless 0 <= lo < hi."""
    lo, hi = (float(v) for v in guidance_interval)
    if not 0.0 <= lo < hi:
        raise ConfigError(f"guidance_interval must be (lo, hi) with 0 <= lo < hi (noise levels sigma; (0, inf): "
                          f"guidance at every step), got {guidance_interval}")
    alphas = scheduler.alphas_cumprod[scheduler.timesteps.long()].double()
    sigmas = ((1 - alphas) / alphas).sqrt()
    return [lo < float(sigma) <= hi for sigma in sigmas]


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [0, 1] -> uint8 (N, H, W, C), rounded and clipped."""
    array = images.clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return array.transpose(0, 2, 3, 1).copy()
