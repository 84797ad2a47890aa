"""Atomic writes, one convention for every file and folder that must never be seen half written.

A file is written to a temporary sibling (``.<name>.tmp-<random>``), fsynced, renamed over the target, and the
folder is fsynced; a folder is filled as a temporary sibling (``.<name>.tmp-<random>``), its files fsynced, then
swapped in (the old one renamed to ``.<name>.old-<pid>`` first and removed last). A reader, or a process restarted
after ``kill -9``, sees the old content or the new, never a part; a failed writer leaves the target as it was and
removes its temporary. Staging names are fixed so that a purge can find what a killed writer left
(``pipelines/deletion_report.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path for a writer that needs a file name (``torch.save``, an exporter); once the
    block ends it is fsynced and renamed to ``path``; if the block raises, it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Replace the file at ``path`` with ``data`` atomically (its folder is created when missing)."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Replace the file at ``path`` with ``text`` atomically (its folder is created when missing)."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_json_atomically(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented JSON with sorted keys (floats for NumPy numbers), written atomically."""
    write_text_atomically(path, json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success its files are fsynced and it replaces ``folder``
    (``replace_folder``); on failure it is removed and ``folder`` is left as it was. A ``folder`` reached through a
    symbolic link (``data -> volume/data``) is replaced where the link points, and the link stays."""
    folder = Path(folder).resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                _fsync_file(file)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target``: the old ``target`` is renamed away first and removed last."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
    new.rename(target)
    fsync_folder(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename or removal in ``folder`` durable."""
    if Path(folder).is_dir():
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
