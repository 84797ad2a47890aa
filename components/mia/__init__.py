"""Membership-inference audits: the paper's attacks (Yu et al. 2021), metric attacks with class-dependent thresholds
(Song & Mittal 2021) and offline RMIA (Zarifzadeh et al. 2024), measured on a calibration/evaluation protocol.

``ATTACKS`` maps an attack name to its class; ``audit_membership`` runs a list of them (see ``protocol``).
"""

from __future__ import annotations

from fairforget.components.mia.config import DEFAULT_ATTACKS, AuditConfig
from fairforget.components.mia.protocol import (
    AuditSplit,
    audit_membership,
    audit_per_model,
    make_attack,
    split_audit_pool,
    split_calibration_evaluation,
)
from fairforget.components.mia.queries import (
    QueryOutputs,
    TorchPredictor,
    float_array_predictor,
    probabilities_from_logits,
    torch_predictor,
)
from fairforget.components.mia.reference import train_reference_models
from fairforget.components.mia.registry import ATTACKS
from fairforget.components.mia.results import AttackResult, AuditReport

__all__ = [
    "ATTACKS",
    "DEFAULT_ATTACKS",
    "AttackResult",
    "AuditConfig",
    "AuditReport",
    "AuditSplit",
    "QueryOutputs",
    "TorchPredictor",
    "audit_membership",
    "audit_per_model",
    "float_array_predictor",
    "make_attack",
    "probabilities_from_logits",
    "split_audit_pool",
    "split_calibration_evaluation",
    "torch_predictor",
    "train_reference_models",
]
