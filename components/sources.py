"""Raw image sources, read from local files only (nothing is ever downloaded).

Each reader returns a ``SourceImages``: all images of the source with labels, class names, superclasses, any
extra attributes, and which of the source's own partitions (``train``/``test``) each image came from.

| name            | what to put where                                                                        |
|-----------------|------------------------------------------------------------------------------------------|
| ``fashion_mnist`` | the four IDX files (``train-images-idx3-ubyte.gz``, ...) in ``source_dir`` (default: Debian's ``/usr/share/datasets/fashion-mnist``, package ``dataset-fashion-mnist``) |
| ``cifar10``     | the CIFAR-10 python folder ``cifar-10-batches-py/`` inside ``source_dir``                 |
| ``celeba``      | ``img_align_celeba/`` and ``list_attr_celeba.txt`` inside ``source_dir``                  |
| ``folder``      | ``source_dir/<class>/*.png|jpg``; optional ``superclasses.json`` {class: superclass} and ``attributes.csv`` (column ``file`` = path relative to ``source_dir``, one column per attribute) |

A ``folder``'s record ids come from each file's bytes (``content_ids``), so adding or renaming files never changes
another record's id. The ``folder`` source is checked before any image is decoded, and each problem is a
``DataError`` naming the file, line or name and the fix:

- at least two class sub-folders (hidden ones, starting with ``.``, are skipped), each holding at least one image
  (suffixes ``IMAGE_SUFFIXES``; hidden files skipped);
- ``superclasses.json``: one JSON object {class folder: superclass}; classes it leaves out are their own superclass;
  it must name only existing class folders and leave at least two superclasses (debiasing moves images between
  superclasses; without the file every class is its own superclass);
- names: class folders, superclasses and attribute columns become parts of MLflow metric names
  (``acc/class/<class>``, ``acc/<superclass>``, ``bias/kl/<attribute>``), so each must be at most
  ``MAX_NAME_LENGTH`` characters of letters, digits, ``_``, ``-``, ``.`` and spaces (MLflow's portable set less the
  ``/``, which would nest metrics), and not ``.`` or ``..``; a name outside that is refused, never rewritten
  (per-class metric names write a space as ``_``: ``fairness.safe_name``);
- ``attributes.csv`` (UTF-8, comma-separated, a header line): a ``file`` column naming each image exactly once by
  its path relative to ``source_dir`` (``bag/0.png``); a repeated file, a file that is no image of the folder, an
  image without a row, a row with too many or too few fields, and attribute columns that are unnamed, repeated or
  named like a manifest column (``MANIFEST_COLUMNS``) are refused. Cells are stripped of surrounding spaces. An
  empty cell or an NA marker (``MISSING_MARKERS``: NA, N/A, NaN, null, <NA>, #N/A, any case) is refused unless
  ``missing_value`` names a category for them: they become that category and their count is logged (warning);
- images: each at most ``MAX_IMAGE_PIXELS`` pixels (width x height, read from the header before decoding, so a
  decompression bomb is refused without being decompressed). They are decoded one at a time into the final array
  (a folder of large photos prepares in memory for the resized images only), each centre-cropped to a square
  (the shorter side) and resized to ``image_size`` x ``image_size``: by default ``DEFAULT_FOLDER_IMAGE_SIZE``, or
  the smallest image's shorter side when that is smaller (never upscaled by default). The folder is RGB when any
  image has colour, else grayscale.

Every model works at any ``image_size`` from ``MIN_IMAGE_SIZE`` to ``MAX_IMAGE_SIZE`` and with 1 or 3 channels:
the classifiers pool adaptively and the autoencoder resizes its output to the input size (tested at 16, 28, 32,
53 and 64 pixels). Other sources are resized (centre-cropped first) when ``image_size`` differs from theirs.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
import posixpath
import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from fairforget.components.dataset import MANIFEST_COLUMNS, DataError
from fairforget.errors import ConfigError

log = logging.getLogger(__name__)

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
# The largest image accepted (width x height): 16.8 M pixels, far above what the models use (28 x 28 to 218 x 178)
# and below Pillow's own decompression-bomb warning (89 M). Checked from the header, before decoding.
MAX_IMAGE_PIXELS = 4096 * 4096
DEFAULT_FOLDER_IMAGE_SIZE = 32  # square side a folder is resized to when image_size is not given
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 4, 128  # the sizes every model is built and tested for
# Cell values of attributes.csv read as "no value" (compared without case, after stripping spaces).
MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "<na>", "#n/a"})
# Class, superclass and attribute names end up in MLflow metric names; two may be joined in one (bias/kl/<a> x <b>)
# under MLflow's 250-character key limit.
MAX_NAME_LENGTH = 100
_NAME_PATTERN = re.compile(r"[\w.\- ]+")
SUPERCLASSES_FILE = "superclasses.json"
ATTRIBUTES_FILE = "attributes.csv"


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
    content_ids: np.ndarray | None = None  # (N,) ids derived from each file's bytes (folders), else None


def content_ids(files: list[Path]) -> np.ndarray:
    """One id per file from its bytes: the first 16 hex digits of its SHA-256, so adding, removing or renaming other
    files never changes it (the deletion ledger keeps naming the same image). Files with identical bytes get
    ``-2``, ``-3``, ... after the first, in the given order."""
    import hashlib

    seen: dict[str, int] = {}
    out = []
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        seen[digest] = seen.get(digest, 0) + 1
        out.append(digest if seen[digest] == 1 else f"{digest}-{seen[digest]}")
    return np.array(out)


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


GRAY_MODES = {"L", "1", "I;16", "I", "F", "LA"}


def _probe_image(path: Path) -> tuple[int, int, bool]:
    """(width, height, has colour) of the image at ``path``, from its header only; its pixel count is checked
    against ``MAX_IMAGE_PIXELS`` before anything is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                colour = img.mode not in GRAY_MODES
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"{path} is refused as a possible decompression bomb ({err}): shrink it or remove it") from err
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path} is not a readable image ({err}): remove or replace it") from err
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"{path} is {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS} pixels "
                        "per image (a guard against decompression bombs): shrink it or remove it")
    return width, height, colour


