"""The registry gate and the promotion rule, as pure functions over metrics and tags.

Gate: a model may be registered only when the strongest membership-inference attack's success (balanced
accuracy) is at most ``mia_threshold``, its test accuracy at least ``min_accuracy``, and (``require_audit_power``)
the audit that made that verdict was shown able to fail: it detected the live canaries, or, once every canary had
been forgotten, it detected them at the last iteration that still had live ones and found the forgotten ones at
chance. Without canaries the audit's power is unverified and the gate rejects unless ``require_audit_power`` is
switched off (the version then carries the tag ``audit_power=unverified``).
Promotion: a version may become ``champion`` only when its tags show it passed the gate and its audit was made on
the data version it was trained on (``audit_data_md5 == data_md5``) no earlier than that data version was recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from fairforget.components.config import ConfigBase
from fairforget.errors import ConfigError

GATE_TAG = "gate"
PASSED = "passed"
REJECTED = "rejected"


@dataclass(frozen=True)
class GateConfig(ConfigBase):
    """The registry gate's thresholds and the registered model's name."""

    model_name: str = "fairforget-classifier"
    mia_threshold: float = 0.55  # strongest attack's balanced accuracy must not exceed this
    min_accuracy: float = 0.7  # test accuracy must reach this
    require_audit_power: bool = True  # the audit must have detected the canaries (see the module docstring)

    def validate(self) -> None:
        for name in ("mia_threshold", "min_accuracy"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], got {value}: it is a fraction (balanced accuracy or "
                                  "accuracy)")
        if not self.model_name.strip():
            raise ConfigError("model_name is empty: name the registered model, e.g. fairforget-classifier")


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "all checks passed"


AUDIT_POWER_SHOWN, AUDIT_POWER_NOT_SHOWN, AUDIT_POWER_UNVERIFIED = "shown", "not_shown", "unverified"


def evaluate_gate(*, max_attack_success: float, test_accuracy: float, config: GateConfig,
                  audit_power: str = AUDIT_POWER_SHOWN) -> GateDecision:
    """Decide registration. ``max_attack_success`` and ``test_accuracy`` are fractions in [0, 1] (NaN fails);
    ``audit_power`` is ``shown`` (the canaries were detected), ``not_shown`` or ``unverified`` (no canaries)."""
    reasons = []
    if not max_attack_success <= config.mia_threshold:
        reasons.append(f"mia/max_success {max_attack_success:.4f} > mia_threshold {config.mia_threshold:.4f}")
    if not test_accuracy >= config.min_accuracy:
        reasons.append(f"acc/test {test_accuracy:.4f} < min_accuracy {config.min_accuracy:.4f}")
    if config.require_audit_power and audit_power == AUDIT_POWER_NOT_SHOWN:
        reasons.append("the audit could not detect canaries: its 'at chance' verdict carries no evidence")
    elif config.require_audit_power and audit_power == AUDIT_POWER_UNVERIFIED:
        reasons.append("the audit could not detect canaries: none were inserted (canaries=0), so its power is "
                       "unverified; insert canaries or set require_audit_power=false")
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
