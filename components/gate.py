"""The registry gate and the promotion rule, as pure functions over metrics and tags.

Gate: a model may be registered only when the strongest membership-inference attack's success (balanced
accuracy) is at most ``mia_threshold`` and its test accuracy at least ``min_accuracy``.
Promotion: a version may become ``champion`` only when its tags show it passed the gate and its audit was made on
the data version it was trained on (``audit_data_md5 == data_md5``) no earlier than that data version was recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

GATE_TAG = "gate"
PASSED = "passed"
REJECTED = "rejected"


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "all checks passed"


def evaluate_gate(max_attack_success: float, test_accuracy: float, mia_threshold: float,
                  min_accuracy: float) -> GateDecision:
    """Decide registration. Both inputs are fractions in [0, 1]; NaN fails."""
    reasons = []
    if not max_attack_success <= mia_threshold:
        reasons.append(f"mia/max_success {max_attack_success:.4f} > mia_threshold {mia_threshold:.4f}")
    if not test_accuracy >= min_accuracy:
        reasons.append(f"acc/test {test_accuracy:.4f} < min_accuracy {min_accuracy:.4f}")
    return GateDecision(not reasons, tuple(reasons))


def check_promotable(tags: Mapping[str, str]) -> GateDecision:
    """Decide whether a model version with these tags may be promoted to ``champion``."""
    reasons = []
    if tags.get(GATE_TAG) != PASSED:
        reasons.append(f"its tag {GATE_TAG}={tags.get(GATE_TAG)!r}: only versions that passed the registry gate "
                       "can be promoted")
    data_md5, audit_md5 = tags.get("data_md5"), tags.get("audit_data_md5")
    if not data_md5 or not audit_md5:
        reasons.append("it has no audit record (tags data_md5 and audit_data_md5): audit it first "
                       "(`mlflow run . -e audit`)")
    elif data_md5 != audit_md5:
        reasons.append(f"its audit was made on data {audit_md5}, not on its data version {data_md5}: audit it again")
    try:
        if float(tags.get("audit_time", "0")) < float(tags.get("data_time", "0")):
            reasons.append("its audit is older than its data version: audit it again")
    except ValueError:
        reasons.append("its audit_time / data_time tags are not timestamps")
    return GateDecision(not reasons, tuple(reasons))
