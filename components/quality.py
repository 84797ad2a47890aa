"""How good, and how private, a generator's images are (the ``generator/*`` metrics).

- Conditional accuracy: a reference classifier, trained on the ``reference`` split (real images held out for
  measuring), labels generated images as the class asked for.
- Classification Accuracy Score (Ravuri & Vinyals 2019): a classifier trained only on synthetic images, tested on
  the real test split; reported with its ratio to the same classifier trained the same way on as many real images,
  and per class (``cas/<class>``: its accuracy on the real test images of that class).
- FID and KID (Heusel et al. 2017; Binkowski et al. 2018) on the reference classifier's penultimate features
  (no Inception weights can be fetched here), with the real-vs-real FID of two real samples for scale.
- Diversity (``diversity_ratio``): per class, the mean pairwise distance of the synthetic images' features over
  that of as many real test images of the class, averaged over classes (``diversity_ratio_min``: the worst class);
  a generator that repeats one image per class scores 0, one as varied as the real images 1.
- Memorization: for each synthetic image, the L2 pixel distance to its nearest (d1) and second nearest (d2) real
  training image; a near-copy has d1 / d2 < 1/3 (the copy-detection rule of Carlini et al. 2023).
- A sample grid: one row per class, real images on the left, synthetic on the right.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy import linalg
from torch import nn

from fairforget.components.config import ConfigBase
from fairforget.components.dataset import Dataset
from fairforget.components.generator import CLASS_VARIABLE, Generator
from fairforget.components.generator.denoiser import draw_conditions
from fairforget.components.models import build_classifier
from fairforget.components.training import TrainConfig, fit_classifier, images_to_tensor, predict_logits
from fairforget.errors import ConfigError


@dataclass(frozen=True)
class QualityConfig(ConfigBase):
    """Evaluation knobs. ``eval_per_class`` synthetic images per class feed conditional accuracy, FID/KID and the
    memorization check; CAS uses as many synthetic images as S has, with S's class counts.

    The reference classifier (the judge) trains without the flip + crop augmentations by default: it is a
    measuring instrument, picked by its accuracy on the real test split. Measured on the default data (seed 0):
    15 epochs without augmentation 0.877 (Sandal 0.98, Shirt 0.62); 10 epochs with padding-4 crops 0.834 (Sandal
    0.83: shifted crops make sandals look like sneakers); 20 epochs with padding-2 crops 0.870."""

    classifier: str = "small_cnn"
    reference_epochs: int = 15
    reference_augment: bool = False
    cas_epochs: int = 8
    eval_per_class: int = 200
    # None: the generator's own; a float; or a mapping class name -> scale (per-class guidance)
    guidance_scale: float | Mapping[str, float] | None = None
    near_copy_ratio: float = 1.0 / 3.0
    kid_subset_size: int = 500
    kid_subsets: int = 20
    grid_per_class: int = 8
    seed: int = 0

    def validate(self) -> None:
        if self.eval_per_class < 2:
            raise ConfigError(f"eval_per_class must be >= 2 (FID needs a covariance), got {self.eval_per_class}")
        scales = self.guidance_scale.values() if isinstance(self.guidance_scale, Mapping) else [self.guidance_scale]
        if any(scale is not None and not float(scale) >= 0 for scale in scales):
            raise ConfigError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if not 0 < self.near_copy_ratio < 1:
            raise ConfigError(f"near_copy_ratio must lie in (0, 1), got {self.near_copy_ratio}")


def train_reference_classifier(dataset: Dataset, config: QualityConfig, split: str = "reference") -> nn.Module:
    """A ``config.classifier`` trained on ``split`` (default the ``reference`` split: real, held out from S, test and
    audit), for ``config.reference_epochs`` epochs, with the training augmentations only if
    ``config.reference_augment``."""
    reference = dataset.split(split)
    if len(reference) == 0:
        raise ConfigError(f"the data set has no {split} split: the quality metrics need held-out real images")
    _, height, width, channels = dataset.images.shape
    model = build_classifier(config.classifier, dataset.num_classes, channels, height, seed=config.seed)
    train_config = TrainConfig(epochs=config.reference_epochs, augment=config.reference_augment)
    return fit_classifier(model, reference.images, reference.labels, train_config, seed=config.seed)


def conditional_accuracy(classifier: nn.Module, images: np.ndarray, requested_labels: np.ndarray) -> float:
    """Fraction of uint8 images (N, H, W, C) that ``classifier`` labels as the class requested (N,)."""
    return float(np.mean(predict_logits(classifier, images).argmax(axis=1) == np.asarray(requested_labels)))


@torch.no_grad()
def classifier_features(classifier: nn.Module, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """float64 (N, F): the input of ``classifier``'s last linear layer (its penultimate features)."""
    last_linear = [m for m in classifier.modules() if isinstance(m, nn.Linear)][-1]
    captured: list[torch.Tensor] = []
    hook = last_linear.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
    was_training = classifier.training
    classifier.eval()
    try:
        for start in range(0, len(images), batch_size):
            classifier(images_to_tensor(images[start:start + batch_size]))
    finally:
        hook.remove()
        classifier.train(was_training)
    return torch.cat(captured).double().numpy()


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}) for feature sets (N_a, F) and (N_b, F)."""
    mu_a, mu_b = features_a.mean(axis=0), features_b.mean(axis=0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    with warnings.catch_warnings():  # a singular product (few samples) is handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(root).all():
        eps = 1e-6 * np.eye(len(cov_a))
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    root = np.real(root)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))


def kernel_inception_distance(features_a: np.ndarray, features_b: np.ndarray, subset_size: int, subsets: int,
                              seed: int) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic kernel k(x, y) = (x.y / F + 1)^3, mean and std over random subsets."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(features_a), len(features_b))
    dim = features_a.shape[1]
    values = []
    for _ in range(subsets):
        a = features_a[rng.choice(len(features_a), m, replace=False)]
        b = features_b[rng.choice(len(features_b), m, replace=False)]
        k_aa, k_bb, k_ab = ((a @ a.T) / dim + 1) ** 3, ((b @ b.T) / dim + 1) ** 3, ((a @ b.T) / dim + 1) ** 3
        mmd = ((k_aa.sum() - np.trace(k_aa)) / (m * (m - 1)) + (k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
               - 2 * k_ab.mean())
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def mean_pairwise_distance(features: np.ndarray) -> float:
    """Mean Euclidean distance over all unordered pairs of distinct rows of ``features`` (N, F), N >= 2."""
    squared = np.sum(features ** 2, axis=1)
    gram = squared[:, None] + squared[None, :] - 2.0 * features @ features.T
    distances = np.sqrt(np.maximum(gram, 0.0))
    n = len(features)
    return float(distances[np.triu_indices(n, k=1)].mean())


def diversity_ratios(features_synthetic: np.ndarray, labels_synthetic: np.ndarray, features_real: np.ndarray,
                     labels_real: np.ndarray, num_classes: int) -> dict[int, float]:
    """Per class k: mean pairwise feature distance of the synthetic images of class k over that of the real images
    of class k ({k: ratio}, classes with fewer than 2 images on either side left out). 1 = as diverse as the real
    images; a generator that repeats one image per class gives 0."""
    ratios = {}
    for k in range(num_classes):
        synthetic, real = features_synthetic[labels_synthetic == k], features_real[labels_real == k]
        if len(synthetic) >= 2 and len(real) >= 2:
            ratios[k] = mean_pairwise_distance(synthetic) / max(mean_pairwise_distance(real), 1e-12)
    return ratios


@torch.no_grad()
def nearest_neighbour_distances(queries: np.ndarray, references: np.ndarray, chunk: int = 512) -> np.ndarray:
    """float64 (N, 2): L2 distance of each uint8 query image to its nearest and second-nearest reference image
    (pixels scaled to [0, 1]). Needs at least two references."""
    if len(references) < 2:
        raise ConfigError("the memorization check needs at least two real training images")
    ref = torch.from_numpy(references.reshape(len(references), -1).astype(np.float64) / 255.0)
    out = []
    for start in range(0, len(queries), chunk):
        q = torch.from_numpy(queries[start:start + chunk].reshape(-1, ref.shape[1]).astype(np.float64) / 255.0)
        squared = (q * q).sum(1, keepdim=True) - 2 * q @ ref.T + (ref * ref).sum(1)[None]
        out.append(squared.clamp_min(0).topk(2, dim=1, largest=False).values.sqrt())
    return torch.cat(out).numpy()


def near_copy_fraction(distances: np.ndarray, ratio: float = 1.0 / 3.0) -> float:
    """Fraction of rows of (N, 2) nearest/second-nearest distances with d1 / d2 < ``ratio``."""
    d1, d2 = distances[:, 0], distances[:, 1]
    return float(np.mean(d1 < ratio * d2))


def classification_accuracy_score(synthetic_images: np.ndarray, synthetic_labels: np.ndarray,
                                  real_images: np.ndarray, real_labels: np.ndarray, test: Dataset,
                                  config: QualityConfig) -> dict[str, float]:
    """CAS: accuracy on ``test`` of a classifier trained on synthetic images only, the same classifier trained the
    same way (same seed, epochs) on the real images, and their ratio; ``cas/<class>``: the synthetic-trained
    classifier's accuracy on the test images of each class (which classes' samples teach a classifier that class)."""
    _, height, width, channels = test.images.shape
    scores, per_class = {}, {}
    for name, images, labels in (("synthetic", synthetic_images, synthetic_labels), ("real", real_images, real_labels)):
        model = build_classifier(config.classifier, len(test.class_names), channels, height, seed=config.seed + 7)
        fit_classifier(model, images, labels, TrainConfig(epochs=config.cas_epochs), seed=config.seed + 7)
        correct = predict_logits(model, test.images).argmax(axis=1) == test.labels
        scores[name] = float(np.mean(correct))
        if name == "synthetic":
            per_class = {f"cas/{c}": float(np.mean(correct[test.labels == k]))
                         for k, c in enumerate(test.class_names) if (test.labels == k).any()}
    return {"cas": scores["synthetic"], "cas_real_baseline": scores["real"],
            "cas_ratio": scores["synthetic"] / max(scores["real"], 1e-12), **per_class}


def sample_grid(real: Dataset, synthetic_images: np.ndarray, synthetic_labels: np.ndarray, per_class: int):
    """A matplotlib figure: one row per class, ``per_class`` real images on the left, as many synthetic on the
    right (the paper's Figs. 10-11). Pass public images as ``real`` (the reference split), never private ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = real.class_names
    fig, axes = plt.subplots(len(classes), 2 * per_class + 1, figsize=(0.6 * (2 * per_class + 1) + 1.5,
                                                                       0.65 * len(classes) + 0.6), squeeze=False)
    cmap = "gray" if real.images.shape[-1] == 1 else None
    for row, name in enumerate(classes):
        groups = (real.images[real.labels == row][:per_class], synthetic_images[synthetic_labels == row][:per_class])
        for side, group in enumerate(groups):
            for k in range(per_class):
                ax = axes[row, k + side * (per_class + 1)]
                ax.axis("off")
                if k < len(group):
                    ax.imshow(group[k].squeeze(-1) if cmap else group[k], cmap=cmap, vmin=0, vmax=255)
        axes[row, per_class].axis("off")
        axes[row, 0].set_title(name, fontsize=7, loc="left", pad=2)
    fig.suptitle("real, public reference split (left) | synthetic (right)", fontsize=9)
    fig.tight_layout()
    return fig


@dataclass
class QualityReport:
    """The measured numbers (``metrics``), per-class conditional accuracy and the sample-grid figure."""

    metrics: dict[str, float]
    per_class_accuracy: dict[str, float]
    config: dict
    figure: object = field(repr=False, default=None)

    def as_metrics(self, prefix: str = "generator") -> dict[str, float]:
        out = {f"{prefix}/{k}": float(v) for k, v in self.metrics.items()}
        out.update({f"{prefix}/conditional_accuracy/{c}": float(v) for c, v in self.per_class_accuracy.items()})
        return out


def evaluate_generator(generator: Generator, dataset: Dataset, config: QualityConfig | None = None,
                       reference_classifier: nn.Module | None = None, progress: bool = False) -> QualityReport:
    """Measure ``generator`` against ``dataset`` (its train, test and reference splits); see the module docstring."""
    config = config or QualityConfig()
    config.validate()
    guidance = generator.config.guidance_scale if config.guidance_scale is None else config.guidance_scale
    train, test = dataset.split("train"), dataset.split("test")
    train = train.select(train.manifest["origin"].to_numpy() == "real")
    classifier = reference_classifier or train_reference_classifier(dataset, config)
    manifest = train.manifest.copy()

    # A class-balanced synthetic set: conditional accuracy, FID/KID, memorization, grid.
    counts = {c: config.eval_per_class for c in dataset.class_names}
    conditions = draw_conditions(generator.space, manifest, counts, seed=config.seed)
    labels = conditions[CLASS_VARIABLE].map({c: i for i, c in enumerate(dataset.class_names)}).to_numpy()
    images = generator.sample(conditions, seed=config.seed, guidance_scale=guidance, progress=progress)
    predicted = predict_logits(classifier, images).argmax(axis=1)
    per_class = {c: float(np.mean(predicted[labels == i] == i)) for i, c in enumerate(dataset.class_names)}

    reference = dataset.split("reference")
    features_syn = classifier_features(classifier, images)
    features_test = classifier_features(classifier, test.images)
    # Real-vs-real scale: a class-balanced sample of the reference split against the test split (the reference
    # classifier was trained on it, so this is a lower bound of what any generator can reach).
    reference_rows = np.concatenate([np.flatnonzero(reference.labels == i)[:config.eval_per_class]
                                     for i in range(dataset.num_classes)])
    features_ref = classifier_features(classifier, reference.images[reference_rows])
    kid, kid_std = kernel_inception_distance(features_syn, features_test, config.kid_subset_size, config.kid_subsets,
                                             config.seed)
    # diversity: per class, synthetic vs the same number of real test images of that class
    test_rows = np.concatenate([np.flatnonzero(test.labels == i)[:config.eval_per_class]
                                for i in range(dataset.num_classes)])
    diversity = diversity_ratios(features_syn, labels, features_test[test_rows], test.labels[test_rows],
                                 dataset.num_classes)
    distances = nearest_neighbour_distances(images, train.images)
    real_distances = nearest_neighbour_distances(test.images[:len(images)], train.images)

    # CAS: as many synthetic images as S has, with S's class counts.
    train_counts = train.manifest[CLASS_VARIABLE].value_counts().to_dict()
    cas_conditions = draw_conditions(generator.space, manifest, train_counts, seed=config.seed + 1)
    cas_labels = cas_conditions[CLASS_VARIABLE].map({c: i for i, c in enumerate(dataset.class_names)}).to_numpy()
    cas_images = generator.sample(cas_conditions, seed=config.seed + 1, guidance_scale=guidance, progress=progress)
    cas = classification_accuracy_score(cas_images, cas_labels, train.images, train.labels, test, config)

    metrics = {
        "conditional_accuracy": float(np.mean(predicted == labels)),
        "reference_classifier_test_accuracy": conditional_accuracy(classifier, test.images, test.labels),
        "fid": frechet_distance(features_syn, features_test),
        "fid_real_vs_real": frechet_distance(features_ref, features_test),
        "kid": kid,
        "kid_std": kid_std,
        "diversity_ratio": float(np.mean(list(diversity.values()))) if diversity else float("nan"),
        "diversity_ratio_min": float(min(diversity.values())) if diversity else float("nan"),
        "near_copy_fraction": near_copy_fraction(distances, config.near_copy_ratio),
        "near_copy_fraction_real_test": near_copy_fraction(real_distances, config.near_copy_ratio),
        "nn_distance_median": float(np.median(distances[:, 0])),
        "nn_distance_median_real_test": float(np.median(real_distances[:, 0])),
        **({f"guidance_scale/{c}": float(w) for c, w in guidance.items()} if isinstance(guidance, Mapping)
           else {"guidance_scale": float(guidance)}),
        "eval_images": float(len(images)),
        **cas,
    }
    # real images of the public reference split only: a logged figure never shows a private record of S
    figure = sample_grid(reference if len(reference) else test, images, labels, config.grid_per_class)
    return QualityReport(metrics, per_class, asdict(config), figure)