def square_resized(img, size: int):
    """A PIL image centre-cropped to a square (its shorter side) and resized to ``size`` x ``size`` (bilinear)."""
    from PIL import Image

    width, height = img.size
    if width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        img = img.crop((left, top, left + side, top + side))
    return img if img.size == (size, size) else img.resize((size, size), Image.BILINEAR)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> uint8 (N, size, size, C), each image centre-cropped to a square and resized."""
    from PIL import Image

    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, images.shape[-1]), dtype=np.uint8)
    for i, image in enumerate(images):
        resized = np.asarray(square_resized(Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image),
                                            size), dtype=np.uint8)
        out[i] = resized.reshape(size, size, images.shape[-1])
    return out


def check_image_size(image_size: int | None) -> None:
    """Raise ``DataError`` unless ``image_size`` is None or an int in [MIN_IMAGE_SIZE, MAX_IMAGE_SIZE]."""
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool)
                                   or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE):
        raise DataError(f"image_size must be an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} (the sizes every "
                        f"model is built and tested for), got {image_size!r}: e.g. 32, or leave it empty")


def _load_image(path: Path, size: int | None, mode: str | None) -> np.ndarray:
    """The image at ``path`` as uint8 (H, W, C), converted to ``mode`` (``L`` or ``RGB``; None: ``L`` for a
    grayscale file, else ``RGB``) and, when ``size`` is given, centre-cropped to a square and resized to ``size`` x
    ``size``. Its pixel count is checked against ``MAX_IMAGE_PIXELS`` from the header, before anything is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise DataError(f"{path} is {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS} pixels "
                                    "per image (a guard against decompression bombs): shrink it or remove it")
                img = img.convert(mode or ("L" if img.mode in GRAY_MODES else "RGB"))
                if size is not None:
                    img = square_resized(img, size)
                array = np.asarray(img, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"{path} is refused as a possible decompression bomb ({err}): shrink it or remove it") from err
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


def check_name(name: str, what: str, fix: str) -> str:
    """Return ``name`` when MLflow can use it inside a metric name (see the module docstring), else raise a
    ``DataError`` naming ``what`` it is and the ``fix``."""
    if (len(name) > MAX_NAME_LENGTH or not _NAME_PATTERN.fullmatch(name)
            or posixpath.normpath(f"x/{name}/x") != f"x/{name}/x"):
        raise DataError(f"{what} {name!r} cannot be part of an MLflow metric name: use at most {MAX_NAME_LENGTH} "
                        f"letters, digits, '_', '-', '.' and spaces, and not '.' or '..'; {fix}")
    return name


