"""The in-memory data set every component works on: a manifest and the images it describes.

A data set on disk is a folder holding
- ``images.npy``: uint8 array of shape (N, H, W, C), C = 1 (grayscale) or 3 (RGB);
- ``manifest.csv``: one row per image, in the same order, with at least the columns of ``MANIFEST_COLUMNS``
  (``id`` unique; ``split`` one of ``SPLITS``; ``label`` an int index into ``class_names``; ``origin``
  ``real`` or ``synthetic``) plus one column per extra attribute (e.g. CelebA's ``Young``);
- ``meta.json``: ``class_names``, ``superclass_of`` (class name -> superclass), ``attributes`` (extra attribute
  columns), ``image_shape`` and the preparation config.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fairforget.components.atomic import atomic_folder
from fairforget.errors import DataError  # noqa: F401 (re-exported)

MANIFEST_COLUMNS = ("id", "split", "label", "class_name", "superclass", "origin")
SPLITS = ("train", "test", "audit", "reference")
ORIGINS = ("real", "synthetic")
IMAGES_FILE = "images.npy"
MANIFEST_FILE = "manifest.csv"
META_FILE = "meta.json"



@dataclass
class Dataset:
    """A manifest (one row per image) and the images, aligned row by row.

    Guarantees: ``len(manifest) == len(images)``; ``images`` is uint8 (N, H, W, C); ``manifest.label[i]`` indexes
    ``class_names``; ``superclass_of`` maps every class name to its superclass.
    """

    manifest: pd.DataFrame
    images: np.ndarray
    class_names: list[str]
    superclass_of: dict[str, str]
    attributes: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.manifest) != len(self.images):
            raise DataError(
                f"manifest has {len(self.manifest)} rows but images has {len(self.images)}: they must be aligned"
            )
        self.manifest = self.manifest.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def labels(self) -> np.ndarray:
        """int64 (N,) class indices."""
        return self.manifest["label"].to_numpy(dtype=np.int64)

    @property
    def ids(self) -> np.ndarray:
        """(N,) sample ids (str)."""
        return self.manifest["id"].to_numpy(dtype=object)

    @property
    def superclasses(self) -> list[str]:
        """Sorted distinct superclass names."""
        return sorted(set(self.superclass_of.values()))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def select(self, mask: np.ndarray | pd.Series) -> "Dataset":
        """The rows where ``mask`` (bool, shape (N,)) is true, in their order."""
        keep = np.asarray(mask, dtype=bool)
        return Dataset(
            self.manifest[keep].reset_index(drop=True),
            self.images[keep],
            self.class_names,
            self.superclass_of,
            self.attributes,
            self.config,
        )

    def split(self, name: str) -> "Dataset":
        """The rows of one split (``train``, ``test``, ``audit`` or ``reference``)."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; known splits: {', '.join(SPLITS)}")
        return self.select(self.manifest["split"].to_numpy() == name)

    def by_ids(self, ids) -> "Dataset":
        """The rows with the given ids, in the order given. Unknown ids raise ``DataError`` naming a few."""
        position = pd.Series(np.arange(len(self)), index=self.manifest["id"].to_numpy())
        ids = list(ids)
        missing = [i for i in ids if i not in position.index]
        if missing:
            raise DataError(f"{len(missing)} unknown sample ids, e.g. {missing[:3]}: check the id file")
        rows = position.loc[ids].to_numpy()
        return Dataset(
            self.manifest.iloc[rows].reset_index(drop=True),
            self.images[rows],
            self.class_names,
            self.superclass_of,
            self.attributes,
            self.config,
        )

    def concat(self, other: "Dataset") -> "Dataset":
        """This data set followed by ``other`` (same classes and image shape; ids must stay unique)."""
        if other.class_names != self.class_names:
            raise DataError("cannot concatenate data sets with different class lists")
        if other.images.shape[1:] != self.images.shape[1:]:
            raise DataError(f"image shapes differ: {self.images.shape[1:]} vs {other.images.shape[1:]}")
        manifest = pd.concat([self.manifest, other.manifest], ignore_index=True)
        if manifest["id"].duplicated().any():
            dup = manifest.loc[manifest["id"].duplicated(), "id"].iloc[0]
            raise DataError(f"duplicate sample id {dup!r} after concatenation")
        return Dataset(
            manifest,
            np.concatenate([self.images, other.images]),
            self.class_names,
            self.superclass_of,
            self.attributes,
            self.config,
        )

    def to_float_tensor_array(self) -> np.ndarray:
        """float32 (N, C, H, W) in [0, 1]: the layout torch models take."""
        return self.images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def save_dataset(dataset: Dataset, folder: str | os.PathLike) -> Path:
    """Write ``dataset`` to ``folder`` atomically: a temporary sibling folder is written, then renamed.

    The files are byte-identical for identical inputs (no timestamps, sorted JSON keys, ``\\n`` line ends).

    Args:
        dataset: what to write.
        folder: the target folder; an existing one is replaced only once the new one is complete.

    Returns:
        ``folder`` as a ``Path``.
    """
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        write_dataset_files(dataset, tmp)
    return folder


