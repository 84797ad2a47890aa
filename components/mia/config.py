"""``AuditConfig``: every setting of a membership-inference audit, with its default written once."""

from __future__ import annotations

from dataclasses import dataclass, replace

from fairforget.components.config import ConfigBase
from fairforget.errors import ConfigError

ATTACK_NAMES = ("mloss", "mmean", "mstd", "moments", "confidence", "entropy", "modified_entropy", "rmia")  # registry's
DEFAULT_ATTACKS = ATTACK_NAMES
# With one query per image (no augmentation), M-Mean equals M-Loss and M-Std is constant (AUC 0.5 exactly): they
# add nothing and must not count as attacks that "failed".
DEGENERATE_WITHOUT_AUGMENTATION = ("mmean", "mstd")


def attacks_for_count(attacks: tuple[str, ...], num_augmentations: int) -> tuple[str, ...]:
    """``attacks`` without those that are identical to another or constant under ``num_augmentations`` queries per
    image (``DEGENERATE_WITHOUT_AUGMENTATION`` when it is 1); unchanged when nothing would be left."""
    if num_augmentations != 1:
        return tuple(attacks)
    kept = tuple(a for a in attacks if a not in DEGENERATE_WITHOUT_AUGMENTATION)
    return kept or tuple(attacks)


@dataclass(frozen=True)
class AuditConfig(ConfigBase):
    """How an audit runs.

    Sizes: ``sample_size`` members and as many non-members are audited (None: as many as the smaller set has);
    ``calibration_fraction`` of each (stratified by class) fit thresholds and attack models, the rest is evaluated;
    with ``cross_fit`` the halves then swap roles, so every audited record is scored by attacks fitted without it
    and measured (``protocol``). With the default data (4000 train originals, 4000 non-members) that is 2000 + 2000
    calibration and 2000 + 2000 evaluation samples, all 4000 + 4000 measured when cross-fitted.
    """

    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    # N fixed copies per image: the training family replayed. None: follow the target's recipe (``for_recipe``):
    # 10 (Yu et al.) when it trains with flip + crop, 1 (the image alone) when it trains without augmentation
    num_augmentations: int | None = None
    augmentation_padding: int = 4  # the shift range of the training augmentation (crop with 4 px padding)
    sample_size: int | None = None
    calibration_fraction: float = 0.5
    # 2-fold cross-fitting: every record measured by attacks fitted on the other half (False: the evaluation half
    # only, half the records: with several attacks that audit often cannot certify a set at chance, ``certify``)
    cross_fit: bool = True
    fpr_levels: tuple[float, ...] = (0.01, 0.001)
    num_bootstrap: int = 200
    confidence: float = 0.95  # of the bootstrap intervals
    chance_alpha: float = 0.05  # one-sided, Bonferroni over the attacks, for the chance bound of success
    batch_size: int = 256  # images per forward pass (256 beat 1024 for small_cnn on this CPU)
    num_threads: int | None = None  # torch intra-op threads while querying (None: leave as is)
    moments_max_order: int = 20  # m_k for k = 1..K (Yu et al.: 20)
    moments_hidden: tuple[int, ...] = (20, 20)  # the MLP 20-20-20-1 of Yu et al.: 20 inputs, two hidden layers
    moments_max_iter: int = 300
    rmia_gamma: float = 1.0  # x beats z when ratio(x) / ratio(z) > gamma (Zarifzadeh et al. 2024, Eq. 4)
    rmia_offline_a: float | None = None  # Pr(x) = (1 + a)/2 * Pr_OUT(x) + (1 - a)/2; None: fit on calibration
    min_per_class: int = 10  # calibration members and non-members a class needs for its own threshold
    reference_models: int = 4  # RMIA's reference models (trained like the target on the reference half)
    seed: int = 0
    show_progress: bool = True

    def for_recipe(self, train=None) -> "AuditConfig":
        """This config with ``num_augmentations`` (when None) and ``augmentation_padding`` set from the target's
        ``TrainConfig``: the attacks query the model under the augmentations it was trained with (Yu et al.'s
        M-Mean and Moments read the losses of augmented copies; a model that never saw augmented copies carries no
        extra signal in them). ``train`` None: a model trained with the classic flip + crop family."""
        augmented = train is None or train.augment
        count = self.num_augmentations if self.num_augmentations is not None else (10 if augmented else 1)
        padding = train.crop_padding if train is not None and train.augment else self.augmentation_padding
        return replace(self, num_augmentations=count, augmentation_padding=padding,
                       attacks=attacks_for_count(self.attacks, count))

    def validate(self) -> None:
        if not self.attacks:
            raise ConfigError("attacks is empty: name at least one attack")
        unknown = [a for a in self.attacks if a not in ATTACK_NAMES]
        if unknown:
            raise ConfigError(f"unknown attacks {unknown}; known attacks: {', '.join(sorted(ATTACK_NAMES))}")
        if not 0.0 < self.calibration_fraction < 1.0:
            raise ConfigError(f"calibration_fraction must lie strictly between 0 and 1, got {self.calibration_fraction}")
        if self.sample_size is not None and self.sample_size < 2:
            raise ConfigError(f"sample_size must be >= 2 (or None for all), got {self.sample_size}")
        if self.reference_models < 1 and "rmia" in self.attacks:
            raise ConfigError(f"reference_models must be >= 1 when the attacks include rmia, got "
                              f"{self.reference_models}")
        if self.num_augmentations is not None and self.num_augmentations < 1:
            raise ConfigError(f"num_augmentations must be >= 1, got {self.num_augmentations}")
        if self.num_bootstrap < 0:
            raise ConfigError(f"num_bootstrap must be >= 0, got {self.num_bootstrap}")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"confidence must lie strictly between 0 and 1, got {self.confidence}")
        if self.rmia_offline_a is not None and not 0.0 <= self.rmia_offline_a <= 1.0:
            raise ConfigError(f"rmia_offline_a must lie in [0, 1] (or None to fit it), got {self.rmia_offline_a}")
        if self.moments_max_order < 1:
            raise ConfigError(f"moments_max_order must be >= 1, got {self.moments_max_order}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1 (or None to leave torch's setting), got {self.num_threads}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")

