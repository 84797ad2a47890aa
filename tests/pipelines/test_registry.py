"""The registry gate, ONNX parity and promotion, on a tiny SISA ensemble and a real sqlite registry."""

import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from fairforget.components.canaries import CanaryAudit, SubsetVerdict
from fairforget.components.dataset import make_toy_dataset
from fairforget.components.forgetting import audit_power_verdict
from fairforget.components.gate import (
    GateConfig,
    RegistryPolicy,
    certificate_tags,
    check_promotable,
    evaluate_gate,
    load_policy,
)
from fairforget.components.mia.certify import Certificate
from fairforget.components.sisa.model import SisaConfig, SisaModel
from fairforget.components.training import TrainConfig, images_to_tensor
from fairforget.errors import ConfigError
from fairforget.pipelines.registry import CANDIDATE, CHAMPION, log_classifier, promote, register_if_passed


@pytest.fixture(scope="module")
def toy_ensemble(tmp_path_factory):
    ds = make_toy_dataset()
    sisa = SisaModel.create(ds.split("train"), SisaConfig(num_shards=2, num_slices=2, train=TrainConfig(epochs=2),
                                                          executor="serial"), tmp_path_factory.mktemp("sisa"))
    sisa.train()
    return sisa.ensemble(), ds.split("test").images


def held(auc_high, tpr_high=0.015, n=2000):
    certificate = Certificate(n, 1980, auc_high, tpr_high)
    return {"retained": certificate, "forgotten": certificate}


def gate(auc_high, accuracy, excess, floor, power="shown", **policy):
    return evaluate_gate(certificates=held(auc_high), test_accuracy=accuracy, audit_power=power,
                         policy=RegistryPolicy(max_auc_excess=excess, min_accuracy=floor, **policy))


def test_gate_rules():
    assert gate(0.52, 0.8, 0.03, 0.7).passed
    decision = gate(0.60, 0.6, 0.03, 0.7)
    assert not decision.passed and "retained originals NOT certified: AUC upper bound 0.6000" in decision.reason
    assert "acc/test 0.6000 < min_accuracy 0.7000" in decision.reason
    assert not gate(float("nan"), 0.9, 0.03, 0.0).passed
    assert not gate(0.52, float("nan"), 0.03, 0.0).passed


def test_gate_accepts_a_certificate_only_from_an_audit_that_detected_the_canaries():
    undetected = gate(0.50, 0.9, 0.03, 0.7, power="not_shown")
    assert not undetected.passed and "certification is unverified" in undetected.reason
    unverified = gate(0.50, 0.9, 0.03, 0.7, power="unverified")
    assert not unverified.passed and "none were inserted" in unverified.reason
    assert gate(0.50, 0.9, 0.03, 0.7, power="unverified", require_audit_power=False).passed


def test_audit_power_verdict_follows_the_last_iteration_with_live_canaries():
    def verdict(auc, p_value):
        return SubsetVerdict(auc, 0.0, "mloss", p_value, 0.05 / 6, 20, 20)

    live = CanaryAudit(verdict(0.95, 1e-6), None)
    assert audit_power_verdict(live, []) == "shown"
    assert audit_power_verdict(CanaryAudit(verdict(0.60, 0.2), None), []) == "not_shown"
    assert audit_power_verdict(None, []) == "unverified"
    # every canary forgotten: power must have been shown while some were live, and the forgotten ones be at chance
    history = [{"canary_live_auc": 0.95, "canary_power": 1.0}, {"canary_live_auc": float("nan")}]
    all_forgotten = CanaryAudit(None, verdict(0.55, 0.3))
    assert audit_power_verdict(all_forgotten, history) == "shown"
    assert audit_power_verdict(CanaryAudit(None, verdict(0.90, 1e-5)), history) == "not_shown"
    assert audit_power_verdict(all_forgotten, [{"canary_live_auc": 0.6, "canary_power": 0.0}]) == "not_shown"


