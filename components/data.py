"""Building the biased scenario of the paper from a real source (its Section IV-A, Fig. 6).

Four disjoint splits, all drawn with one seed:
- ``train``: the private set S, biased: ``majority_fraction`` of it in the majority superclass, classes equal
  within a superclass (the remainder of an uneven division goes to the first classes in class order);
- ``test``: balanced over classes (drawn from the source's own test partition when it has one);
- ``audit``: the non-member pool for membership inference, with the same class mix as ``train``; no model or
  generator ever trains on it;
- ``reference``: balanced over classes, only for measuring instruments (the classifier that judges generated
  images, the feature network of FID).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fairforget.components.config import ConfigBase
from fairforget.components.dataset import DataError, Dataset
from fairforget.components.sources import SourceImages, read_source, resize_images


@dataclass(frozen=True)
class DataConfig(ConfigBase):
    """How to build the data set. Sizes are image counts; fractions lie in (0, 1)."""

    dataset: str = "fashion_mnist"
    source_dir: str | None = None
    train_size: int = 4000
    majority_superclass: str | None = None  # None: the source's default (accessories, vehicles, ...)
    majority_fraction: float = 0.8
    test_size: int = 2000
    audit_size: int = 8000
    reference_size: int = 10000
    seed: int = 0
    missing_value: str | None = None  # dataset folder: the category for empty/NA cells of attributes.csv (None: refuse)
    image_size: int | None = None  # square side of every image (None: the source's own; folders: sources.read_folder)

    def validate(self) -> None:
        from fairforget.components.sources import MISSING_MARKERS, SOURCES, check_image_size

        if self.dataset not in SOURCES:
            raise DataError(f"unknown dataset {self.dataset!r}; known: {', '.join(SOURCES)}")
        if self.missing_value is not None:
            if self.dataset != "folder":
                raise DataError(f"missing_value is for dataset folder (its attributes.csv), not {self.dataset!r}: "
                                "leave it empty")
            value = self.missing_value
            if value != value.strip() or value.lower() in MISSING_MARKERS:
                raise DataError(f"missing_value must be a category name, e.g. 'unknown', got {value!r}")
        check_image_size(self.image_size)
        for name in ("train_size", "test_size", "audit_size", "reference_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise DataError(f"{name} must be a non-negative integer, got {value!r}")
        if self.train_size == 0:
            raise DataError("train_size must be positive")
        if not 0.0 < self.majority_fraction < 1.0:
            raise DataError(f"majority_fraction must lie strictly between 0 and 1, got {self.majority_fraction}")

    def stored_record(self) -> dict:
        """The config as stored with the data (no machine paths: source_dir is reduced to its folder name; an unset
        missing_value and image_size are left out, so data prepared before those options existed keeps its bytes and
        DVC md5)."""
        record = self.to_dict()
        record["source_dir"] = None if self.source_dir is None else str(self.source_dir).rstrip("/").split("/")[-1]
        for optional in ("missing_value", "image_size"):
            if record[optional] is None:
                del record[optional]
        return record

    def source_options(self) -> dict:
        """The keyword options of this config's source reader (``read_source(..., **options)``): readers that
        decode files one by one (folder, celeba) resize as they read; the others are resized afterwards."""
        options = {} if self.missing_value is None else {"missing_value": self.missing_value}
        if self.image_size is not None and self.dataset in ("folder", "celeba"):
            options["image_size"] = self.image_size
        return options


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` integers differing by at most one, larger ones first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def biased_class_counts(total: int, class_names: list[str], superclass_of: dict[str, str], majority: str,
                        majority_fraction: float) -> dict[str, int]:
    """Per-class counts: ``majority_fraction`` of ``total`` in superclass ``majority``, the rest spread evenly
    over the other superclasses; classes equal within each superclass."""
    superclasses = sorted(set(superclass_of[c] for c in class_names))
    if majority not in superclasses:
        raise DataError(f"majority_superclass {majority!r} is not a superclass; known: {superclasses}")
    n_major = int(round(total * majority_fraction))
    minors = [s for s in superclasses if s != majority]
    per_super = {majority: n_major}
    per_super.update(zip(minors, split_evenly(total - n_major, len(minors))))
    counts = {}
    for superclass, n in per_super.items():
        members = [c for c in class_names if superclass_of[c] == superclass]
        counts.update(zip(members, split_evenly(n, len(members))))
    return counts


def balanced_class_counts(total: int, class_names: list[str]) -> dict[str, int]:
    return dict(zip(class_names, split_evenly(total, len(class_names))))


def prepare_dataset(config: DataConfig, source: SourceImages | None = None) -> Dataset:
    """Draw the four splits from the source (see the module docstring). Deterministic given ``config``.

    Raises ``DataError`` when the source lacks images for the requested sizes, naming the class and shortfall.
    """
    config.validate()
    source = source if source is not None else read_source(config.dataset, config.source_dir,
                                                             **config.source_options())
    if config.image_size is not None and source.images.shape[1:3] != (config.image_size, config.image_size):
        source = dataclasses.replace(source, images=resize_images(source.images, config.image_size))
    class_names, superclass_of = source.class_names, source.superclass_of
    majority = config.majority_superclass or source.default_majority
    if majority is None:
        raise DataError(f"dataset {source.name} has no default majority superclass: give majority_superclass "
                        f"(--majority-superclass), one of {sorted(set(source.superclass_of.values()))}")
    bias_attribute = None
    if source.name == "celeba":
        # CelebA's bias is on a per-image attribute, not on the class.
        bias_attribute = source.attributes.columns[0]
    rng = np.random.default_rng(config.seed)
    has_test_partition = (source.partition == "test").any()

    # Strata: class (and bias attribute value for CelebA); each stratum's pool shuffled once.
    strata_key = pd.Series([class_names[i] for i in source.labels])
    if bias_attribute is not None:
        strata_key = strata_key + "|" + source.attributes[bias_attribute].astype(str).to_numpy()
    pools: dict[tuple[str, str], list[int]] = {}
    for partition in ("train", "test"):
        in_partition = source.partition == partition
        for key in sorted(strata_key[in_partition].unique()):
            idx = np.flatnonzero(in_partition & (strata_key.to_numpy() == key))
            pools[(partition, key)] = list(rng.permutation(idx))

    def strata_counts(total: int, biased: bool) -> dict[str, int]:
        if bias_attribute is None:
            counts = (biased_class_counts(total, class_names, superclass_of, majority, config.majority_fraction)
                      if biased else balanced_class_counts(total, class_names))
            return counts
        values = sorted(source.attributes[bias_attribute].astype(str).unique())
        shares = ({v: (config.majority_fraction if v == majority else (1 - config.majority_fraction) / (len(values) - 1))
                   for v in values} if biased else {v: 1 / len(values) for v in values})
        counts = {}
        for value in values:
            per_class = split_evenly(int(round(total * shares[value])), len(class_names))
            counts.update({f"{c}|{value}": n for c, n in zip(class_names, per_class)})
        return counts

    chosen: list[tuple[str, int]] = []

    def draw(split: str, partition: str, counts: dict[str, int]) -> None:
        for key, n in counts.items():
            pool = pools.get((partition, key), [])
            if len(pool) < n:
                raise DataError(f"not enough images of {key!r} for split {split!r}: need {n}, {len(pool)} left; "
                                "lower the split sizes")
            chosen.extend((split, int(i)) for i in pool[:n])
            del pool[:n]

    draw("train", "train", strata_counts(config.train_size, biased=True))
    draw("test", "test" if has_test_partition else "train", strata_counts(config.test_size, biased=False))
    draw("audit", "train", strata_counts(config.audit_size, biased=True))
    draw("reference", "train", strata_counts(config.reference_size, biased=False))

    rows = np.array([i for _, i in chosen], dtype=np.int64)
    labels = source.labels[rows]
    prefix = {"fashion_mnist": "fmnist", "cifar10": "cifar10", "celeba": "celeba", "folder": "img"}[source.name]
    manifest = pd.DataFrame({
        "id": ([f"{prefix}-{source.content_ids[i]}" for i in rows] if source.content_ids is not None
               else [f"{prefix}-{source.partition[i]}-{source.source_index[i]:06d}" for i in rows]),
        "split": [s for s, _ in chosen],
        "label": labels,
        "class_name": [class_names[k] for k in labels],
        "superclass": [superclass_of[class_names[k]] for k in labels],
        "origin": "real",
    })
    attributes = list(source.attributes.columns)
    for column in attributes:
        manifest[column] = source.attributes[column].astype(str).to_numpy()[rows]
    if bias_attribute is not None:
        manifest["superclass"] = manifest[bias_attribute]
    # With a per-image bias attribute (CelebA) the superclass is not a function of the class: superclass_of is empty.
    return Dataset(manifest, source.images[rows], class_names, superclass_of if bias_attribute is None else {},
                   attributes, config.stored_record())
