"""The registry's written policy, the gate and the promotion rule, as pure functions over metrics and tags.

Policy (``registry_policy.yaml``, versioned with the code):
- ``max_auc_excess`` and ``max_tpr_at_1pct_fpr``: the ``Tolerance`` of the certification (``mia.certify``). The
  final audit must certify both sets of originals: the *retained* ones the model still holds, and the *forgotten*
  ones (the generator channel: what the synthetic replacements carry back). Every attack's upper confidence bounds
  must lie under the tolerance; too few records to resolve it is no pass. The attacks' balanced success (the
  paper's metric) is reported and decides nothing.
- ``min_accuracy``: test accuracy must reach it.
- ``require_certification``: on in every real policy; a policy may switch it off for toy data whose audit pool is
  too small to resolve any tolerance (the tests of the registry's mechanics), and the version records it.
- ``require_audit_power``: the audit must have been shown able to fail: it detected the live canaries (or, once
  every canary was forgotten, detected them at the last iteration with live ones), and the iteration-0 audit
  detected the natural members (some attack's AUC interval above 0.5). Otherwise the certification is unverified.
- ``require_exact_unlearning``: unlearning proven exact: every shard of the final model bit-identical to one trained
  from scratch on its final data, or every step's own runtime audit passed (``exactness_verdict``).
- ``require_generator_audit``: the generator whose samples replaced the originals must pass its own membership
  audit: its certificate (both attacks' AUC and TPR upper bounds within the tolerances above, no detected leak);
  a generator audited before certificates, its strongest attack's AUC within its chance bound.
- ``on_failed_deletion``: what a served deletion request does when its new version fails the gate: ``unserve``
  (default) removes the alias ``champion`` (nothing that holds the records is served) and leaves the request open
  (registered-model tag ``open_deletion_request``: no promotion until it is served); ``keep`` leaves the champion.
A run's parameters (``GateConfig``) may only make it stricter (``RegistryPolicy.tightened``).

Promotion: a version may become ``champion`` only when its tags show it passed the gate, its audit was made on the
data version it was trained on (``audit_data_md5 == data_md5``) no earlier than that data version was recorded, its
latest certificates (``mia_retained_*``, ``mia_forgotten_*``, rewritten by every re-audit), accuracy, audit power
and exactness meet the policy in force *now*, it holds no record deleted since it was registered
(``contains_deleted``), and the ids of the deletion request it served were not still distinguishable
(``requested_verdict``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from fairforget.components.config import ConfigBase
from fairforget.components.mia.certify import CERTIFIED, TOO_FEW, Certificate, Tolerance
from fairforget.errors import ConfigError

GATE_TAG = "gate"
PASSED = "passed"
REJECTED = "rejected"
POLICY_FILE = "registry_policy.yaml"
AUDIT_POWER_SHOWN, AUDIT_POWER_NOT_SHOWN, AUDIT_POWER_UNVERIFIED = "shown", "not_shown", "unverified"
GENERATOR_WITHIN, GENERATOR_ABOVE, GENERATOR_UNMEASURED = "within_bound", "above_bound", "unmeasured"
# the verdicts of a generator audited with a certificate (``generator.audit``); the two above are those of one
# audited before, read from its AUC against its chance bound
GENERATOR_CERTIFIED, GENERATOR_NOT_CERTIFIED, GENERATOR_TOO_FEW = "certified", "not_certified", "too_few"
EXACTNESS_VERIFIED, EXACTNESS_UNVERIFIED, EXACTNESS_FAILED = "verified", "unverified", "failed"
HELD_SETS = ("retained", "forgotten")
CONTAINS_DELETED_TAG = "contains_deleted"
REQUESTED_VERDICT_TAG = "requested_verdict"
DISTINGUISHABLE = "distinguishable"
UNSERVE, KEEP = "unserve", "keep"
ON_FAILED_DELETION = (UNSERVE, KEEP)
OPEN_DELETION_TAG = "open_deletion_request"  # registered-model tag: the request whose new version failed
OPEN_DELETION_FROM_TAG = "open_deletion_request_from"  # ... and the version it was served from (its retry's)


def _check_fraction(name: str, value) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must lie in [0, 1], got {value}: it is a fraction")


def _check_type(name: str, value, kind: type) -> None:
    accepted = (int, float) if kind is float else kind
    if value is not None and (not isinstance(value, accepted) or (kind is float and isinstance(value, bool))):
        raise ConfigError(f"{name} must be a {'number' if kind is float else 'true/false'}, got {value!r}: write it "
                          "without quotes")


@dataclass(frozen=True)
class RegistryPolicy(ConfigBase):
    """The rules every registered version must meet (``registry_policy.yaml``; see the module docstring)."""

    max_auc_excess: float = 0.03  # every attack's AUC upper bound <= 0.5 + this, on retained and forgotten
    max_tpr_at_1pct_fpr: float = 0.02  # every attack's TPR-at-1%-FPR upper bound <= this
    min_accuracy: float = 0.7  # test accuracy must reach this
    require_certification: bool = True  # off only for toy data too small to certify (recorded on the version)
    require_audit_power: bool = True  # canaries and natural members detected (see the module docstring)
    require_exact_unlearning: bool = True  # unlearning proven exact (exactness_verdict)
    require_generator_audit: bool = False  # the generator's membership audit must be certified (generator.audit)
    on_failed_deletion: str = UNSERVE  # a deletion request whose new version fails: unserve (no champion) or keep

    def validate(self) -> None:
        for name in ("max_auc_excess", "max_tpr_at_1pct_fpr", "min_accuracy"):
            _check_type(name, getattr(self, name), float)
        for name in ("require_certification", "require_audit_power", "require_exact_unlearning",
                     "require_generator_audit"):
            _check_type(name, getattr(self, name), bool)
        if self.on_failed_deletion not in ON_FAILED_DELETION:
            raise ConfigError(f"on_failed_deletion must be one of {', '.join(ON_FAILED_DELETION)}, got "
                              f"{self.on_failed_deletion!r}: unserve removes the champion while a deletion request "
                              "is open, keep leaves it serving the records")
        _check_fraction("min_accuracy", self.min_accuracy)
        self.tolerance.validate()

    def looser_than(self, other: "RegistryPolicy") -> list[str]:
        """How this policy is laxer than ``other``, one phrase per rule (empty: at least as strict)."""
        looser = [f"{name} {getattr(self, name)} > {getattr(other, name)}"
                  for name in ("max_auc_excess", "max_tpr_at_1pct_fpr") if getattr(self, name) > getattr(other, name)]
        if self.min_accuracy < other.min_accuracy:
            looser.append(f"min_accuracy {self.min_accuracy} < {other.min_accuracy}")
        looser += [f"{name} false" for name in ("require_certification", "require_audit_power",
                                                "require_exact_unlearning", "require_generator_audit")
                   if getattr(other, name) and not getattr(self, name)]
        if other.on_failed_deletion == UNSERVE and self.on_failed_deletion != UNSERVE:
            looser.append(f"on_failed_deletion {self.on_failed_deletion}")
        return looser

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(max_auc_excess=float(self.max_auc_excess), max_tpr_at_1pct_fpr=float(self.max_tpr_at_1pct_fpr))

    def tightened(self, gate: "GateConfig") -> "RegistryPolicy":
        """This policy made stricter by a run's ``gate`` parameters (a looser parameter has no effect)."""
        def lower(policy_value: float, run_value: float | None) -> float:
            return policy_value if run_value is None else min(policy_value, run_value)

        return RegistryPolicy(
            max_auc_excess=lower(self.max_auc_excess, gate.max_auc_excess),
            max_tpr_at_1pct_fpr=lower(self.max_tpr_at_1pct_fpr, gate.max_tpr_at_1pct_fpr),
            min_accuracy=max(self.min_accuracy, gate.min_accuracy if gate.min_accuracy is not None else 0.0),
            require_certification=self.require_certification,
            require_audit_power=self.require_audit_power or bool(gate.require_audit_power),
            require_exact_unlearning=self.require_exact_unlearning,
            require_generator_audit=self.require_generator_audit or bool(gate.require_generator_audit),
            on_failed_deletion=self.on_failed_deletion)

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
        raise ConfigError(f"{path} must hold a mapping such as 'max_auc_excess: 0.03'")
    policy = RegistryPolicy.from_dict(record)
    policy.validate()
    return policy