def test_run_parameters_only_tighten_the_written_policy(tmp_path):
    policy = load_policy(Path(__file__).resolve().parents[2] / "registry_policy.yaml")
    assert policy == RegistryPolicy()  # the committed policy is the documented default
    looser = policy.tightened(GateConfig(max_auc_excess=0.4, max_tpr_at_1pct_fpr=0.9, min_accuracy=0.0,
                                         require_audit_power=False))
    assert looser == policy
    stricter = policy.tightened(GateConfig(max_auc_excess=0.02, min_accuracy=0.8))
    assert (stricter.max_auc_excess, stricter.min_accuracy, stricter.require_audit_power) == (0.02, 0.8, True)
    assert set(policy.tags()) == {"policy_max_auc_excess", "policy_max_tpr_at_1pct_fpr", "policy_min_accuracy",
                                  "policy_require_certification", "policy_require_audit_power",
                                  "policy_require_exact_unlearning", "policy_require_generator_audit",
                                  "policy_on_failed_deletion", "policy_digest"}
    bad = tmp_path / "policy.yaml"
    bad.write_text("min_accuracy: 1.5\n")
    with pytest.raises(ConfigError, match="min_accuracy must lie in"):
        load_policy(bad)
    bad.write_text("max_auc_excess: 0.7\n")
    with pytest.raises(ConfigError, match="max_auc_excess must lie in"):
        load_policy(bad)
    bad.write_text("mia_treshold: 0.5\n")
    with pytest.raises(ConfigError, match="unknown RegistryPolicy keys"):
        load_policy(bad)


def test_promotion_checks_the_version_against_the_policy_in_force_now():
    good = {"gate": "passed", "data_md5": "a.dir", "audit_data_md5": "a.dir", "audit_time": "20", "data_time": "10",
            "acc_test": "0.83", "audit_power": "shown", "unlearning_exactness": "verified", "natural_members_detected": "true",
            **certificate_tags(held(0.52))}
    assert check_promotable(good, RegistryPolicy()).passed
    assert "under the policy in force now: retained originals NOT certified: AUC upper bound 0.5200" in \
        check_promotable(good, RegistryPolicy(max_auc_excess=0.019)).reason
    assert "could not detect canaries" in check_promotable({**good, "audit_power": "unverified"},
                                                            RegistryPolicy()).reason
    assert "contains_deleted" in check_promotable({**good, "contains_deleted": "true"}).reason
    assert "still distinguishable" in check_promotable({**good, "requested_verdict": "distinguishable"}).reason
    reaudited = {**good, **certificate_tags(held(0.61))}  # a later audit (the audit step rewrites the tags) failed
    assert not check_promotable(reaudited, RegistryPolicy()).passed


def test_promotion_rules():
    good = {"gate": "passed", "data_md5": "a.dir", "audit_data_md5": "a.dir", "audit_time": "20", "data_time": "10"}
    assert check_promotable(good).passed
    assert "only versions that passed" in check_promotable({**good, "gate": "rejected"}).reason
    assert "audit it again" in check_promotable({**good, "audit_data_md5": "b.dir"}).reason
    assert "older than its data" in check_promotable({**good, "audit_time": "5"}).reason
    assert "no audit record" in check_promotable({"gate": "passed"}).reason


def test_gate_passes_registers_candidate_with_tags_and_onnx_matches(tracking_uri, toy_ensemble):
    ensemble, test_images = toy_ensemble
    with mlflow.start_run() as run:
        logged = log_classifier(ensemble, test_images)
        tags = {"data_md5": "m.dir", "audit_data_md5": "m.dir", "audit_time": f"{time.time():.0f}",
                "data_time": "0", "mia_max_success": "0.51"}
        version = register_if_passed(logged, gate(0.51, 0.9, 0.03, 0.5), "toy", tags, "# card")
    assert logged.onnx_max_abs_diff <= 1e-4
    client = mlflow.MlflowClient()
    mv = client.get_model_version_by_alias("toy", CANDIDATE)
    assert str(mv.version) == version and mv.tags["gate"] == "passed" and mv.tags["data_md5"] == "m.dir"
    assert mv.description == "# card"
    assert client.get_run(run.info.run_id).data.metrics["export/onnx_max_abs_diff"] <= 1e-4
    # the registered pyfunc reproduces the ensemble's own probabilities
    model = mlflow.pyfunc.load_model(f"models:/toy@{CANDIDATE}")
    np.testing.assert_allclose(model.predict(images_to_tensor(test_images).numpy()),
                               ensemble.predict_proba(test_images), atol=1e-5)
    assert promote("toy", version).passed
    assert str(client.get_model_version_by_alias("toy", CHAMPION).version) == version


