"""Train a generator on the private training set S (the ``train`` split's real images only).

Latent design: (1) fit the autoencoder, (2) encode S and standardise the latents per dimension, (3) fit the
denoiser. Pixel design: (3) only, on images scaled to [-1, 1]. Step (3), for ``train_steps`` steps:
    x0, c = a random batch of S and its conditions;  c <- null with probability ``condition_dropout``
    t ~ U{0, T-1};  eps ~ N(0, I);  x_t = scheduler.add_noise(x0, eps, t)
    loss = w(t) || denoiser(x_t, t, c) - eps ||^2     (AdamW, warm-up then cosine decay, EMA of the weights)
with v = sqrt(a_t) eps - sqrt(1 - a_t) x0 in place of eps under ``prediction_type="v_prediction"``, and w(t) = 1 or
the Min-SNR weight (``loss_weighting``).
The EMA weights are the ones kept.

Differentially private mode (``privacy="dp"``, after DPDM, Dockhorn et al. 2022): the autoencoder is trained on the
public ``reference`` split only, and the latent statistics come from it too, so the private set S reaches only the
denoiser, which is trained with DP-SGD through opacus: Poisson sampling with rate ``batch_size / |S|``, each
record's gradient clipped to ``dp_max_grad_norm``, Gaussian noise with the multiplier that opacus'
``get_noise_multiplier`` finds for (``dp_epsilon``, ``dp_delta``) over ``train_steps`` steps with its PRV
accountant. The accountant's epsilon after training is reported (``dp_epsilon`` in the summary). The EMA of the
weights and sampling are post-processing and cost no privacy. With ``public_pretrain_steps > 0`` the denoiser
first learns, without DP, from the public reference split's latents (Ghalebikesabi et al. 2023's public
pre-training), and DP-SGD fine-tunes that starting point on S: the public data costs no privacy, so the accounting
is unchanged (``dp_preset()`` pre-trains). By default it uses the public split's labels too (``public_labels``:
the labelled-public variant); with ``public_labels=False`` a DP generator uses the public images alone (the
pre-training is unconditional, the autoencoder's feature network learns rotations, and the classes are learned
from S under DP). The non-private generator can be pre-trained the same way, with the labels: its denoiser first
learns from the public split (latents in the autoencoder fitted on S), then from S.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import replace

import numpy as np
import torch

from fairforget.components.dataset import Dataset
from fairforget.components.generator.autoencoder import encode_images, fit_autoencoder, fit_perceptual_network
from fairforget.components.generator.config import GeneratorConfig, bf16_autocast, torch_threads
from fairforget.components.generator.denoiser import CLASS_VARIABLE, ConditionSpace
from fairforget.components.generator.labeller import (composed_epsilon,
                                                     composed_noise_multiplier, fit_dp_labeller, image_features,
                                                     labeller_noise_multiplier)
from fairforget.components.generator.model import Generator, build_networks, make_scheduler, prediction_target
from fairforget.components.progress import progress as progress_bar
from fairforget.components.versioning import config_hash
from fairforget.errors import ConfigError

DP_ACCOUNTANT = "prv"
# Beyond this Gaussian noise multiplier the noise on each step's summed gradient is 50x the largest contribution of a
# record: DP-SGD at this batch size learns nothing useful, so such a target is refused instead of trained.
DP_MAX_NOISE_MULTIPLIER = 50.0


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


def _diffusion_loss(denoiser: torch.nn.Module, x0: torch.Tensor, c: torch.Tensor, nulls: torch.Tensor,
                    alphas: torch.Tensor, config: GeneratorConfig, rng: torch.Generator,
                    reduction: str = "mean") -> torch.Tensor:
    """The diffusion loss of a batch (B, ...) with condition dropout: the squared error against
    ``prediction_target`` (epsilon or v), weighted per timestep by ``loss_weight``; its mean
    (``reduction="mean"``) or one value per record (B,) (``"none"``)."""
    device = x0.device
    drop = (torch.rand(len(x0), generator=rng) < config.condition_dropout).to(device)
    c = torch.where(drop[:, None], nulls.expand_as(c), c)
    t = torch.randint(0, config.num_train_timesteps, (len(x0),), generator=rng).to(device)
    eps = torch.randn(x0.shape, generator=rng).to(device)
    a = alphas[t].view(-1, *([1] * (x0.dim() - 1)))
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps  # = scheduler.add_noise(x0, eps, t)
    target = prediction_target(x0, eps, a, config.prediction_type)
    per_record = (denoiser(x_t, t, c).float() - target).pow(2).flatten(1).mean(1)
    if config.loss_weighting != "uniform":
        per_record = per_record * loss_weight(alphas[t], config)
    return per_record if reduction == "none" else per_record.mean()


def loss_weight(alpha_bar: torch.Tensor, config: GeneratorConfig) -> torch.Tensor:
    """Per-record loss weights (B,) for cumulative alphas (B,): 1 (``uniform``), or Min-SNR-gamma (Hang et al.
    2023): min(SNR, gamma) / SNR for epsilon prediction and min(SNR, gamma) / (SNR + 1) for v prediction, with
    SNR = a / (1 - a). Both equal min(SNR, gamma) times the x0-error the loss measures, so they weigh timesteps alike."""
    if config.loss_weighting == "uniform":
        return torch.ones_like(alpha_bar)
    snr = alpha_bar / (1 - alpha_bar)
    clipped = snr.clamp(max=config.min_snr_gamma)
    return clipped / snr if config.prediction_type == "epsilon" else clipped / (snr + 1)


def _learning_rate_factor(config: GeneratorConfig):
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress_ = (step - config.warmup_steps) / max(1, config.train_steps - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))
    return factor


def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay_max: float) -> None:
    with torch.no_grad():
        decay = min(decay_max, (1 + step) / (10 + step))
        for p_ema, p in zip(ema.parameters(), model.parameters()):
            p_ema.lerp_(p, 1 - decay)


def dp_delta_for(config: GeneratorConfig, n_private: int) -> float:
    """``dp_delta``, or when None 1 / (10 |S|) capped at 1e-5: always well below 1 / |S|."""
    return config.dp_delta if config.dp_delta is not None else min(1e-5, 0.1 / n_private)


def dp_sample_rate(batch_size: int, n_private: int) -> float:
    """The Poisson sampling rate DP-SGD uses, as opacus' ``DPDataLoader`` sets it from a loader of
    ``batch_size`` over ``n_private`` records: 1 / number of batches = 1 / ceil(n / batch)."""
    return 1.0 / math.ceil(n_private / min(batch_size, n_private))


def labeller_history(config: GeneratorConfig, n_private: int) -> list[tuple[float, float, int]]:
    """The DP labeller's mechanism [(noise_multiplier, sample_rate, steps)] when the config has one
    (a DP generator without ``public_labels``, with ``pseudo_label_epsilon`` > 0), else []: what the denoiser's
    DP-SGD is composed after."""
    if not (config.privacy == "dp" and not config.public_labels and config.pseudo_label_epsilon):
        return []
    sigma = labeller_noise_multiplier(config.pseudo_label_epsilon, dp_delta_for(config, n_private))
    return [(sigma, 1.0, 1)]  # one release of the class table (labeller.py)


def dp_noise_multiplier(config: GeneratorConfig, n_private: int) -> float:
    """The Gaussian noise multiplier that meets (``dp_epsilon``, ``dp_delta_for``) over ``train_steps`` steps of
    Poisson sampling at ``dp_sample_rate`` (opacus, PRV accountant), after the labeller's mechanism when there is
    one (``labeller_history``: both together meet the target). Raises ``ConfigError`` when the target needs more
    noise than ``DP_MAX_NOISE_MULTIPLIER`` (or opacus finds none)."""
    from opacus.accountants.utils import get_noise_multiplier

    delta = dp_delta_for(config, n_private)
    rate = dp_sample_rate(config.batch_size, n_private)
    earlier = labeller_history(config, n_private)
    if earlier:
        return composed_noise_multiplier(config.dp_epsilon, delta, rate, config.train_steps, earlier)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sigma = float(get_noise_multiplier(target_epsilon=config.dp_epsilon, target_delta=delta,
                                               sample_rate=rate, steps=config.train_steps,
                                               accountant=DP_ACCOUNTANT, epsilon_tolerance=0.01))
    except ValueError as error:
        sigma = math.inf
        reason = str(error)
    else:
        reason = f"it needs a noise multiplier of {sigma:.0f} > {DP_MAX_NOISE_MULTIPLIER:.0f}"
    if sigma > DP_MAX_NOISE_MULTIPLIER:
        raise ConfigError(f"dp_epsilon={config.dp_epsilon} cannot be reached with {config.train_steps} steps at "
                          f"sampling rate {rate:.3f} ({reason}): raise dp_epsilon, or lower the generator's train_steps "
                          "or batch_size")
    return sigma


def check_poisson_sampler(loader, rate: float) -> None:
    """Refuse, before any step spends budget, a loader whose sampler is not the uniform Poisson sampling at
    ``rate`` that the accountant assumes (a weighted or shuffled sampler silently voids the guarantee)."""
    from opacus.data_loader import DPDataLoader
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    sampler = getattr(loader, "batch_sampler", None)
    if not isinstance(loader, DPDataLoader) or not isinstance(sampler, UniformWithReplacementSampler):
        raise ConfigError(f"DP-SGD needs Poisson sampling (opacus' UniformWithReplacementSampler), got "
                          f"{type(sampler).__name__}: the accountant's epsilon would not hold; do not pass a weighted "
                          "or shuffled sampler")
    if not math.isclose(float(loader.sample_rate), rate, rel_tol=1e-9) or not math.isclose(
            float(sampler.sample_rate), rate, rel_tol=1e-9):
        raise ConfigError(f"the DP loader samples at rate {loader.sample_rate:.6f}, the accountant at {rate:.6f}: "
                          "the noise was calibrated for another rate")


def fit_denoiser_dp(denoiser: torch.nn.Module, data: torch.Tensor, codes: np.ndarray, space: ConditionSpace,
                    config: GeneratorConfig, progress: bool = True,
                    noise_multiplier: float | None = None,
                    earlier: list[tuple[float, float, int]] = ()) -> tuple[torch.nn.Module, list[float], dict]:
    """``fit_denoiser`` with DP-SGD (see the module docstring): returns the EMA copy, the loss every 50 steps and
    the privacy record {dp_epsilon (achieved, composed with the mechanisms ``earlier`` that already saw S), dp_delta,
    dp_noise_multiplier, dp_sample_rate, dp_steps}. ``noise_multiplier`` defaults to
    ``dp_noise_multiplier(config, len(data))``."""
    from opacus import PrivacyEngine
    from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
    from torch.utils.data import DataLoader, TensorDataset

    device = config.device
    n = len(data)
    delta = dp_delta_for(config, n)
    sigma = noise_multiplier if noise_multiplier is not None else dp_noise_multiplier(config, n)
    rng = torch.Generator().manual_seed(config.seed + 1)
    denoiser.to(device).train()
    ema = copy.deepcopy(denoiser).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=config.learning_rate, weight_decay=0.0)
    loader = DataLoader(TensorDataset(data, torch.from_numpy(codes)), batch_size=min(config.batch_size, n),
                        generator=torch.Generator().manual_seed(config.seed + 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # opacus warns about secure_mode (a CSPRNG for the noise): docs/generator.md
        engine = PrivacyEngine(accountant=DP_ACCOUNTANT)
        # Ghost clipping: per-record gradient norms without materialising per-record gradients (the plain hooks
        # mode ran 12x slower on two CPU cores and needed gigabytes at the default width).
        model, optimizer, _criterion, loader = engine.make_private(
            module=denoiser, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma,
            max_grad_norm=config.dp_max_grad_norm, poisson_sampling=True, grad_sample_mode="ghost",
            criterion=torch.nn.MSELoss(), noise_generator=torch.Generator(device=device).manual_seed(config.seed + 3))
    check_poisson_sampler(loader, dp_sample_rate(config.batch_size, n))
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer.original_optimizer, _learning_rate_factor(config))
    alphas = make_scheduler(config).alphas_cumprod.to(device)
    nulls = torch.from_numpy(space.null_codes(1)).to(device)
    history, running, step = [], [], 0
    bar = progress_bar(total=config.train_steps, enabled=progress, desc="denoiser (DP-SGD)", leave=False)
    while step < config.train_steps:
        for x0, c in loader:
            if step >= config.train_steps:
                break
            optimizer.zero_grad(set_to_none=True)
            if len(x0):
                per_record = _diffusion_loss(model, x0.to(device), c.to(device), nulls, alphas, config, rng,
                                             reduction="none")
                with warnings.catch_warnings():  # opacus' hooks on a first layer whose input needs no gradient
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    DPTensorFastGradientClipping(model, optimizer, per_record, "mean").backward()
                running.append(per_record.mean().item())
            optimizer.step()
            lr_schedule.step()
            _update_ema(ema, denoiser, step, config.ema_decay)
            step += 1
            bar.update(1)
            if step % 50 == 0 or step == config.train_steps:
                history.append(float(np.mean(running)) if running else float("nan"))
                running = []
    bar.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        epsilon = composed_epsilon(list(earlier) + list(engine.accountant.history), delta)
    model.eval()
    record = {"dp_epsilon": epsilon, "dp_delta": float(delta), "dp_noise_multiplier": sigma,
              "dp_sample_rate": float(loader.sample_rate), "dp_steps": step,
              "dp_max_grad_norm": config.dp_max_grad_norm}
    return ema, history, record


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
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _learning_rate_factor(config))
    alphas = scheduler.alphas_cumprod.to(device)
    history, running = [], []
    n = len(data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 5)  # the dropout masks (denoiser_dropout), whatever ran before
        for step in progress_bar(range(config.train_steps), enabled=progress, desc="denoiser", leave=False):
            index = torch.randint(0, n, (min(config.batch_size, n),), generator=rng).to(device)
            with bf16_autocast(device, config.precision):
                loss = _diffusion_loss(denoiser, data[index], codes_t[index], nulls, alphas, config, rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
            optimizer.step()
            lr_schedule.step()
            _update_ema(ema, denoiser, step, config.ema_decay)
            running.append(loss.item())
            if (step + 1) % 50 == 0 or step + 1 == config.train_steps:
                history.append(float(np.mean(running)))
                running = []
    denoiser.eval()
    return ema, history


def train_generator(dataset: Dataset, *, config: GeneratorConfig | None = None, data_md5: str = "",
                    extra_training: Dataset | None = None, progress: bool = True) -> Generator:
    """Train a generator on ``dataset``'s real training images and ``extra_training`` (e.g. the canaries that
    probe the generator channel, ``CanarySet.for_generator``; same classes, images and manifest columns),
    conditioned on the class and on every entry of ``dataset.attributes``. ``data_md5`` records the data version it
    learned from. Returns it in eval mode."""
    config = (config or GeneratorConfig()).resolved()
    with torch_threads(config.num_threads):
        return _train_generator(dataset, config, data_md5, progress, extra_training)


def public_images(dataset: Dataset) -> Dataset:
    """The public images a generator may learn from besides S: the ``reference`` split's real images (a DP
    generator's autoencoder, and public pre-training of the denoiser)."""
    reference = dataset.split("reference")
    reference = reference.select(reference.manifest["origin"].to_numpy() == "real")
    if len(reference) == 0:
        raise ConfigError("privacy=dp, public pre-training and autoencoder_data=public learn from the public "
                          "reference split, and this data set has none: prepare the data with a reference split "
                          "(reference_size > 0), or use privacy=none with public_pretrain_steps=0 and "
                          "autoencoder_data=private")
    return reference