def read_folder(source_dir: str | None, image_size: int | None = None, *,
                missing_value: str | None = None) -> SourceImages:
    """An image folder of one's own: ``source_dir/<class>/<image>``, with optional ``superclasses.json`` and
    ``attributes.csv`` (the rules and checks are in the module docstring).

    Args:
        source_dir: the folder.
        image_size: the square side every image is centre-cropped and resized to (None:
            ``DEFAULT_FOLDER_IMAGE_SIZE``, or the smallest image's shorter side when smaller).
        missing_value: the category given to empty or NA cells of ``attributes.csv``; None refuses them.

    Returns:
        ``SourceImages`` with every image in partition ``train``, in class then file-name order.

    Raises:
        DataError: the folder breaks one of the rules; the message names the file, line or name and the fix.
    """
    if not source_dir:
        raise DataError("dataset folder needs source_dir: a folder with one sub-folder of images per class")
    root = _require(Path(source_dir), "give a folder with one sub-folder of images per class")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder: give a folder with one sub-folder of images per class")
    class_names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_names) < 2:
        found = f" ({class_names[0]!r})" if class_names else ""
        raise DataError(f"{root} has {len(class_names)} class sub-folders{found}; an image folder needs at least 2: "
                        f"put each class's images in its own sub-folder, {root}/<class>/<image>.png")
    for name in class_names:
        check_name(name, "class folder", f"rename {root / name}")
    files, labels = [], []
    for label, name in enumerate(class_names):
        found = [p for p in sorted((root / name).iterdir())
                 if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")]
        if not found:
            raise DataError(f"class folder {root / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): "
                            "add its images or remove the folder")
        files.extend(found)
        labels.extend([label] * len(found))
    superclass_of = _read_superclasses(root, class_names)
    relpaths = [p.relative_to(root).as_posix() for p in files]
    attributes = pd.DataFrame(index=range(len(files)))
    if (root / ATTRIBUTES_FILE).is_file():
        attributes = _read_attributes(root / ATTRIBUTES_FILE, relpaths, missing_value)
    check_image_size(image_size)
    probes = [_probe_image(p) for p in files]  # headers only: every image is checked before any is decoded
    size = image_size or min(DEFAULT_FOLDER_IMAGE_SIZE, min(min(w, h) for w, h, _ in probes))
    if size < MIN_IMAGE_SIZE:
        raise DataError(f"{root} holds images smaller than {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels: remove them, or "
                        f"give image_size ({MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}) to upscale")
    mode = "RGB" if any(colour for _, _, colour in probes) else "L"
    images = np.empty((len(files), size, size, 3 if mode == "RGB" else 1), dtype=np.uint8)
    for i, path in enumerate(files):  # one image decoded at a time
        images[i] = _load_image(path, size, mode)
    n = len(files)
    return SourceImages("folder", images, np.asarray(labels, dtype=np.int64), class_names, superclass_of,
                        np.array(["train"] * n), np.arange(n), attributes, content_ids=content_ids(files))


def _read_superclasses(root: Path, class_names: list[str]) -> dict[str, str]:
    """{class: superclass}: each class its own unless ``superclasses.json`` maps it; at least two superclasses."""
    superclass_of = {c: c for c in class_names}
    path = root / SUPERCLASSES_FILE
    if path.is_file():
        example = json.dumps({class_names[0]: "group_a", class_names[1]: "group_b"})
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{path} is not valid JSON ({err}): write one object {{class: superclass}}, "
                            f"e.g. {example}") from err
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise DataError(f"{path} must hold one JSON object mapping class folders to superclass names, "
                            f"e.g. {example}")
        unknown = sorted(set(mapping) - set(class_names))
        if unknown:
            raise DataError(f"{SUPERCLASSES_FILE} names classes {unknown} that have no folder in {root}: "
                            f"known classes: {class_names}")
        superclass_of.update(mapping)
        for superclass in sorted(set(mapping.values())):
            check_name(superclass, "superclass", f"rename it in {path}")
    superclasses = sorted(set(superclass_of.values()))
    if len(superclasses) < 2:
        raise DataError(f"{path} puts every class in superclass {superclasses[0]!r}; debiasing needs at least two "
                        f"superclasses: map the classes onto two or more, or delete {SUPERCLASSES_FILE} to make "
                        "each class its own superclass")
    return superclass_of


