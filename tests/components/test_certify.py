"""Certification: upper confidence bounds under a tolerance, checked against independent recomputations
(scikit-learn's AUC with a bootstrap, scipy's Clopper-Pearson interval, brute-force Mann-Whitney p-values)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import binomtest, mannwhitneyu
from sklearn.metrics import roc_auc_score, roc_curve

from fairforget.components.canaries import epsilon_lower_bound, mann_whitney_p_value
from fairforget.components.gate import (
    AUDIT_POWER_SHOWN,
    EXACTNESS_FAILED,
    EXACTNESS_UNVERIFIED,
    EXACTNESS_VERIFIED,
    RegistryPolicy,
    certificate_tags,
    check_promotable,
    evaluate_gate,
    exactness_verdict,
)
from fairforget.components.mia.certify import (
    CERTIFIED,
    EMPTY,
    EMPTY_CERTIFICATE,
    NOT_CERTIFIED,
    TOO_FEW,
    Certificate,
    Tolerance,
    balanced_records_needed,
    clopper_pearson_upper,
    members_needed,
    null_auc_upper,
    resolvable,
    tpr_upper_at_fpr,
)
from fairforget.components.mia.config import AuditConfig, attacks_for_count
from fairforget.components.mia.metrics import evaluate_scores
from fairforget.errors import ConfigError

DEFAULT = Tolerance()


def _scores(n_members, n_non_members, shift, seed=0):
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(shift, 1.0, n_members), rng.normal(0.0, 1.0, n_non_members)]
    is_member = np.r_[np.ones(n_members, bool), np.zeros(n_non_members, bool)]
    return is_member, scores


@pytest.mark.parametrize("successes,trials", [(0, 50), (3, 50), (20, 2000), (49, 50), (500, 1000)])
def test_clopper_pearson_upper_equals_scipys_exact_interval(successes, trials):
    expected = binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="exact").high
    assert clopper_pearson_upper(successes, trials) == pytest.approx(expected, abs=1e-9)
    assert clopper_pearson_upper(trials, trials) == 1.0


@pytest.mark.parametrize("shift", [0.0, 0.4])
def test_tpr_upper_bound_equals_an_independent_recomputation(shift):
    """The cut that lets at most 1% of the non-members through, found on scikit-learn's ROC curve; the members
    above it counted; scipy's Clopper-Pearson upper end."""
    is_member, scores = _scores(1500, 1500, shift)
    fpr, tpr, thresholds = roc_curve(is_member, scores, drop_intermediate=False)
    best = np.flatnonzero(fpr <= 0.01)[-1]
    members_above = int(round(tpr[best] * is_member.sum()))
    expected = binomtest(members_above, int(is_member.sum())).proportion_ci(method="exact").high
    assert tpr_upper_at_fpr(is_member, scores) == pytest.approx(expected, abs=1e-9)


def test_auc_upper_bound_matches_a_scikit_learn_bootstrap():
    """The audit's bootstrap interval of the AUC against scikit-learn's AUC on 1000 resamples of our own."""
    is_member, scores = _scores(800, 800, 0.3, seed=1)
    ours = evaluate_scores(is_member, scores, 0.0, fpr_levels=(), num_bootstrap=1000, seed=3)["auc"]
    rng = np.random.default_rng(7)
    members, non_members = np.flatnonzero(is_member), np.flatnonzero(~is_member)
    aucs = []
    for _ in range(1000):
        rows = np.r_[rng.choice(members, len(members)), rng.choice(non_members, len(non_members))]
        aucs.append(roc_auc_score(is_member[rows], scores[rows]))
    assert ours.value == pytest.approx(roc_auc_score(is_member, scores), abs=1e-12)
    assert ours.ci_high == pytest.approx(np.percentile(aucs, 97.5), abs=0.006)
    assert ours.ci_low == pytest.approx(np.percentile(aucs, 2.5), abs=0.006)


