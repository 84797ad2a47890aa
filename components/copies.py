"""Find copies of images by content: the proof behind a deletion report.

A deleted record is "gone" from a store when no array in it holds its pixels. Every image array this project
writes is a NumPy ``.npy`` file of uint8 images (N, H, W, C) (``images.npy`` of a data folder, a state folder's
``augmented/`` and ``synthetic/``, a run's ``augmented/synthetic/`` artifact, DVC's cache and remote objects, which
are the same files renamed by their md5). ``find_copies`` opens every file of a folder tree that starts with the
NumPy magic, whatever its name, and compares the SHA-256 of each of its images with the digests of the deleted
images. A file it cannot read as an array of images is reported as skipped, never as clean.

What this does not see, by construction: images re-encoded into figures (PNG), and what a model learned from an
image (weights). The deletion report names those channels separately (docs/deletion.md).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NPY_MAGIC = b"\x93NUMPY"


def image_digest(image: np.ndarray) -> str:
    """The SHA-256 (hex) of one uint8 image (H, W, C), over its C-contiguous bytes."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def image_digests(images: np.ndarray) -> set[str]:
    """``image_digest`` of each image of uint8 (N, H, W, C)."""
    return {image_digest(image) for image in images}


@dataclass
class StoreScan:
    """What ``find_copies`` found under one folder: ``copies`` {relative path: images matching a digest},
    ``arrays`` the number of image arrays compared, ``skipped`` {relative path: why}."""

    root: str
    copies: dict[str, int] = field(default_factory=dict)
    arrays: int = 0
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.copies.values())

    def as_dict(self) -> dict:
        return {"root": self.root, "arrays_compared": self.arrays, "copies": self.total,
                "files_with_copies": dict(sorted(self.copies.items())), "skipped": dict(sorted(self.skipped.items()))}


def _is_npy(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(NPY_MAGIC)) == NPY_MAGIC
    except OSError:
        return False


def find_copies(root: str | os.PathLike, digests: set[str], image_shape: tuple[int, int, int]) -> StoreScan:
    """Every image of shape ``image_shape`` (H, W, C) in every ``.npy`` file under ``root`` (any name, symlinks not
    followed), compared by SHA-256 with ``digests``. A missing ``root`` is an empty store."""
    root = Path(root)
    scan = StoreScan(str(root))
    if not root.exists():
        return scan
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    for path in files:
        if not _is_npy(path):
            continue
        name = path.name if path == root else path.relative_to(root).as_posix()
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            scan.skipped[name] = f"unreadable: {err}"
            continue
        if array.dtype != np.uint8 or array.ndim != 4:
            continue  # not an image array (checkpoints, scores, ...)
        if tuple(array.shape[1:]) != tuple(image_shape):
            scan.skipped[name] = f"images of another shape {tuple(array.shape[1:])}"
            continue
        scan.arrays += 1
        found = sum(image_digest(image) in digests for image in array)
        if found:
            scan.copies[name] = int(found)
    return scan