def _read_attributes(path: Path, relpaths: list[str], missing_value: str | None) -> pd.DataFrame:
    """The attribute columns of ``attributes.csv`` (N, A), row i for image ``relpaths[i]``, as strings."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            lines = [(reader.line_num, row) for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path} is not a readable UTF-8 CSV file ({err}): save it as UTF-8 CSV") from err
    if not lines:
        raise DataError(f"{path} is empty: write a header line 'file,<attribute>,...' and one row per image")
    header = [name.strip() for name in lines[0][1]]
    if "file" not in header:
        raise DataError(f"{path} has no 'file' column (header: {header}): name the column of image paths "
                        f"(relative to the folder, e.g. {relpaths[0]!r}) 'file'")
    for position, name in enumerate(header, start=1):
        if not name:
            raise DataError(f"{path}: column {position} of the header has no name: name it or remove it")
        if header.count(name) > 1:
            raise DataError(f"{path}: column {name!r} appears {header.count(name)} times in the header: "
                            "keep one column per attribute")
        if name != "file":
            if name in MANIFEST_COLUMNS:
                raise DataError(f"{path}: column {name!r} would overwrite the manifest's own column of that name: "
                                "rename it")
            check_name(name, "attribute column", f"rename the column in {path}")
    rows, line_of = [], []
    for line, row in lines[1:]:
        if len(row) != len(header):
            raise DataError(f"{path} line {line} has {len(row)} fields but the header has {len(header)}: "
                            "give every row one value per column (quote values that hold commas)")
        rows.append([value.strip() for value in row])
        line_of.append(line)
    table = pd.DataFrame(rows, columns=header, dtype=object)
    table["file"] = [posixpath.normpath(f) if f else f for f in table["file"]]

    lines_of_file: dict[str, list[int]] = {}
    for name, line in zip(table["file"], line_of):
        lines_of_file.setdefault(name, []).append(line)
    if "" in lines_of_file:
        raise DataError(f"{path} line {lines_of_file[''][0]} has no file name: give the image's path or remove "
                        "the row")
    repeated = {name: at for name, at in lines_of_file.items() if len(at) > 1}
    if repeated:
        name, at = next(iter(repeated.items()))
        more = f"; {len(repeated) - 1} more files are repeated" if len(repeated) > 1 else ""
        raise DataError(f"{path} lists {name!r} {len(at)} times (lines {', '.join(map(str, at))}{more}): keep one "
                        "row per image")
    images = set(relpaths)
    strangers = [name for name in lines_of_file if name not in images]
    if strangers:
        more = f"; {len(strangers) - 1} more rows name no image" if len(strangers) > 1 else ""
        raise DataError(f"{path} line {lines_of_file[strangers[0]][0]} names {strangers[0]!r}, which is not an "
                        f"image of {path.parent}{more}: give the path relative to the folder (e.g. "
                        f"{relpaths[0]!r}), or remove the row")
    missing = [r for r in relpaths if r not in lines_of_file]
    if missing:
        raise DataError(f"{path} has no row for {len(missing)} images, e.g. {missing[:2]}: add one row per image")

    columns = [c for c in header if c != "file"]
    for column in columns:
        empty = table[column].str.lower().isin(MISSING_MARKERS).to_numpy()
        if not empty.any():
            continue
        if missing_value is None:
            first = line_of[int(np.flatnonzero(empty)[0])]
            raise DataError(f"{path} column {column!r} has {int(empty.sum())} empty or NA values (first on line "
                            f"{first}): fill them in, or give missing_value (--missing-value / -P "
                            "missing_value=<category>) to put them in a category of their own")
        table.loc[empty, column] = missing_value
        log.warning("%s: %d empty or NA values of %r put in category %r (missing_value)", path, int(empty.sum()),
                    column, missing_value)
    return table.set_index("file").loc[relpaths, columns].reset_index(drop=True).astype(str)


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