def public_condition_codes(space: ConditionSpace, dataset: Dataset, public: Dataset) -> np.ndarray:
    """int64 (N, J) condition codes of the public images: the class always, an attribute value that S's condition
    space does not know as the null (unconditional) code."""
    conditions = public.manifest.copy()
    conditions[CLASS_VARIABLE] = [dataset.class_names[i] for i in public.labels]
    codes = space.null_codes(len(public))
    for j, (name, known) in enumerate(zip(space.names, space.values)):
        if name not in conditions.columns:
            continue
        index = {value: i for i, value in enumerate(known)}
        codes[:, j] = [index.get(value, codes[0, j]) for value in conditions[name].astype(str)]
    return codes


def pseudo_label_codes(space: ConditionSpace, train: Dataset, labels: np.ndarray) -> np.ndarray:
    """int64 (N, J) condition codes of public images from their pseudo-labels (N,) (-1: none): the class, and each
    attribute's value when every record of that class in S (``train``) has the same one (the attribute is then a
    function of the class, public metadata like the class list); the null code elsewhere."""
    codes = space.null_codes(len(labels))
    labelled = labels >= 0
    codes[labelled, 0] = labels[labelled]
    for j, name in enumerate(space.names[1:], start=1):
        index = {value: i for i, value in enumerate(space.values[j])}
        values = train.manifest[name].astype(str).to_numpy()
        for k in np.unique(labels[labelled]):
            of_class = set(values[train.labels == k])
            if len(of_class) == 1:
                codes[labels == k, j] = index[of_class.pop()]
    return codes


