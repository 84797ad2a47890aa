"""One writer at a time: an exclusive, non-blocking file lock (``fcntl.flock``) per folder or registered model.

A second ``main`` on the same state folder, a second ``forget`` on the same champion, or two writers of the same
data folder get ``Busy`` at once (one line: who holds it and what to do) instead of corrupting each other's files.
The lock lives in a ``.lock`` file; the operating system releases it when its holder exits, even on ``kill -9``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from fairforget.errors import FairforgetError


class Busy(FairforgetError, RuntimeError):
    """Another process holds the lock of what this one wants to write."""


@contextlib.contextmanager
def exclusive(lock_file: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold the lock ``lock_file`` for the block; raise ``Busy`` naming ``what`` when another process holds it."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_file, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise Busy(f"{what} is being written by {holder}: wait for it to finish (or stop it) and run again") \
                from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def data_lock(data_dir: str | os.PathLike) -> Path:
    """The lock file of a data folder (``.data.lock`` beside ``data/``): one writer of the folder at a time."""
    data_dir = Path(data_dir).resolve()
    return data_dir.with_name(f".{data_dir.name}.lock")
