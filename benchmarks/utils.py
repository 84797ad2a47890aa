"""What several benchmarks share: a scratch tracking store, and writing their figures as JSON."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def scratch_tracking_store(name: str) -> Path:
    """A new temporary folder whose ``mlflow.db`` becomes this process's tracking store, with experiment
    ``fairforget-<name>``: a benchmark reuses nothing an earlier run trained (kept afterwards, for a look)."""
    scratch = Path(tempfile.mkdtemp(prefix=f"fairforget-{name}-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"
    os.environ["MLFLOW_EXPERIMENT_NAME"] = f"fairforget-{name}"
    return scratch


def write_figures(path: str | os.PathLike | None, figures: dict) -> None:
    """``figures`` as indented JSON at ``path`` (its folder created); nothing when ``path`` is None."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(figures, indent=1, default=str) + "\n")
