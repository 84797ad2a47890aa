"""Train a generator on the private training set S (the ``train`` split's real images only).

Latent design: (1) fit the autoencoder, (2) encode S and standardise the latents per dimension, (3) fit the
denoiser. Pixel design: (3) only, on images scaled to [-1, 1]. Step (3), for ``train_steps`` steps:
    x0, c = a random batch of S and its conditions;  c <- null with probability ``condition_dropout``
    t ~ U{0, T-1};  eps ~ N(0, I);  x_t = scheduler.add_noise(x0, eps, t)
    loss = || denoiser(x_t, t, c) - eps ||^2          (AdamW, warm-up then cosine decay, EMA of the weights)
The EMA weights are the ones kept.
"""

from __future__ import annotations

import copy
import math
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fairforget.components.dataset import Dataset
from fairforget.components.generator.autoencoder import encode_images, fit_autoencoder
from fairforget.components.generator.config import GeneratorConfig, torch_threads
from fairforget.components.generator.denoiser import CLASS_VARIABLE, ConditionSpace
from fairforget.components.generator.model import Generator, build_networks, make_scheduler
from fairforget.components.versioning import config_hash
from fairforget.errors import ConfigError


def generator_version(config: GeneratorConfig, data_md5: str, space: ConditionSpace) -> str:
    """A short hash naming what was trained: the training config, the data version and the condition space."""
    return config_hash({"config": config.identity_record(), "data_md5": data_md5, "space": space.to_dict()})


def training_images(dataset: Dataset) -> Dataset:
    """The rows a generator may learn from: the ``train`` split's real images (never test, audit, reference)."""
    train = dataset.split("train")
    synthetic = train.manifest["origin"].to_numpy() != "real"
    if synthetic.any():
        warnings.warn(f"the training split holds {int(synthetic.sum())} synthetic images; the generator learns "
                      "from the real ones only", stacklevel=2)
        train = train.select(~synthetic)
    if len(train) == 0:
        raise ConfigError("the data set has no real training images: prepare the data first")
    return train


def fit_denoiser(denoiser: torch.nn.Module, data: torch.Tensor, codes: np.ndarray, space: ConditionSpace,
                 config: GeneratorConfig, progress: bool = True) -> tuple[torch.nn.Module, list[float]]:
    """Train ``denoiser`` on model-space samples ``data`` (N, ...) with condition codes (N, J); returns the EMA
    copy (in eval mode) and the loss every 50 steps. Deterministic given ``config.seed`` on the CPU."""
    device = config.device
    scheduler = make_scheduler(config)
    rng = torch.Generator().manual_seed(config.seed + 1)
    data = data.to(device)
    codes_t = torch.from_numpy(codes).to(device)
    nulls = torch.from_numpy(space.null_codes(1)).to(device)
    denoiser.to(device).train()
    ema = copy.deepcopy(denoiser).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=config.learning_rate, weight_decay=0.0)

    def learning_rate_factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress_ = (step - config.warmup_steps) / max(1, config.train_steps - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))

    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor)
    alphas = scheduler.alphas_cumprod.to(device)
    history, running = [], []
    n = len(data)
    for step in tqdm(range(config.train_steps), desc="denoiser", disable=not progress, leave=False):
        index = torch.randint(0, n, (min(config.batch_size, n),), generator=rng).to(device)
        x0, c = data[index], codes_t[index]
        drop = (torch.rand(len(index), generator=rng) < config.condition_dropout).to(device)
        c = torch.where(drop[:, None], nulls.expand_as(c), c)
        t = torch.randint(0, config.num_train_timesteps, (len(index),), generator=rng).to(device)
        eps = torch.randn(x0.shape, generator=rng).to(device)
        a = alphas[t].view(-1, *([1] * (x0.dim() - 1)))
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps  # = scheduler.add_noise(x0, eps, t)
        loss = F.mse_loss(denoiser(x_t, t, c), eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            for p_ema, p in zip(ema.parameters(), denoiser.parameters()):
                p_ema.lerp_(p, 1 - decay)
        running.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == config.train_steps:
            history.append(float(np.mean(running)))
            running = []
    denoiser.eval()
    return ema, history


def train_generator(dataset: Dataset, *, config: GeneratorConfig | None = None, data_md5: str = "",
                    progress: bool = True) -> Generator:
    """Train a generator on ``dataset``'s real training images, conditioned on the class and on every entry of
    ``dataset.attributes``. ``data_md5`` records the data version it learned from. Returns it in eval mode."""
    config = (config or GeneratorConfig()).resolved()
    with torch_threads(config.num_threads):
        return _train_generator(dataset, config, data_md5, progress)


def _train_generator(dataset: Dataset, config: GeneratorConfig, data_md5: str, progress: bool) -> Generator:
    train = training_images(dataset)
    space = ConditionSpace.from_dataset(dataset.class_names, train.manifest, dataset.attributes)
    conditions = train.manifest.copy()
    conditions[CLASS_VARIABLE] = [dataset.class_names[i] for i in train.labels]
    codes = space.encode(conditions)
    image_shape = tuple(int(v) for v in train.images.shape[1:])
    images = train.to_float_tensor_array()
    summary: dict = {"train_images": len(train), "architecture": config.architecture, "device": config.device}

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        denoiser, autoencoder = build_networks(config, image_shape, space)
    started = time.perf_counter()
    latent_mean = latent_std = None
    if autoencoder is not None:
        history = fit_autoencoder(autoencoder, images, config.autoencoder_epochs, config.autoencoder_batch_size,
                                  config.autoencoder_learning_rate, config.seed, config.device, progress)
        summary["autoencoder_loss"] = history[-1]
        latents = encode_images(autoencoder, images, device=config.device)
        latent_mean = latents.mean(axis=0).astype(np.float32)
        latent_std = np.maximum(latents.std(axis=0), 1e-3).astype(np.float32)
        data = torch.from_numpy((latents - latent_mean) / latent_std)
        with torch.no_grad():
            recon = autoencoder.decode(torch.from_numpy(latents[:512]).to(config.device)).cpu().numpy()
        summary["autoencoder_rmse"] = float(np.sqrt(np.mean((recon - images[:512]) ** 2)))
        summary["autoencoder_seconds"] = time.perf_counter() - started
    else:
        data = torch.from_numpy(images * 2.0 - 1.0)
    ema, history = fit_denoiser(denoiser, data, codes, space, config, progress)
    summary["denoiser_loss"] = history[-1]
    summary["loss_history"] = history
    summary["train_seconds"] = time.perf_counter() - started
    summary["denoiser_parameters"] = int(sum(p.numel() for p in ema.parameters()))
    return Generator(config, space, image_shape, ema, autoencoder, latent_mean, latent_std, data_md5,
                     generator_version(config, data_md5, space), summary)
