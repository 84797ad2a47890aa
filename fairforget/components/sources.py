"""Raw image sources, read from local files only (nothing is ever downloaded).

Each reader returns a ``SourceImages``: all images of the source with labels, class names, superclasses, any
extra attributes, and which of the source's own partitions (``train``/``test``) each image came from.

| name            | what to put where                                                                        |
|-----------------|------------------------------------------------------------------------------------------|
| ``fashion_mnist`` | the four IDX files (``train-images-idx3-ubyte.gz``, ...) in ``source_dir`` (default: Debian's ``/usr/share/datasets/fashion-mnist``, package ``dataset-fashion-mnist``) |
| ``cifar10``     | the CIFAR-10 python folder ``cifar-10-batches-py/`` inside ``source_dir``                 |
| ``celeba``      | ``img_align_celeba/`` and ``list_attr_celeba.txt`` inside ``source_dir``                  |
| ``folder``      | ``source_dir/<class>/*.png|jpg``; optional ``superclasses.json`` {class: superclass} and ``attributes.csv`` (column ``file`` = path relative to ``source_dir``, one column per attribute) |
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from fairforget.components.dataset import DataError
from fairforget.errors import ConfigError

FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
# In label order (0..9), as Fashion-MNIST defines them.
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
FASHION_MNIST_SUPERCLASSES = {name: ("accessories" if name in {"Sandal", "Sneaker", "Bag", "Ankle boot"} else "apparel")
                              for name in FASHION_MNIST_CLASSES}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_SUPERCLASSES = {name: ("vehicles" if name in {"airplane", "automobile", "ship", "truck"} else "animals")
                        for name in CIFAR10_CLASSES}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@dataclass
class SourceImages:
    """All images of a source. ``images`` uint8 (N, H, W, C); ``labels`` int64 (N,); ``partition`` (N,) of
    ``train``/``test`` (the source's own split); ``source_index`` (N,) position within that partition;
    ``attributes`` a DataFrame (N, A) of extra categorical attributes (may have no columns)."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    superclass_of: dict[str, str]
    partition: np.ndarray
    source_index: np.ndarray
    attributes: pd.DataFrame = field(default_factory=pd.DataFrame)
    default_majority: str | None = None


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{path} is missing: {what}")
    return path


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file into a uint8 array of the shape its header declares."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ConfigError("not an unsigned-byte IDX file")
        shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
        array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return array.reshape(shape).copy()
    except (OSError, ValueError, struct.error, EOFError) as err:
        raise DataError(f"{path} is corrupt or not an IDX file ({err}): reinstall dataset-fashion-mnist") from err


def read_fashion_mnist(source_dir: str | None = None) -> SourceImages:
    root = Path(source_dir or FASHION_MNIST_DEFAULT_DIR)
    hint = ("install Debian's package as root (`apt-get install dataset-fashion-mnist`), or pass source_dir with "
            "the four IDX .gz files")
    _require(root, hint)
    parts = []
    for partition, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_require(root / f"{prefix}-images-idx3-ubyte.gz", hint))
        labels = read_idx(_require(root / f"{prefix}-labels-idx1-ubyte.gz", hint))
        if len(images) != len(labels):
            raise DataError(f"{root}: {prefix} has {len(images)} images but {len(labels)} labels: the files are corrupt")
        parts.append((partition, images, labels))
    return SourceImages(
        "fashion_mnist",
        np.concatenate([p[1] for p in parts])[..., None],
        np.concatenate([p[2] for p in parts]).astype(np.int64),
        FASHION_MNIST_CLASSES, FASHION_MNIST_SUPERCLASSES,
        np.concatenate([[p[0]] * len(p[1]) for p in parts]),
        np.concatenate([np.arange(len(p[1])) for p in parts]),
        default_majority="accessories",
    )


def read_cifar10(source_dir: str | None) -> SourceImages:
    if not source_dir:
        raise DataError("dataset cifar10 needs source_dir: a folder holding cifar-10-batches-py/ (the python version)")
    root = Path(source_dir)
    _require(root / "cifar-10-batches-py", "put the extracted CIFAR-10 python version (cifar-10-batches-py/) there")
    from torchvision.datasets import CIFAR10

    parts = []
    for partition, train in (("train", True), ("test", False)):
        try:
            data = CIFAR10(str(root), train=train, download=False)
        except RuntimeError as err:
            raise DataError(f"{root}/cifar-10-batches-py is incomplete or corrupt ({err}): extract it again") from err
        parts.append((partition, np.asarray(data.data, dtype=np.uint8), np.asarray(data.targets, dtype=np.int64)))
    return SourceImages(
        "cifar10", np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]),
        CIFAR10_CLASSES, CIFAR10_SUPERCLASSES,
        np.concatenate([[p[0]] * len(p[1]) for p in parts]),
        np.concatenate([np.arange(len(p[1])) for p in parts]),
        default_majority="vehicles",
    )