def write_dataset_files(dataset: Dataset, folder: Path) -> None:
    """Write the three files of ``dataset`` into the existing ``folder`` as they come (not atomic: for a folder
    that nothing reads yet, such as the one ``atomic_folder`` yields)."""
    np.save(folder / IMAGES_FILE, np.ascontiguousarray(dataset.images, dtype=np.uint8), allow_pickle=False)
    dataset.manifest.to_csv(folder / MANIFEST_FILE, index=False, lineterminator="\n")
    meta = {
        "class_names": dataset.class_names,
        "superclass_of": dataset.superclass_of,
        "attributes": dataset.attributes,
        "image_shape": list(dataset.images.shape[1:]),
        "config": dataset.config,
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_dataset(folder: str | os.PathLike) -> Dataset:
    """Read a data set written by ``save_dataset`` (or prepared by the ``prepare`` step).

    Args:
        folder: the data folder (``images.npy``, ``manifest.csv``, ``meta.json``).

    Returns:
        The ``Dataset``: images uint8 (N, H, W, C) aligned with the manifest rows.

    Raises:
        DataError: the folder is missing a file or its files disagree; the message says how to get the data.
    """
    folder = Path(folder)
    for name in (IMAGES_FILE, MANIFEST_FILE, META_FILE):
        if not (folder / name).is_file():
            raise DataError(
                f"{folder / name} is missing: prepare the data first (`make run`, or "
                f"`mlflow run . -e prepare --env-manager local`), or `dvc pull` it"
            )
    meta = json.loads((folder / META_FILE).read_text())
    # every column as written: text (no NA guessing, so a value "None" or "NA" stays itself, and "01" stays apart
    # from "1"), except the integer label
    manifest = pd.read_csv(folder / MANIFEST_FILE, dtype=str, keep_default_na=False)
    if "label" in manifest.columns:
        try:
            manifest["label"] = manifest["label"].astype(np.int64)
        except ValueError as err:
            raise DataError(f"{folder / MANIFEST_FILE} has a label that is not an integer ({err}): prepare the data "
                            "again") from err
    try:
        images = np.load(folder / IMAGES_FILE, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataError(f"{folder / IMAGES_FILE} is unreadable ({err}): prepare the data again") from err
    return Dataset(manifest, images, list(meta["class_names"]), dict(meta["superclass_of"]),
                   list(meta.get("attributes", [])), dict(meta.get("config", {})))


def make_toy_dataset(
    per_class_train: tuple[int, ...] = (24, 24, 8, 8),
    per_class_other: int = 8,
    image_size: int = 8,
    channels: int = 1,
    seed: int = 0,
) -> Dataset:
    """A tiny synthetic data set for tests: 4 classes in 2 superclasses, learnable blob patterns.

    Class k's images are a bright square at a class-specific position plus noise, so a small CNN learns them in
    a few epochs. ``per_class_train`` sets the (biased) train counts per class; every other split gets
    ``per_class_other`` per class. Superclasses: ``big`` = classes a, b; ``small`` = classes c, d.
    """
    rng = np.random.default_rng(seed)
    class_names = ["a", "b", "c", "d"]
    superclass_of = {"a": "big", "b": "big", "c": "small", "d": "small"}
    rows, images = [], []
    half = image_size // 2
    corners = [(0, 0), (0, half), (half, 0), (half, half)]
    for split in SPLITS:
        counts = per_class_train if split == "train" else (per_class_other,) * 4
        for label, count in enumerate(counts):
            for j in range(count):
                img = rng.normal(40, 20, size=(image_size, image_size, channels))
                r, c = corners[label]
                img[r:r + half, c:c + half] += 160
                images.append(np.clip(img, 0, 255).astype(np.uint8))
                rows.append({"id": f"toy-{split}-{label}-{j:04d}", "split": split, "label": label,
                             "class_name": class_names[label], "superclass": superclass_of[class_names[label]],
                             "origin": "real"})
    return Dataset(pd.DataFrame(rows), np.stack(images), class_names, superclass_of, [], {"dataset": "toy"})


def read_ids(path: str | Path) -> list[str]:
    """Sample ids from a text file (one per line; blank lines and lines starting with ``#`` ignored) or a CSV with an
    ``id`` column. Raises ``DataError`` for a missing file, a CSV without ``id``, no ids, or an id listed twice."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"the id file {path} does not exist: give a file with one sample id per line")
    if path.suffix.lower() == ".csv":
        table = pd.read_csv(path, dtype=str)
        if "id" not in table.columns:
            raise DataError(f"{path} has no 'id' column; columns: {list(table.columns)}")
        ids = table["id"].dropna().str.strip().tolist()
    else:
        ids = [line.strip() for line in path.read_text().splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise DataError(f"{path} holds no ids: put one sample id per line")
    duplicates = sorted(pd.Series(ids)[pd.Series(ids).duplicated()].unique())
    if duplicates:
        raise DataError(f"{path} lists ids more than once, e.g. {duplicates[:3]}: remove the repeats")
    return ids