def test_resolution_needs_the_records_the_null_variance_says():
    """At the default tolerance (AUC 0.53, TPR 0.02) a balanced audit needs several hundred evaluation records a
    side; one record fewer than ``members_needed`` does not resolve it."""
    needed = balanced_records_needed(DEFAULT)
    assert 700 <= needed <= 1300
    assert resolvable(needed, needed, DEFAULT) and not resolvable(needed - 1, needed - 1, DEFAULT)
    with_default_pool = members_needed(1980, DEFAULT)
    assert resolvable(with_default_pool, 1980, DEFAULT) and not resolvable(with_default_pool - 1, 1980, DEFAULT)
    assert null_auc_upper(1980, 1980, DEFAULT) < 0.52  # the default data's final audit resolves 0.53
    assert members_needed(99, DEFAULT) is None  # TPR at 1% FPR needs 100 non-members: no member count helps


def _null_pass_rate(n: int, attacks: int, rng: np.random.Generator, repeats: int = 300) -> float:
    """How often the largest TPR-at-1%-FPR upper bound of ``attacks`` independent scores unrelated to membership
    (n members, n non-members) is within the default tolerance."""
    is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    return float(np.mean([max(tpr_upper_at_fpr(is_member, rng.normal(size=2 * n)) for _ in range(attacks))
                          <= DEFAULT.max_tpr_at_1pct_fpr for _ in range(repeats)]))


def test_power_with_several_attacks_matches_a_simulation():
    """The rule takes the largest bound over the attacks: with 6 attacks (the default recipe's) a set at chance
    passes less than half the time with one evaluation half of the default data (1980 a side), and about half the
    time at the records ``resolvable(..., attacks=6)`` asks for; the cross-fitted default audit (3960) has them."""
    rng = np.random.default_rng(0)
    assert resolvable(1980, 1980, DEFAULT) and not resolvable(1980, 1980, DEFAULT, attacks=6)
    needed = balanced_records_needed(DEFAULT, attacks=6)
    assert 1980 < needed < 3960 and resolvable(3960, 4000, DEFAULT, attacks=6)
    assert _null_pass_rate(round(0.8 * needed), 6, rng) < 0.45
    assert 0.42 < _null_pass_rate(needed, 6, rng) < 0.65
    assert _null_pass_rate(3960, 6, rng) > 0.8
    # one attack: the rule is the single-bound rule it always was
    assert balanced_records_needed(DEFAULT, attacks=1) == balanced_records_needed(DEFAULT)


def test_low_power_failure_is_inconclusive_not_a_leak():
    """Bounds above the tolerance from an audit too small for its attack count read ``too_few`` (with the records
    needed), bounds within it certify whatever the power, and the attack count survives the version tags."""
    underpowered = Certificate(1980, 1980, 0.52, 0.021, "rmia", "entropy", n_attacks=6)
    assert underpowered.verdict(DEFAULT) == TOO_FEW and not underpowered.certified(DEFAULT)
    assert str(members_needed(1980, DEFAULT, attacks=6)) in underpowered.explain(DEFAULT)
    assert "0.0210" in underpowered.explain(DEFAULT)  # the bounds it saw are still said
    assert Certificate(1980, 1980, 0.52, 0.019, n_attacks=6).verdict(DEFAULT) == CERTIFIED
    assert Certificate(3960, 4000, 0.52, 0.021, n_attacks=6).verdict(DEFAULT) == NOT_CERTIFIED
    tags = underpowered.tags("mia_forgotten_")
    assert Certificate.from_tags(tags, "mia_forgotten_").verdict(DEFAULT) == TOO_FEW
    legacy = {k: v for k, v in tags.items() if not k.endswith("attacks")}  # tagged before the count was written
    assert Certificate.from_tags(legacy, "mia_forgotten_").verdict(DEFAULT) == NOT_CERTIFIED
    # a leak the exact test detects is no "too few": the colour-folder run's forgotten originals, 390 a side
    detected = Certificate(390, 390, 0.612, 0.053, "rmia", "rmia", n_attacks=6, leak_p_value=0.0009,
                           leak_level=0.05 / 6)
    assert detected.verdict(DEFAULT) == NOT_CERTIFIED and "membership detected" in detected.explain(DEFAULT)
    assert Certificate.from_tags(detected.tags("t_"), "t_").verdict(DEFAULT) == NOT_CERTIFIED
    undetected = Certificate(390, 390, 0.612, 0.053, "rmia", "rmia", n_attacks=6, leak_p_value=0.02,
                             leak_level=0.05 / 6)
    assert undetected.verdict(DEFAULT) == TOO_FEW


