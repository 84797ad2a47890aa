"""The registry's written policy, the gate and the promotion rule, as pure functions over metrics and tags.

Policy (``registry_policy.yaml``, versioned with the code): ``mia_threshold`` (the strongest membership-inference
attack's success, balanced accuracy, may not exceed it), ``min_accuracy`` (test accuracy must reach it) and
``require_audit_power`` (the audit must have been shown able to fail: it detected the live canaries, or, once every
canary had been forgotten, it detected them at the last iteration that still had live ones and finds the forgotten
ones at chance) and ``require_generator_audit`` (the generator whose samples replaced the originals must pass its own
membership audit: strongest attack's AUC within its chance bound; off in the shipped policy, because the default
non-private generator does not pass it, see docs/generator.md). A run's parameters (``GateConfig``) may only make it stricter (``RegistryPolicy.tightened``).

Gate: a model is registered only when it meets the effective policy. Without canaries the audit's power is
unverified and the gate rejects unless the policy switches ``require_audit_power`` off (the version then carries
the tag ``audit_power=unverified``).

Promotion: a version may become ``champion`` only when its tags show it passed the gate, its audit was made on the
data version it was trained on (``audit_data_md5 == data_md5``) no earlier than that data version was recorded, its
latest audit (``mia_max_success``, rewritten by every re-audit), accuracy and audit power meet the policy in force
*now*, it holds no record deleted since it was registered (``contains_deleted``), and the ids of the deletion
request it served were not still distinguishable (``requested_verdict``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from fairforget.components.config import ConfigBase
from fairforget.errors import ConfigError

GATE_TAG = "gate"
PASSED = "passed"
REJECTED = "rejected"
POLICY_FILE = "registry_policy.yaml"
AUDIT_POWER_SHOWN, AUDIT_POWER_NOT_SHOWN, AUDIT_POWER_UNVERIFIED = "shown", "not_shown", "unverified"
GENERATOR_WITHIN, GENERATOR_ABOVE, GENERATOR_UNMEASURED = "within_bound", "above_bound", "unmeasured"
CONTAINS_DELETED_TAG = "contains_deleted"
REQUESTED_VERDICT_TAG = "requested_verdict"
DISTINGUISHABLE = "distinguishable"


def _check_fraction(name: str, value) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must lie in [0, 1], got {value}: it is a fraction (balanced accuracy or accuracy)")


@dataclass(frozen=True)
class RegistryPolicy(ConfigBase):
    """The rules every registered version must meet (``registry_policy.yaml``)."""

    mia_threshold: float = 0.55  # strongest attack's balanced accuracy must not exceed this
    min_accuracy: float = 0.7  # test accuracy must reach this
    require_audit_power: bool = True  # the audit must have detected the canaries (see the module docstring)
    require_generator_audit: bool = False  # the generator's membership audit must be within its chance bound

    def validate(self) -> None:
        _check_fraction("mia_threshold", self.mia_threshold)
        _check_fraction("min_accuracy", self.min_accuracy)

    def tightened(self, gate: "GateConfig") -> "RegistryPolicy":
        """This policy made stricter by a run's ``gate`` parameters (a looser parameter has no effect)."""
        return RegistryPolicy(
            mia_threshold=min(self.mia_threshold, gate.mia_threshold if gate.mia_threshold is not None else 1.0),
            min_accuracy=max(self.min_accuracy, gate.min_accuracy if gate.min_accuracy is not None else 0.0),
            require_audit_power=self.require_audit_power or bool(gate.require_audit_power),
            require_generator_audit=self.require_generator_audit or bool(gate.require_generator_audit))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def tags(self, prefix: str = "policy_") -> dict[str, str]:
        """The policy as model-version tags (what the version was registered under)."""
        return {**{f"{prefix}{k}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in self.to_dict().items()},
                f"{prefix}digest": self.digest()}


def load_policy(path: str | os.PathLike) -> RegistryPolicy:
    """The policy written in ``path`` (YAML). Raises ``ConfigError`` for a missing file, unknown keys or values
    out of range."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"the registry policy {path} does not exist: restore {POLICY_FILE} from git, or pass "
                          "policy_file=<path>")
    record = yaml.safe_load(path.read_text()) or {}
    if not isinstance(record, dict):
        raise ConfigError(f"{path} must hold a mapping such as 'mia_threshold: 0.55'")
    policy = RegistryPolicy.from_dict(record)
    policy.validate()
    return policy


@dataclass(frozen=True)
class GateConfig(ConfigBase):
    """A run's gate parameters and the registered model's name. Each threshold may only tighten the policy;
    None leaves the policy's value."""

    model_name: str = "fairforget-classifier"
    mia_threshold: float | None = None  # a lower value than the policy's tightens it
    min_accuracy: float | None = None  # a higher value than the policy's tightens it
    require_audit_power: bool | None = None  # True requires canary power even where the policy does not
    require_generator_audit: bool | None = None  # True requires the generator audit even where the policy does not

    def validate(self) -> None:
        _check_fraction("mia_threshold", self.mia_threshold)
        _check_fraction("min_accuracy", self.min_accuracy)
        if not self.model_name.strip():
            raise ConfigError("model_name is empty: name the registered model, e.g. fairforget-classifier")


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "all checks passed"


def generator_audit_verdict(metrics) -> str:
    """``within_bound``, ``above_bound`` or ``unmeasured`` from a generator's ``generator/mia/*`` metrics."""
    auc, bound = metrics.get("generator/mia/auc"), metrics.get("generator/mia/auc_chance_bound")
    if auc is None or bound is None:
        return GENERATOR_UNMEASURED
    return GENERATOR_WITHIN if float(auc) <= float(bound) else GENERATOR_ABOVE


def generator_tags(metrics) -> dict[str, str]:
    """Model-version tags describing the generator behind the synthetic replacements: its privacy mode, its
    achieved epsilon (DP) and its membership audit's AUC and bound, from its ``generator/*`` metrics."""
    tags = {"generator_privacy": "dp" if "generator/dp_epsilon" in metrics else "none"}
    for key, tag in (("generator/dp_epsilon", "generator_dp_epsilon"), ("generator/dp_delta", "generator_dp_delta"),
                     ("generator/mia/auc", "generator_mia_auc"),
                     ("generator/mia/auc_chance_bound", "generator_mia_auc_bound")):
        if key in metrics:
            tags[tag] = f"{float(metrics[key]):.4g}"
    return tags


def _policy_reasons(max_attack_success: float, test_accuracy: float, audit_power: str,
                    policy: RegistryPolicy, generator_audit: str = GENERATOR_UNMEASURED) -> list[str]:
    reasons = []
    if not max_attack_success <= policy.mia_threshold:
        reasons.append(f"mia/max_success {max_attack_success:.4f} > mia_threshold {policy.mia_threshold:.4f}")
    if not test_accuracy >= policy.min_accuracy:
        reasons.append(f"acc/test {test_accuracy:.4f} < min_accuracy {policy.min_accuracy:.4f}")
    if policy.require_audit_power and audit_power == AUDIT_POWER_NOT_SHOWN:
        reasons.append("the audit could not detect canaries: its 'at chance' verdict carries no evidence")
    elif policy.require_audit_power and audit_power != AUDIT_POWER_SHOWN:
        reasons.append("the audit could not detect canaries: none were inserted (canaries=0), so its power is "
                       "unverified; insert canaries, or switch require_audit_power off in the policy")
    if policy.require_generator_audit and generator_audit == GENERATOR_ABOVE:
        reasons.append("the generator's membership audit is above its chance bound: its samples may carry the "
                       "original records back (train it with generator_privacy=dp)")
    elif policy.require_generator_audit and generator_audit != GENERATOR_WITHIN:
        reasons.append("the generator was not audited for membership: retrain it (retrain_generator=true)")
    return reasons


def evaluate_gate(*, max_attack_success: float, test_accuracy: float, policy: RegistryPolicy,
                  audit_power: str = AUDIT_POWER_SHOWN, generator_audit: str = GENERATOR_UNMEASURED) -> GateDecision:
    """Decide registration under ``policy`` (the written one, tightened by the run). ``max_attack_success`` and
    ``test_accuracy`` are fractions in [0, 1] (NaN fails); ``audit_power`` is ``shown`` (the canaries were
    detected), ``not_shown`` or ``unverified`` (no canaries); ``generator_audit`` is ``generator_audit_verdict``
    of the generator's metrics."""
    reasons = _policy_reasons(max_attack_success, test_accuracy, audit_power, policy, generator_audit)
    return GateDecision(not reasons, tuple(reasons))


def check_promotable(tags: Mapping[str, str], policy: RegistryPolicy | None = None) -> GateDecision:
    """Decide whether a model version with these tags may be promoted to ``champion`` under ``policy`` (the
    policy in force now; None checks the record only)."""
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
    if tags.get(CONTAINS_DELETED_TAG) == "true":
        reasons.append("it still holds records deleted on request since it was registered (contains_deleted=true): "
                       "promote the version that served the request instead")
    if tags.get(REQUESTED_VERDICT_TAG) == DISTINGUISHABLE:
        reasons.append("the ids of the deletion request it served were still distinguishable from non-members")
    if policy is not None:
        try:
            success, accuracy = float(tags.get("mia_max_success", "nan")), float(tags.get("acc_test", "nan"))
        except ValueError:
            success = accuracy = float("nan")
        reasons += [f"under the policy in force now: {reason}" for reason in
                    _policy_reasons(success, accuracy, tags.get("audit_power", AUDIT_POWER_UNVERIFIED), policy,
                                    tags.get("generator_audit", GENERATOR_UNMEASURED))]
    return GateDecision(not reasons, tuple(reasons))
