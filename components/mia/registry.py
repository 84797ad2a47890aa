"""``ATTACKS``: every membership attack by name (the names ``AuditConfig.attacks`` may list)."""

from __future__ import annotations

from fairforget.components.mia.loss_attacks import LossAttack, MeanLossAttack, StdLossAttack
from fairforget.components.mia.metric_attacks import ConfidenceAttack, EntropyAttack, ModifiedEntropyAttack
from fairforget.components.mia.moments import MomentsAttack
from fairforget.components.mia.rmia import RmiaAttack

ATTACKS: dict[str, type] = {
    "mloss": LossAttack,
    "mmean": MeanLossAttack,
    "mstd": StdLossAttack,
    "moments": MomentsAttack,
    "confidence": ConfidenceAttack,
    "entropy": EntropyAttack,
    "modified_entropy": ModifiedEntropyAttack,
    "rmia": RmiaAttack,
}