def test_verdicts_from_figures():
    assert Certificate(2000, 1980, 0.52, 0.015).verdict(DEFAULT) == CERTIFIED
    # today's default registration: retained RMIA AUC 0.554 [0.535, 0.572]
    assert Certificate(1600, 1980, 0.572, 0.055).verdict(DEFAULT) == NOT_CERTIFIED
    assert Certificate(1600, 1980, 0.52, 0.021).verdict(DEFAULT) == NOT_CERTIFIED  # the TPR bound alone fails it
    small = Certificate(50, 1980, 0.51, 0.0)
    assert small.verdict(DEFAULT) == TOO_FEW and not small.certified(DEFAULT)  # never a pass
    assert "too few records to certify" in small.explain(DEFAULT) and str(members_needed(1980, DEFAULT)) in \
        small.explain(DEFAULT)
    assert EMPTY_CERTIFICATE.verdict(DEFAULT) == EMPTY and EMPTY_CERTIFICATE.certified(DEFAULT)
    unevaluated = Certificate(0, 1980, 0.5, 0.0)  # the set has records, none landed in the evaluation half
    assert unevaluated.verdict(DEFAULT) == TOO_FEW and not unevaluated.certified(DEFAULT)
    metrics = small.metrics("mia/retained/", DEFAULT)
    assert metrics["mia/retained/certified"] == 0.0 and metrics["mia/retained/members_needed"] > 50
    tags = Certificate(1600, 1980, 0.572, 0.055, "rmia").tags("mia_retained_")
    assert Certificate.from_tags(tags, "mia_retained_").verdict(DEFAULT) == NOT_CERTIFIED


@pytest.mark.parametrize("tolerance,match", [(Tolerance(max_auc_excess=0.0), "max_auc_excess"),
                                             (Tolerance(max_tpr_at_1pct_fpr=0.01), "max_tpr_at_1pct_fpr"),
                                             (Tolerance(confidence=1.0), "confidence")])
def test_tolerance_refuses_values_nothing_could_pass(tolerance, match):
    with pytest.raises(ConfigError, match=match):
        tolerance.validate()


def test_degenerate_attacks_leave_the_default_list_without_augmentation():
    """With one query per image M-Mean equals M-Loss and M-Std is constant: neither counts as an attack."""
    kept = AuditConfig().for_recipe(None).attacks
    assert "mmean" in kept and "mstd" in kept  # ten augmented copies: all eight are distinct attacks
    from fairforget.components.training import TrainConfig

    no_augmentation = AuditConfig().for_recipe(TrainConfig(augment=False)).attacks
    assert "mmean" not in no_augmentation and "mstd" not in no_augmentation and "mloss" in no_augmentation
    assert attacks_for_count(("mstd",), 1) == ("mstd",)  # nothing left would be no audit at all


# ---- the gate on certificates ----------------------------------------------------------------------------
CERTIFIED_SETS = {"retained": Certificate(1000, 1980, 0.52, 0.015), "forgotten": Certificate(3000, 1980, 0.515, 0.012)}


