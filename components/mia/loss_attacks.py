"""The loss-threshold attacks of Yu et al. (AAAI 2021) over N fixed augmentations l_1..l_N (copy 1 = the image).

- ``mloss``: member when the loss of the image itself is small (Yeom et al. 2018; Sablayrolles et al. 2019).
- ``mmean``: member when the mean loss over the N copies is small: a model trained with augmentation fits all
  copies of its members, so the mean is the better statistic (Yu et al., Sec. 4).
- ``mstd``: the standard deviation of the N losses; its direction (small or large means member) is chosen on
  the calibration split.
"""

from __future__ import annotations

import numpy as np

from fairforget.components.mia.base import ThresholdAttack
from fairforget.components.mia.queries import QueryOutputs


class LossAttack(ThresholdAttack):
    """M-Loss: score = -l(x), the loss of the un-augmented image."""

    name = "mloss"
    higher_is_member = False

    def statistic(self, queries: QueryOutputs) -> np.ndarray:
        return queries.losses[:, 0]


class MeanLossAttack(ThresholdAttack):
    """M-Mean: score = -mean_t l_t over the N fixed augmentations."""

    name = "mmean"
    higher_is_member = False

    def statistic(self, queries: QueryOutputs) -> np.ndarray:
        return queries.losses.mean(axis=1)


class StdLossAttack(ThresholdAttack):
    """M-Std: score = +-std_t l_t, the sign fitted on calibration."""

    name = "mstd"
    higher_is_member = None

    def statistic(self, queries: QueryOutputs) -> np.ndarray:
        return queries.losses.std(axis=1)