def test_a_registration_cut_short_is_completed_by_the_resumed_run_not_duplicated(tracking_uri, toy_ensemble):
    ensemble, test_images = toy_ensemble
    tags = {"data_md5": "m.dir", "audit_data_md5": "m.dir", "audit_time": f"{time.time():.0f}", "data_time": "0",
            "mia_max_success": "0.51"}
    with mlflow.start_run() as run:
        logged = log_classifier(ensemble, test_images[:16])
        # the run died right after register_model: a version with no gate tags, no card, no alias
        bare = mlflow.register_model(logged.model_uri, "toy3", tags={"run_id": run.info.run_id}).version
        version = register_if_passed(logged, gate(0.51, 0.9, 0.03, 0.5), "toy3", tags, "# card")
        assert register_if_passed(logged, gate(0.51, 0.9, 0.03, 0.5), "toy3", tags, "# card") == version
    client = mlflow.MlflowClient()
    assert version == str(bare) and len(client.search_model_versions("name='toy3'")) == 1
    mv = client.get_model_version_by_alias("toy3", CANDIDATE)
    assert str(mv.version) == version and mv.tags["gate"] == "passed" and mv.description == "# card"
    assert promote("toy3", version).passed


def test_impossible_gate_registers_nothing_and_tags_the_run(tracking_uri, toy_ensemble):
    ensemble, test_images = toy_ensemble
    with mlflow.start_run() as run:
        logged = log_classifier(ensemble, test_images[:16])
        assert register_if_passed(logged, gate(0.5, 0.9, 0.03, 1.0), "toy2", {}) is None
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["gate"] == "rejected" and "min_accuracy 1.0000" in tags["gate_reason"]
    assert mlflow.MlflowClient().search_model_versions("name='toy2'") == []


def test_promote_refuses_an_ungated_version(tracking_uri, toy_ensemble):
    ensemble, test_images = toy_ensemble
    with mlflow.start_run():
        logged = log_classifier(ensemble, test_images[:16])
    version = mlflow.register_model(logged.model_uri, "toy3").version  # registered by hand, bypassing the gate
    decision = promote("toy3", version)
    assert not decision.passed and "carries no gate signature: it was registered by hand" in decision.reason
    with pytest.raises(mlflow.exceptions.MlflowException):
        mlflow.MlflowClient().get_model_version_by_alias("toy3", CHAMPION)
    assert not promote("toy3", 99).passed


def test_a_forged_decision_tag_and_a_laxer_policy_file_are_refused(tracking_uri, toy_ensemble, tmp_path, monkeypatch):
    """Anyone with EDIT on the model can set tags: the gate signs the decision tags, and promote refuses a version
    whose tags changed outside fairforget; a policy file laxer than the committed one is refused too."""
    import yaml

    from fairforget.components.approval import gate_key, signature_problem
    from fairforget.errors import PromotionRefused
    from fairforget.pipelines import forget

    ensemble, test_images = toy_ensemble
    tags = {"data_md5": "m.dir", "audit_data_md5": "m.dir", "audit_time": f"{time.time():.0f}", "data_time": "0"}
    with mlflow.start_run():
        logged = log_classifier(ensemble, test_images[:16])
        first = register_if_passed(logged, gate(0.51, 0.9, 0.03, 0.5), "toy4", tags)
    client = mlflow.MlflowClient()
    assert signature_problem("toy4", first, client.get_model_version("toy4", first).tags, gate_key()) is None
    client.set_model_version_tag("toy4", first, "contains_deleted", "True")  # by hand, as the issue did
    decision = promote("toy4", first)
    assert not decision.passed and "changed outside fairforget" in decision.reason
    client.set_model_version_tag("toy4", first, "contains_deleted", "false")  # undoing it does not help either
    assert "changed outside fairforget" in promote("toy4", first).reason
    # an alias moved by hand (EDIT suffices) onto the forged version: the serve step verifies before it serves
    from fairforget.pipelines.serve import ChampionFollower

    client.set_registered_model_alias("toy4", "champion", first)
    follower = ChampionFollower("toy4", "127.0.0.1", 0)
    try:
        follower.follow_once()
        assert follower.current is None and "changed outside fairforget" in follower.refusal
    finally:
        follower.close()
    client.delete_registered_model_alias("toy4", "champion")

    committed, lax = tmp_path / "committed.yaml", tmp_path / "lax.yaml"
    committed.write_text(yaml.safe_dump({"max_auc_excess": 0.03, "require_certification": True}))
    lax.write_text(yaml.safe_dump({"max_auc_excess": 0.4, "require_certification": False}))
    monkeypatch.setattr(forget, "COMMITTED_POLICY", str(committed))
    with pytest.raises(PromotionRefused, match=r"laxer than the committed .*max_auc_excess 0.4 > 0.03; "
                                               r"require_certification false"):
        forget.promote_version("toy4", first, str(lax))