def test_gate_rejects_todays_default_registration_and_accepts_certified_sets():
    policy = RegistryPolicy()
    passed = evaluate_gate(certificates=CERTIFIED_SETS, test_accuracy=0.84, policy=policy)
    assert passed.passed, passed.reason
    leaky = {**CERTIFIED_SETS, "retained": Certificate(1598, 1980, 0.572, 0.055, "rmia", "rmia")}
    rejected = evaluate_gate(certificates=leaky, test_accuracy=0.84, policy=policy)
    assert not rejected.passed and "retained originals NOT certified" in rejected.reason
    assert "0.5720 (rmia)" in rejected.reason
    generator_channel = {**CERTIFIED_SETS, "forgotten": Certificate(3000, 1980, 0.541, 0.02)}
    assert "forgotten originals NOT certified" in evaluate_gate(certificates=generator_channel, test_accuracy=0.84,
                                                                policy=policy).reason
    too_few = {**CERTIFIED_SETS, "forgotten": Certificate(40, 1980, 0.5, 0.0)}
    assert "too few records to certify" in evaluate_gate(certificates=too_few, test_accuracy=0.84,
                                                         policy=policy).reason
    everything_forgotten = {"retained": EMPTY_CERTIFICATE, "forgotten": CERTIFIED_SETS["forgotten"]}
    assert evaluate_gate(certificates=everything_forgotten, test_accuracy=0.84, policy=policy).passed


def test_gate_requires_exact_unlearning_and_a_stricter_run_cannot_loosen():
    policy = RegistryPolicy()
    for exactness, passes in ((EXACTNESS_VERIFIED, True), (EXACTNESS_UNVERIFIED, False), (EXACTNESS_FAILED, False)):
        decision = evaluate_gate(certificates=CERTIFIED_SETS, test_accuracy=0.84, policy=policy,
                                 audit_power=AUDIT_POWER_SHOWN, exactness=exactness)
        assert decision.passed is passes, exactness
    assert exactness_verdict([{"unlearn_exact": float("nan")}, {"unlearn_exact": 1.0}]) == EXACTNESS_UNVERIFIED
    assert exactness_verdict([{"iteration": 0}, {"unlearn_exact": 1.0}]) == EXACTNESS_VERIFIED
    assert exactness_verdict([{"unlearn_exact": 0.0}]) == EXACTNESS_FAILED
    nan, final = float("nan"), {"stage": "final_exactness", "unlearn_exact": 1.0}
    assert exactness_verdict([{"unlearn_exact": nan}, {"unlearn_exact": nan}, final]) == EXACTNESS_VERIFIED
    assert exactness_verdict([{"unlearn_exact": nan}, final, {"unlearn_exact": nan}]) == EXACTNESS_UNVERIFIED
    assert exactness_verdict([{"unlearn_exact": nan}, final, {"unlearn_exact": 1.0}]) == EXACTNESS_VERIFIED
    assert exactness_verdict([{"unlearn_exact": nan}, {**final, "unlearn_exact": 0.0}]) == EXACTNESS_FAILED
    from fairforget.components.gate import GateConfig

    stricter = policy.tightened(GateConfig(max_auc_excess=0.01, max_tpr_at_1pct_fpr=0.5))
    assert (stricter.max_auc_excess, stricter.max_tpr_at_1pct_fpr) == (0.01, 0.02)


def test_gate_needs_the_natural_members_detected_at_iteration_0():
    policy = RegistryPolicy()
    for natural, passes in ((True, True), (False, False), (None, False)):
        decision = evaluate_gate(certificates=CERTIFIED_SETS, test_accuracy=0.84, policy=policy,
                                 natural_detected=natural)
        assert decision.passed is passes, natural
    assert "did not detect the natural members" in evaluate_gate(
        certificates=CERTIFIED_SETS, test_accuracy=0.84, policy=policy, natural_detected=False).reason
    assert evaluate_gate(certificates=CERTIFIED_SETS, test_accuracy=0.84, natural_detected=False,
                         policy=RegistryPolicy(require_audit_power=False)).passed


