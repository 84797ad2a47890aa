"""The labeller's constants are chosen on the public split alone: S (the train split) never enters the choice."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from experiments.choose_labeller import choose
from fairforget.components.dataset import make_toy_dataset


def test_the_choice_reads_the_public_split_only():
    dataset = make_toy_dataset(per_class_other=16)
    train = (dataset.manifest["split"] == "train").to_numpy()
    images = dataset.images.copy()
    images[train] = np.random.default_rng(0).integers(0, 256, images[train].shape, dtype=np.uint8)
    scrambled = replace(dataset, images=images)
    design = {name: 4 for name in dataset.class_names}
    rows, stand_in, scored = choose(dataset, design, [4], [2.0], 2, 0)
    again, _, _ = choose(scrambled, design, [4], [2.0], 2, 0)
    assert rows == again  # S's images changed, nothing of the choice did
    assert stand_in == 4 * len(design) and scored > 0
    assert 0 <= rows[0]["accuracy"] <= 1 and rows[0]["components"] == 4