@dataclass(frozen=True)
class GateConfig(ConfigBase):
    """A run's gate parameters and the registered model's name. Each threshold may only tighten the policy;
    None leaves the policy's value."""

    model_name: str = "fairforget-classifier"
    max_auc_excess: float | None = None  # a lower value than the policy's tightens it
    max_tpr_at_1pct_fpr: float | None = None  # a lower value than the policy's tightens it
    min_accuracy: float | None = None  # a higher value than the policy's tightens it
    require_audit_power: bool | None = None  # True requires canary power even where the policy does not
    require_generator_audit: bool | None = None  # True requires the generator audit even where the policy does not

    def validate(self) -> None:
        _check_fraction("max_auc_excess", self.max_auc_excess)
        _check_fraction("max_tpr_at_1pct_fpr", self.max_tpr_at_1pct_fpr)
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


def generator_certificate(metrics) -> Certificate | None:
    """The certificate of a generator's membership audit from its ``generator/mia/*`` metrics (None: audited
    before certificates were logged, or not at all)."""
    keys = ("members", "non_members", "auc_high", "tpr_at_1pct_fpr_high", "attacks", "leak_p_value", "leak_level")
    values = {key: metrics.get(f"generator/mia/{key}") for key in keys}
    if any(value is None for value in values.values()):
        return None
    return Certificate(int(values["members"]), int(values["non_members"]), float(values["auc_high"]),
                       float(values["tpr_at_1pct_fpr_high"]), n_attacks=int(values["attacks"]),
                       leak_p_value=float(values["leak_p_value"]), leak_level=float(values["leak_level"]))