def test_promotion_rereads_the_certificates_under_the_policy_in_force():
    tags = {"gate": "passed", "data_md5": "a.dir", "audit_data_md5": "a.dir", "audit_time": "2", "data_time": "1",
            "acc_test": "0.84", "audit_power": "shown", "unlearning_exactness": "verified", "natural_members_detected": "true",
            **certificate_tags(CERTIFIED_SETS)}
    assert check_promotable(tags, RegistryPolicy()).passed
    refused = check_promotable(tags, RegistryPolicy(max_auc_excess=0.01))
    assert not refused.passed and "under the policy in force now: retained originals" in refused.reason
    missing = {k: v for k, v in tags.items() if not k.startswith("mia_forgotten_")}
    assert "forgotten originals have no certificate" in check_promotable(missing, RegistryPolicy()).reason


def test_policy_file_refuses_quoted_numbers(tmp_path):
    from fairforget.components.gate import load_policy

    path = tmp_path / "policy.yaml"
    path.write_text("max_auc_excess: '0.03'\n")
    with pytest.raises(ConfigError, match="max_auc_excess must be a number"):
        load_policy(path)
    path.write_text("require_audit_power: 'yes'\n")
    with pytest.raises(ConfigError, match="require_audit_power must be a true/false"):
        load_policy(path)
    path.write_text("on_failed_deletion: delete\n")
    with pytest.raises(ConfigError, match="on_failed_deletion must be one of unserve, keep"):
        load_policy(path)
    from fairforget.pipelines.tracking import project_path

    assert load_policy(project_path("registry_policy.yaml")).on_failed_deletion == "unserve"


# ---- canaries: exact p-values and the empirical epsilon -------------------------------------------------
def _brute_force_p_value(members, non_members):
    """P(U >= u_observed) over every equally likely assignment of the pooled scores to the two groups."""
    pooled = np.r_[members, non_members]
    observed = sum(float(m > n) for m in members for n in non_members)
    count = total = 0
    for chosen in itertools.combinations(range(len(pooled)), len(members)):
        rest = [i for i in range(len(pooled)) if i not in chosen]
        u = sum(float(pooled[i] > pooled[j]) for i in chosen for j in rest)
        count += u >= observed - 1e-12
        total += 1
    return count / total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_canary_p_values_are_exact_at_small_counts(seed):
    rng = np.random.default_rng(seed)
    members, non_members = rng.normal(0.8, 1, 5), rng.normal(0, 1, 5)
    p = mann_whitney_p_value(members, non_members)
    assert p == pytest.approx(_brute_force_p_value(members, non_members), abs=1e-12)
    assert p == pytest.approx(mannwhitneyu(members, non_members, alternative="greater", method="exact").pvalue)
    # the case the normal bound got wrong: one member ranked above one non-member is p = 1/2, not "detected"
    assert mann_whitney_p_value([1.0], [0.0]) == pytest.approx(0.5)
    # 20 members all above 20 non-members: p = 1 / C(40, 20)
    assert mann_whitney_p_value(np.arange(20) + 100.0, np.arange(20.0)) == pytest.approx(1 / math.comb(40, 20))


def test_epsilon_lower_bound_from_canary_pairs():
    all_right = epsilon_lower_bound(np.ones(40), np.zeros(40))
    p_low = 0.05 ** (1 / 40)  # Clopper-Pearson lower bound of 40 / 40 at 95%, one-sided
    assert all_right == pytest.approx(math.log(p_low / (1 - p_low)) / 2)
    assert 1.2 < all_right < 1.4
    rng = np.random.default_rng(0)
    assert epsilon_lower_bound(rng.normal(size=40), rng.normal(size=40)) == 0.0  # a coin flip proves nothing
    assert epsilon_lower_bound(np.zeros(10), np.zeros(10)) == 0.0  # every pair tied: no guess made
