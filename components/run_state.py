"""The resumable state of one Algorithm-2 run, in its folder ``outputs/<config hash>/<run id>/``.

``sisa/`` (plan and content-addressed checkpoints), ``synthetic/`` (every synthetic sample so far),
``progress.json`` (the commit point: the last finished iteration and its history), ``snapshots/<iteration>/`` (plan
and synthetic samples as they were at that commit) and ``pipeline.json`` (the resolved config). Every write is
atomic (``components.atomic``): after ``kill -9`` the folder holds the last committed iteration, and
``restore_state`` puts its snapshot back before a resumed run goes on.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fairforget.components.atomic import atomic_file, atomic_folder, write_json_atomically
from fairforget.components.dataset import Dataset, save_dataset
from fairforget.errors import ResumeError

PROGRESS_FILE = "progress.json"
CONFIG_FILE = "pipeline.json"
SNAPSHOT_DIR = "snapshots"
SNAPSHOT_FILES = ("sisa/plan.csv", "sisa/sisa.json")


@dataclass
class LoopState:
    """What is persisted after every iteration: enough to resume exactly."""

    parent_run_id: str
    iteration: int = 0
    history: list[dict] = field(default_factory=list)
    converged_streak: int = 0
    finished: bool = False

    def save(self, folder: Path) -> None:
        write_json_atomically(folder / PROGRESS_FILE, asdict(self))

    @classmethod
    def load(cls, folder: Path) -> "LoopState | None":
        path = folder / PROGRESS_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None


def snapshot_state(state_dir: Path, iteration: int) -> Path:
    """Copy the mutable loop state (SISA plan and config, the synthetic samples) to ``snapshots/<iteration>``.

    Written to a temporary folder and renamed, so a snapshot is complete or absent. Checkpoints are content-
    addressed and need no copy: a restored plan finds its own (or retrains them, identically).
    """
    target = state_dir / SNAPSHOT_DIR / f"{iteration:03d}"
    with atomic_folder(target) as tmp:
        (tmp / "sisa").mkdir(parents=True)
        for name in SNAPSHOT_FILES:
            shutil.copy2(state_dir / name, tmp / name)
        shutil.copytree(state_dir / "synthetic", tmp / "synthetic")
    return target


def restore_state(state_dir: Path, iteration: int) -> None:
    """Put the snapshot of ``iteration`` back in place (undoing a step that died half-way)."""
    source = state_dir / SNAPSHOT_DIR / f"{iteration:03d}"
    if not source.is_dir():
        raise ResumeError(f"cannot resume: the snapshot {source} is missing; rerun without resume")
    for name in SNAPSHOT_FILES:
        with atomic_file(state_dir / name) as tmp:
            shutil.copy2(source / name, tmp)
    with atomic_folder(state_dir / "synthetic") as tmp:
        shutil.copytree(source / "synthetic", tmp, dirs_exist_ok=True)


def commit_iteration(state: LoopState, state_dir: Path, synthetic: Dataset) -> None:
    """Save the synthetic samples, snapshot, then record progress (the commit point), then drop older snapshots."""
    save_dataset(synthetic, state_dir / "synthetic")
    snapshot_state(state_dir, state.iteration)
    state.save(state_dir)
    for old in (state_dir / SNAPSHOT_DIR).iterdir():
        if old.name != f"{state.iteration:03d}":
            shutil.rmtree(old, ignore_errors=True)
