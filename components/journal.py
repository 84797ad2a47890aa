"""An intent journal: one JSON record, written atomically and fsynced before the work it describes, rewritten after
each step, removed when the work is whole. A process killed at any point leaves either no record (nothing to do) or
the record of what was intended and which steps were done, from which a restart finishes the rest (every step is
idempotent) or rolls it back."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fairforget.components.atomic import fsync_folder, write_text_atomically


class Journal:
    """The journal file at ``path`` (its folder is created on the first write)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> dict | None:
        """The open record, or None when there is none."""
        if not self.path.is_file():
            return None
        return json.loads(self.path.read_text())

    def write(self, record: dict) -> None:
        """Replace the record atomically (``components.atomic``)."""
        write_text_atomically(self.path, json.dumps(record, indent=1, sort_keys=True))

    def close(self) -> None:
        """Remove the record: the work it described is whole (or rolled back)."""
        self.path.unlink(missing_ok=True)
        fsync_folder(self.path.parent)


def open_journals_on(data_dir: str | os.PathLike, outputs_dir: str | os.PathLike) -> list[Journal]:
    """The open journals under ``<outputs_dir>/.journal/`` whose work writes ``data_dir`` (their record's
    ``data_dir``): a commit a killed process left half done on that data folder."""
    folder, data_dir = Path(outputs_dir) / ".journal", Path(data_dir).resolve()
    journals = [Journal(path) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    records = [(journal, journal.read() or {}) for journal in journals]
    return [journal for journal, record in records
            if record.get("data_dir") and Path(record["data_dir"]).resolve() == data_dir]
