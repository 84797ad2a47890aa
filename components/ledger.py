"""The deletion ledger: every record a served deletion request removed, so that no later run trains on it again.

``forgotten.csv`` beside the data folder (``data/`` -> ``forgotten.csv``; DVC-tracked like the data, so ``dvc push``
sends it): one row per deleted record with the columns ``id``, ``request_id``, ``time`` (UTC, ISO 8601) and
``model_version`` (the registered version that served the request). Appending writes a temporary file and renames
it, so the ledger is always whole. ``apply_ledger`` drops the ledger's records from a data set and records how many
per split in ``config["ledger"]`` (the split sizes the integrity check expects shrink by as many).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from fairforget.components.atomic import write_text_atomically
from fairforget.components.dataset import Dataset
from fairforget.errors import DataError

LEDGER_FILE = "forgotten.csv"
LEDGER_COLUMNS = ("id", "request_id", "time", "model_version")
LEDGER_CONFIG_KEY = "ledger"


def ledger_path(data_dir: str | os.PathLike) -> Path:
    """Where the ledger of the data folder ``data_dir`` lives: ``forgotten.csv`` beside it."""
    return Path(data_dir).resolve().with_name(LEDGER_FILE)


def read_ledger(path: str | os.PathLike) -> pd.DataFrame:
    """The ledger at ``path`` (an empty one when the file does not exist). Raises ``DataError`` for a file
    without the ledger's columns."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame({column: pd.Series(dtype=str) for column in LEDGER_COLUMNS})
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in LEDGER_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"the deletion ledger {path} lacks the columns {missing}: restore it from DVC "
                        f"(`dvc checkout {path.name}.dvc`)")
    return table[list(LEDGER_COLUMNS)]


def ledger_ids(path: str | os.PathLike) -> set[str]:
    return set(read_ledger(path)["id"])


def append_to_ledger(path: str | os.PathLike, ids: Sequence[str], *, request_id: str, model_version: str) -> int:
    """Add ``ids`` (those not already in the ledger) to the ledger at ``path``, atomically; returns how many
    were added."""
    path = Path(path)
    table = read_ledger(path)
    new = [i for i in dict.fromkeys(map(str, ids)) if i not in set(table["id"])]
    if not new:
        return 0
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows = pd.DataFrame({"id": new, "request_id": request_id, "time": stamp, "model_version": str(model_version)})
    write_ledger(path, pd.concat([table, rows], ignore_index=True))
    return len(new)


def write_ledger(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write ``table`` (the ledger's columns) to ``path`` atomically (``components.atomic``)."""
    write_text_atomically(path, table[list(LEDGER_COLUMNS)].to_csv(index=False, lineterminator="\n"))


def merge_ledgers(local: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """``local`` followed by the rows of ``other`` whose ids it lacks (a ledger only grows)."""
    extra = other[~other["id"].isin(set(local["id"]))]
    return pd.concat([local, extra], ignore_index=True)[list(LEDGER_COLUMNS)]


def apply_ledger(dataset: Dataset, ids: set[str]) -> Dataset:
    """``dataset`` without the records in ``ids``; ``config["ledger"]`` counts the records removed per split
    (added to any count already there)."""
    drop = np.isin(dataset.ids.astype(str), list(ids)) if ids else np.zeros(len(dataset), dtype=bool)
    if not drop.any():
        return dataset
    removed = dict(dataset.config.get(LEDGER_CONFIG_KEY, {}))
    for split, count in dataset.manifest.loc[drop, "split"].value_counts().items():
        removed[str(split)] = int(removed.get(str(split), 0)) + int(count)
    kept = dataset.select(~drop)
    return dataclasses.replace(kept, config={**dataset.config, LEDGER_CONFIG_KEY: removed})


def expected_split_sizes(config: dict) -> dict[str, int]:
    """The split sizes a prepared data set should have: its configured sizes minus the records the ledger
    removed from each split."""
    removed = config.get(LEDGER_CONFIG_KEY, {})
    return {split: int(config[f"{split}_size"]) - int(removed.get(split, 0))
            for split in ("train", "test", "audit", "reference") if f"{split}_size" in config}


def without_ledger_record(config: dict) -> dict:
    """The preparation config without the ledger's counts (to compare with a ``DataConfig``)."""
    return {k: v for k, v in config.items() if k != LEDGER_CONFIG_KEY}
