"""Content-addressed shard checkpoints: the key says exactly what the weights have seen.

A shard's checkpoint after training stage r (slices 1..r) is keyed by a hash chain:
``key_0 = sha256(model spec, train config, stage epochs, shard seed)`` and
``key_r = sha256(key_{r-1}, ordered ids of slice r)``. Two checkpoints share a key only if they come from the same
config and the same ordered samples at every stage, so a stored checkpoint can be reused whenever its key recurs,
and a deletion invalidates exactly the keys of the stages from the first affected slice on.

File format (``<key>.ckpt``): one line with the sha256 of the payload, then the payload, a ``torch.save`` of
``{"key", "model", "optimizer", "generator", "torch_rng", "meta"}``. ``load`` checks both the content hash and the
key stored inside. Files are written to a temporary name and renamed, so a reader never sees half a checkpoint and
an existing checkpoint is never overwritten half-way.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from fairforget.components.atomic import write_bytes_atomically

from fairforget.errors import CheckpointError  # noqa: F401 (re-exported)

CHECKPOINT_SUFFIX = ".ckpt"
KEY_FORMAT_VERSION = 1



def root_key(spec: dict[str, Any]) -> str:
    """``key_0``: hash of everything but the data that decides training (JSON, keys sorted)."""
    text = json.dumps({"format": KEY_FORMAT_VERSION, **spec}, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def next_key(previous_key: str, slice_ids: Sequence[str]) -> str:
    """``key_r = sha256(key_{r-1}, ordered ids of slice r)``."""
    digest = hashlib.sha256(previous_key.encode("ascii"))
    digest.update(b"\x00")
    digest.update("\n".join(slice_ids).encode("utf-8"))
    return digest.hexdigest()


def stage_keys(spec: dict[str, Any], slices: Sequence[Sequence[str]]) -> list[str]:
    """``[key_0, key_1, ..., key_R]`` for a shard whose slices hold ``slices`` (ordered ids per slice)."""
    keys = [root_key(spec)]
    for ids in slices:
        keys.append(next_key(keys[-1], ids))
    return keys


class CheckpointStore:
    """A folder of checkpoints named by key."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}{CHECKPOINT_SUFFIX}"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def keys(self) -> list[str]:
        return sorted(p.name[: -len(CHECKPOINT_SUFFIX)] for p in self.folder.glob(f"*{CHECKPOINT_SUFFIX}"))

    def save(self, key: str, state: dict[str, Any]) -> Path:
        """Write ``state`` under ``key`` atomically (temp file in the same folder, then rename)."""
        buffer = io.BytesIO()
        torch.save({"key": key, **state}, buffer)
        payload = buffer.getvalue()
        header = hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n"
        write_bytes_atomically(self.path(key), header + payload)
        return self.path(key)

    def load(self, key: str) -> dict[str, Any]:
        """The state saved under ``key``; a missing, corrupt or mismatched file raises ``CheckpointError``."""
        path = self.path(key)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} is missing: run train() to recompute it")
        data = path.read_bytes()
        header, _, payload = data.partition(b"\n")
        if hashlib.sha256(payload).hexdigest().encode("ascii") != header:
            raise CheckpointError(f"checkpoint {path} is corrupt (its content hash does not match): delete the file "
                                  f"and run train() to recompute it")
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        if state.get("key") != key:
            raise CheckpointError(f"checkpoint {path} holds key {str(state.get('key'))[:16]}..., not its file name: "
                                  f"delete the file and run train() to recompute it")
        return state

    def prune(self, keep: set[str]) -> list[str]:
        """Delete every checkpoint whose key is not in ``keep`` (e.g. ones that saw forgotten samples)."""
        removed = []
        for key in self.keys():
            if key not in keep:
                self.path(key).unlink(missing_ok=True)
                removed.append(key)
        return removed