def generator_audit_verdict(metrics, tolerance: Tolerance | None = None) -> str:
    """The verdict of a generator's membership audit from its ``generator/mia/*`` metrics: its certificate under
    ``tolerance`` (``certified``, ``not_certified``, ``too_few``) or, for a generator audited before certificates,
    ``within_bound`` / ``above_bound`` (AUC against its chance bound); ``unmeasured`` without an audit."""
    certificate = generator_certificate(metrics)
    if certificate is not None:
        verdict = certificate.verdict(tolerance or Tolerance())
        return {CERTIFIED: GENERATOR_CERTIFIED, TOO_FEW: GENERATOR_TOO_FEW}.get(verdict, GENERATOR_NOT_CERTIFIED)
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
                     ("generator/mia/auc_chance_bound", "generator_mia_auc_bound"),
                     ("generator/mia/auc_high", "generator_mia_auc_high"),
                     ("generator/mia/tpr_at_1pct_fpr_high", "generator_mia_tpr_high"),
                     ("generator/mia/members", "generator_mia_members")):
        if key in metrics:
            tags[tag] = f"{float(metrics[key]):.4g}"
    return tags


FINAL_EXACTNESS_STAGE = "final_exactness"  # a history row: every shard retrained from scratch and compared


def exactness_verdict(history) -> str:
    """``verified`` when every unlearning step in ``history`` (rows with ``unlearn_exact``, in order) is covered
    by a passed exactness audit: its own (one shard retrained from scratch and compared bit for bit), or a later
    ``final_exactness`` row (every shard retrained from scratch and compared: the model after the step equals SISA
    retrained without the forgotten records, so every step before it was exact). ``failed`` when any audit found a
    difference, ``unverified`` when a step is covered by none (or there was no step: ``verified``)."""
    uncovered = False
    for row in history:
        value = row.get("unlearn_exact")
        if "unlearn_exact" not in row or value is None:
            continue
        if value == 0.0:
            return EXACTNESS_FAILED
        if row.get("stage") == FINAL_EXACTNESS_STAGE:
            uncovered = False
        elif value != value:  # NaN: a step whose exactness was not audited on its own
            uncovered = True
    return EXACTNESS_UNVERIFIED if uncovered else EXACTNESS_VERIFIED