def public_classes_lacking(dataset: Dataset, train: Dataset) -> list[str]:
    """The classes of ``train`` (S) with no image in the public reference split, in class order."""
    public = set(public_images(dataset).labels.tolist())
    return [dataset.class_names[k] for k in sorted(set(train.labels.tolist()) - public)]


def _train_generator(dataset: Dataset, config: GeneratorConfig, data_md5: str, progress: bool,
                     extra_training: Dataset | None = None) -> Generator:
    train = training_images(dataset)
    if extra_training is not None and len(extra_training):
        train = train.concat(extra_training)
    space = ConditionSpace.from_dataset(dataset.class_names, train.manifest, dataset.attributes)
    conditions = train.manifest.copy()
    conditions[CLASS_VARIABLE] = [dataset.class_names[i] for i in train.labels]
    codes = space.encode(conditions)
    image_shape = tuple(int(v) for v in train.images.shape[1:])
    images = train.to_float_tensor_array()
    private = config.privacy == "dp"
    public_labels = not private or config.public_labels  # a DP generator without them learns public images alone
    summary: dict = {"train_images": len(train), "architecture": config.architecture, "device": config.device,
                     "privacy": config.privacy, "precision": config.precision}

    # DP: the privacy budget is checked before any training (an unreachable epsilon fails in seconds)
    noise_multiplier = dp_noise_multiplier(config, len(train)) if private else None
    earlier = labeller_history(config, len(train))
    pseudo_labels = None
    if private:
        lacking = public_classes_lacking(dataset, train)
        if lacking:
            warnings.warn(f"the public reference split has no images of {', '.join(lacking)}: the DP generator "
                          "learns these classes from S through DP-SGD alone, and its autoencoder, fitted on public "
                          "images, cannot draw them: on the default data such a class came out unrecognisable at "
                          "every epsilon up to 10 (docs/generator.md, 'Does the DP generator learn S?'); check "
                          "generator/conditional_accuracy/<class>, or add public images of them", stacklevel=2)
            summary["public_classes_lacking"] = len(lacking)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        denoiser, autoencoder = build_networks(config, image_shape, space)
    started = time.perf_counter()
    latent_mean = latent_std = None
    if autoencoder is not None:
        # DP (and autoencoder_data="public"): everything but the denoiser learns from public images only, so S
        # reaches only the denoiser (under DP, only the DP-SGD step).
        public_autoencoder = private or config.autoencoder_data == "public"
        fit_split = public_images(dataset) if public_autoencoder else train
        fit_images = fit_split.to_float_tensor_array()
        perceptual = None
        if config.autoencoder_perceptual_weight > 0 or earlier:
            fit_labels = fit_split.labels if public_labels else None
            perceptual = fit_perceptual_network(fit_split.images, fit_labels, dataset.num_classes,
                                                config.autoencoder_perceptual_epochs, config.seed + 4).to(config.device)
            summary["perceptual_network_seconds"] = time.perf_counter() - started
        if earlier:  # the DP labeller: S's class knowledge for the pre-training on unlabelled public images
            public_features = image_features(perceptual, fit_split.images)
            labeller = fit_dp_labeller(image_features(perceptual, train.images), train.labels, public_features,
                                       dataset.num_classes, earlier[0][0], config.seed + 5)
            pseudo_labels = labeller.pseudo_labels(public_features)
            summary.update({"dp_label_noise_multiplier": earlier[0][0], "dp_label_sample_rate": earlier[0][1],
                            "dp_label_steps": earlier[0][2], "pseudo_label_epsilon": config.pseudo_label_epsilon,
                            "pseudo_labelled_fraction": float(np.mean(pseudo_labels >= 0))})
        if config.autoencoder_perceptual_weight == 0:
            perceptual = None
        history = fit_autoencoder(autoencoder, fit_images, config.autoencoder_epochs, config.autoencoder_batch_size,
                                  config.autoencoder_learning_rate, config.seed, config.device, progress,
                                  perceptual, config.autoencoder_perceptual_weight, config.precision)
        summary["autoencoder_loss"] = history[-1]
        summary["autoencoder_images"] = len(fit_images)
        fit_latents = encode_images(autoencoder, fit_images, device=config.device)
        latent_mean = fit_latents.mean(axis=0).astype(np.float32)
        latent_std = np.maximum(fit_latents.std(axis=0), 1e-3).astype(np.float32)
        latents = encode_images(autoencoder, images, device=config.device) if public_autoencoder else fit_latents
        data = torch.from_numpy((latents - latent_mean) / latent_std)
        with torch.no_grad():
            recon = autoencoder.decode(torch.from_numpy(latents[:512]).to(config.device)).cpu().numpy()
        summary["autoencoder_rmse"] = float(np.sqrt(np.mean((recon - images[:512]) ** 2)))
        summary["autoencoder_seconds"] = time.perf_counter() - started
    else:
        data = torch.from_numpy(images * 2.0 - 1.0)
    pretrain_steps = config.public_pretrain_steps
    if pretrain_steps and (autoencoder is not None or not private):
        # public pre-training on the reference split's latents (DP: already computed, the autoencoder learned from
        # them; non-private: encoded by the autoencoder fitted on S, in S's latent statistics; pixel design: the
        # images themselves), conditioned on their labels, or, for a DP generator without public_labels,
        # unconditional (every condition the null one): the classes are then learned from S under DP
        public = public_images(dataset)
        if autoencoder is None:
            public_data = torch.from_numpy(public.to_float_tensor_array() * 2.0 - 1.0)
        else:
            public_latents = fit_latents if public_autoencoder else encode_images(
                autoencoder, public.to_float_tensor_array(), device=config.device)
            public_data = torch.from_numpy((public_latents - latent_mean) / latent_std)
        pretrain = replace(config, train_steps=pretrain_steps, batch_size=GeneratorConfig.batch_size,
                           learning_rate=GeneratorConfig.learning_rate, warmup_steps=GeneratorConfig.warmup_steps)
        if public_labels:
            public_codes = public_condition_codes(space, dataset, public)
        elif pseudo_labels is not None:
            public_codes = pseudo_label_codes(space, train, pseudo_labels)
        else:
            public_codes = space.null_codes(len(public))
        pretrained, pretrain_history = fit_denoiser(denoiser, public_data, public_codes, space, pretrain, progress)
        denoiser.load_state_dict(pretrained.state_dict())
        summary["public_pretrain_steps"] = pretrain_steps
        summary["public_pretrain_labelled"] = public_labels
        summary["public_pretrain_loss"] = pretrain_history[-1]
        summary["public_pretrain_seconds"] = time.perf_counter() - started
    if private:
        ema, history, record = fit_denoiser_dp(denoiser, data, codes, space, config, progress, noise_multiplier,
                                               earlier)
        summary.update(record)
    else:
        ema, history = fit_denoiser(denoiser, data, codes, space, config, progress)
    summary["denoiser_loss"] = history[-1]
    summary["loss_history"] = history
    summary["train_seconds"] = time.perf_counter() - started
    summary["denoiser_parameters"] = int(sum(p.numel() for p in ema.parameters()))
    return Generator(config, space, image_shape, ema, autoencoder, latent_mean, latent_std, data_md5,
                     generator_version(config, data_md5, space), summary)
