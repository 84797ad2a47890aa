"""Content hashes: DVC-compatible folder md5 and stable config hashes.

``dvc_md5_of_folder`` computes the same ``<md5>.dir`` value that ``dvc add`` writes into a ``.dvc`` file, without
running DVC, so that any run can record the version of the data it read (tests check it against ``dvc add``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def md5_of_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex md5 of a file's bytes."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dvc_md5_of_folder(folder: str | os.PathLike) -> str:
    """DVC 3's directory hash: md5 of the sorted JSON list of ``{"md5", "relpath"}`` entries, plus ``.dir``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(root) / name
            entries.append({"md5": md5_of_file(path), "relpath": path.relative_to(folder).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def config_hash(config: Any, length: int = 12) -> str:
    """A short, stable sha256 of a JSON-serialisable config (keys sorted)."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]