def _policy_reasons(certificates: Mapping[str, Certificate | None], test_accuracy: float, audit_power: str,
                    policy: RegistryPolicy, generator_audit: str = GENERATOR_UNMEASURED,
                    exactness: str = EXACTNESS_VERIFIED, natural_detected: bool | None = True) -> list[str]:
    reasons = []
    tolerance = policy.tolerance
    for held in HELD_SETS if policy.require_certification else ():
        certificate = certificates.get(held)
        if certificate is None:
            reasons.append(f"the {held} originals have no certificate: audit the version again")
        elif not certificate.certified(tolerance):
            reasons.append(f"{held} originals {certificate.explain(tolerance)}")
    if not test_accuracy >= policy.min_accuracy:
        reasons.append(f"acc/test {test_accuracy:.4f} < min_accuracy {policy.min_accuracy:.4f}")
    if policy.require_audit_power and audit_power == AUDIT_POWER_NOT_SHOWN:
        reasons.append("the audit could not detect canaries: its certification is unverified")
    elif policy.require_audit_power and audit_power != AUDIT_POWER_SHOWN:
        reasons.append("the audit could not detect canaries: none were inserted (canaries=0), so its power is "
                       "unverified; insert canaries, or switch require_audit_power off in the policy")
    if policy.require_audit_power and not natural_detected:
        what = ("the iteration-0 audit did not detect the natural members (no attack's AUC interval above 0.5)"
                if natural_detected is False else "the iteration-0 audit of the natural members is not recorded")
        reasons.append(f"{what}: the audit's certification is unverified")
    if policy.require_exact_unlearning and exactness != EXACTNESS_VERIFIED:
        reasons.append(f"unlearning exactness {exactness}: the final shards must equal their from-scratch retrains "
                       "or every step pass its own audit (audit_exactness on, deterministic kernels)")
    if policy.require_generator_audit and generator_audit in (GENERATOR_ABOVE, GENERATOR_NOT_CERTIFIED):
        what = "above its chance bound" if generator_audit == GENERATOR_ABOVE else "not certified"
        reasons.append(f"the generator's membership audit is {what}: its samples may carry the original records "
                       "back (train it with generator_privacy=dp)")
    elif policy.require_generator_audit and generator_audit == GENERATOR_TOO_FEW:
        reasons.append("the generator's membership audit had too few records to certify it: audit it on more "
                       "records (GeneratorAuditConfig.max_members) or leave require_generator_audit off")
    elif policy.require_generator_audit and generator_audit not in (GENERATOR_WITHIN, GENERATOR_CERTIFIED):
        reasons.append("the generator was not audited for membership: retrain it (retrain_generator=true)")
    return reasons


def evaluate_gate(*, certificates: Mapping[str, Certificate], test_accuracy: float, policy: RegistryPolicy,
                  audit_power: str = AUDIT_POWER_SHOWN, generator_audit: str = GENERATOR_UNMEASURED,
                  exactness: str = EXACTNESS_VERIFIED, natural_detected: bool | None = True) -> GateDecision:
    """Decide registration under ``policy`` (the written one, tightened by the run). ``certificates``: the final
    audit's ``retained`` and ``forgotten`` certificates (``forgetting.held_certificates``); ``test_accuracy`` a
    fraction (NaN fails); ``audit_power`` ``shown``, ``not_shown`` or ``unverified`` (no canaries);
    ``generator_audit`` is ``generator_audit_verdict`` of the generator's metrics; ``exactness`` is
    ``exactness_verdict`` of the loop's history; ``natural_detected`` whether the iteration-0 audit detected the
    natural members (None: not recorded)."""
    reasons = _policy_reasons(certificates, test_accuracy, audit_power, policy, generator_audit, exactness,
                              natural_detected)
    return GateDecision(not reasons, tuple(reasons))


def requested_verdict(report, tolerance: Tolerance, requested: str = "requested") -> str:
    """The verdict on a deletion request's own records in the final audit ``report`` (an ``AuditReport`` with the
    subset ``requested``): ``distinguishable`` when the exact test detects them, else their certificate's verdict
    (``certified`` / ``not_certified`` / ``too_few``); ``too_few`` when none was evaluated."""
    if requested not in report.results:
        return TOO_FEW
    if report.leak_detected(requested):
        return DISTINGUISHABLE
    return report.certificate(requested).verdict(tolerance)


def certificate_tags(certificates: Mapping[str, Certificate]) -> dict[str, str]:
    """``mia_<set>_n``, ``..._n_non_members``, ``..._auc_high``, ``..._tpr_high`` for the held sets: what the
    promotion rule re-reads under the policy in force then."""
    tags = {}
    for held, certificate in certificates.items():
        tags.update(certificate.tags(f"mia_{held}_"))
    return tags


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
            accuracy = float(tags.get("acc_test", "nan"))
        except ValueError:
            accuracy = float("nan")
        certificates = {held: Certificate.from_tags(tags, f"mia_{held}_") for held in HELD_SETS}
        reasons += [f"under the policy in force now: {reason}" for reason in
                    _policy_reasons(certificates, accuracy, tags.get("audit_power", AUDIT_POWER_UNVERIFIED), policy,
                                    tags.get("generator_audit", GENERATOR_UNMEASURED),
                                    tags.get("unlearning_exactness", EXACTNESS_UNVERIFIED),
                                    {"true": True, "false": False}.get(tags.get("natural_members_detected")))]
    return GateDecision(not reasons, tuple(reasons))
