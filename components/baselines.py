"""The study's baseline training sets beside S*: oversampling the minority classes by repeating their images.

A copy carries the id ``<id>~copy<n>``, so a SISA plan can hold it next to its original, and ``copy_groups`` keeps
every copy in its original's shard (``SisaModel.create(groups=...)``): forgetting the original then forgets its
copies in the same retraining.
"""

from __future__ import annotations

import dataclasses

COPY_MARK = "~copy"


def copy_source(record_id: str) -> str:
    """The id of the record a row of ``oversampled_training_set`` repeats (its own id for an original)."""
    return str(record_id).split(COPY_MARK)[0]


def copy_groups(ids) -> list[str]:
    """The ``groups`` that keep each copy of ``oversampled_training_set`` in its original's SISA shard."""
    return [copy_source(i) for i in ids]


def oversampled_training_set(train, target_counts):
    """``train`` with each class filled up to ``target_counts[k]`` rows by repeating its images in a fixed cycle
    (id order); the copies get ids ``<id>~copy<n>`` so the SISA plan can hold them next to the originals."""
    import numpy as np

    out = train
    for label, target in enumerate(target_counts):
        rows = np.flatnonzero(train.labels == label)
        missing = int(target) - len(rows)
        if missing <= 0 or len(rows) == 0:
            continue
        picks = rows[np.arange(missing) % len(rows)]
        manifest = train.manifest.iloc[picks].reset_index(drop=True)
        manifest["id"] = [f"{i}{COPY_MARK}{n}" for n, i in enumerate(manifest["id"])]
        out = out.concat(dataclasses.replace(train, manifest=manifest, images=train.images[picks]))
    return out