def _load_image(path: Path, size: int | None, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if size is not None:
                img = img.resize((size, size), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path} is not a readable image ({err}): remove or replace it") from err
    return array[..., None] if array.ndim == 2 else array


def read_celeba(source_dir: str | None, target_attribute: str = "Smiling", bias_attribute: str = "Young",
                image_size: int = 32, limit: int | None = 60000) -> SourceImages:
    """CelebA: the label is ``target_attribute`` (2 classes), the superclass is ``bias_attribute``'s value."""
    if not source_dir:
        raise DataError("dataset celeba needs source_dir: a folder with img_align_celeba/ and list_attr_celeba.txt")
    root = Path(source_dir)
    attr_file = _require(root / "list_attr_celeba.txt", "put CelebA's attribute file list_attr_celeba.txt there")
    image_dir = _require(root / "img_align_celeba", "put CelebA's aligned images (img_align_celeba/) there")
    table = pd.read_csv(attr_file, sep=r"\s+", skiprows=1)
    for column in (target_attribute, bias_attribute):
        if column not in table.columns:
            raise DataError(f"CelebA has no attribute {column!r}; known: {', '.join(table.columns)}")
    if limit is not None:
        table = table.iloc[:limit]
    images = np.stack([_load_image(image_dir / name, image_size, "RGB") for name in table.index])
    labels = (table[target_attribute].to_numpy() > 0).astype(np.int64)
    class_names = [f"not_{target_attribute}", target_attribute]
    bias_values = np.where(table[bias_attribute].to_numpy() > 0, bias_attribute, f"not_{bias_attribute}")
    # Superclass = the bias attribute's value, so it is a per-image attribute rather than a function of class.
    attributes = pd.DataFrame({bias_attribute: bias_values})
    n = len(table)
    return SourceImages("celeba", images, labels, class_names, {c: c for c in class_names},
                        np.array(["train"] * n), np.arange(n), attributes, default_majority=bias_attribute)


def read_folder(source_dir: str | None, image_size: int | None = None) -> SourceImages:
    if not source_dir:
        raise DataError("dataset folder needs source_dir: a folder with one sub-folder of images per class")
    root = _require(Path(source_dir), "give a folder with one sub-folder of images per class")
    class_names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_names) < 2:
        raise DataError(f"{root} has {len(class_names)} class sub-folders; an image folder needs at least 2")
    files, labels = [], []
    for label, name in enumerate(class_names):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
                labels.append(label)
    first = _load_image(files[0], image_size, "RGB")
    mode = "L" if _is_gray(files[0]) else "RGB"
    images = np.stack([_load_image(p, image_size or first.shape[0], mode) for p in files])
    superclass_of = {c: c for c in class_names}
    if (root / "superclasses.json").is_file():
        mapping = json.loads((root / "superclasses.json").read_text())
        unknown = sorted(set(mapping) - set(class_names))
        if unknown:
            raise DataError(f"superclasses.json names classes {unknown} that have no folder in {root}")
        superclass_of.update({str(k): str(v) for k, v in mapping.items()})
    attributes = pd.DataFrame(index=range(len(files)))
    if (root / "attributes.csv").is_file():
        table = pd.read_csv(root / "attributes.csv", dtype=str).set_index("file")
        relpaths = [p.relative_to(root).as_posix() for p in files]
        missing = [r for r in relpaths if r not in table.index]
        if missing:
            raise DataError(f"attributes.csv has no row for {len(missing)} images, e.g. {missing[:2]}")
        attributes = table.loc[relpaths].reset_index(drop=True)
    n = len(files)
    return SourceImages("folder", images, np.asarray(labels, dtype=np.int64), class_names, superclass_of,
                        np.array(["train"] * n), np.arange(n), attributes)


def _is_gray(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as img:
        return img.mode in {"L", "1", "I;16"}


SOURCES: dict[str, Callable[..., SourceImages]] = {
    "fashion_mnist": read_fashion_mnist,
    "cifar10": read_cifar10,
    "celeba": read_celeba,
    "folder": read_folder,
}


def read_source(name: str, source_dir: str | os.PathLike | None = None, **options) -> SourceImages:
    """Read the source ``name`` from ``source_dir``; unknown names raise ``DataError`` listing the known ones."""
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name](str(source_dir) if source_dir else None, **options)
