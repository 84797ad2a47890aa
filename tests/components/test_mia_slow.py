"""Real-data audit at the default sizes (marked slow: FAIRFORGET_SLOW=1; needs the prepared data in data/)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fairforget.components.mia import AuditConfig, audit_membership, split_audit_pool, torch_predictor
from fairforget.components.mia.reference import train_reference_models
from fairforget.components.models import build_classifier
from fairforget.components.training import TrainConfig, fit_classifier


@pytest.mark.slow
def test_default_audit_of_a_model_that_never_saw_the_members_is_at_chance(real_dataset):
    data = real_dataset
    members = data.split("train")
    members = members.select(members.manifest["origin"].to_numpy() == "real")
    reference_half, non_members = split_audit_pool(data.split("audit"), seed=0)
    outsiders = data.split("reference")  # balanced, never a member nor a non-member here
    quick = TrainConfig(epochs=3)
    model = build_classifier("small_cnn", data.num_classes, data.images.shape[3], data.images.shape[1], seed=5)
    outsiders = outsiders.select(np.random.default_rng(5).permutation(len(outsiders)) < 4000)  # all classes
    fit_classifier(model, outsiders.images, outsiders.labels, quick, seed=5)
    references = train_reference_models(reference_half, num_models=1, train_config=quick, seed=0)
    start = time.perf_counter()
    report = audit_membership(torch_predictor(model), members, non_members, config=AuditConfig(show_progress=False),
                              reference_predicts=references)
    seconds = time.perf_counter() - start
    print(report.summary(), f"\naudit: {seconds:.1f} s")
    assert report.sizes["evaluation_members"] == report.sizes["evaluation_non_members"] == 2000
    assert report.non_member_accuracy > 0.6  # a real classifier (chance is 0.1), not a constant
    assert report.chance_bound["all"] <= 0.53
    for attack, result in report.results["all"].items():
        assert result.estimates["success"].value <= 0.53, attack
        assert 0.46 < result.estimates["auc"].value < 0.54, attack


@pytest.mark.slow
def test_the_default_recipe_s_natural_members_are_detected_at_iteration_0(tmp_path, real_dataset):
    """The power the certification needs on natural records: the default SISA recipe trained on the biased S, audited
    as the pipeline audits (every original against the non-member half, RMIA with four reference ensembles built
    like the target), shows its members: some attack's AUC interval lies above 0.5, and it is not certified.
    (experiments/certify_controls.py measured RMIA AUC 0.572, upper bound 0.591.)"""
    from fairforget.components.canaries import cut_audit_pool
    from fairforget.components.mia.reference import train_reference_ensembles
    from fairforget.components.sisa.model import SisaConfig, SisaModel

    data = real_dataset
    originals = data.split("train")
    pool = cut_audit_pool(data.split("audit"), canaries=40, seed=0)
    sisa = SisaModel.create(originals, SisaConfig(audit_exactness=False), tmp_path / "sisa")
    sisa.train()
    references = train_reference_ensembles(pool.reference_half, sisa_config=sisa.config, num_models=4,
                                           state_dir=tmp_path / "references")
    report = audit_membership(sisa.ensemble().predict_proba, originals, pool.non_members,
                              config=AuditConfig(show_progress=False).for_recipe(sisa.config.train),
                              reference_predicts=references)
    print(report.summary())
    assert report.leak_detected() and report.results["all"]["rmia"].estimates["auc"].ci_low > 0.5
    assert not report.certified()
