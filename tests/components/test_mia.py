"""Membership-inference audits: metrics against scikit-learn, augmentations, attacks, protocol and behaviour.

Behaviour tests use real small_cnn models trained here on tiny 8x8 data: one memorises random labels (clearly
attackable), one never saw the audited records (chance level). A few seconds each on 2 cores.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from fairforget.components.dataset import Dataset, make_toy_dataset
from fairforget.components.mia import (
    ATTACKS,
    AuditConfig,
    audit_membership,
    audit_per_model,
    split_audit_pool,
    torch_predictor,
)
from fairforget.components.mia.augmentations import FixedAugmentation, make_fixed_augmentations
from fairforget.components.mia.certify import TOO_FEW, Tolerance
from fairforget.components.mia.metrics import (
    balanced_accuracy,
    chance_success_bound,
    check_fpr_levels,
    evaluate_scores,
    fit_threshold,
    roc_auc,
    roc_curve_points,
    tpr_at_fpr,
)
from fairforget.components.mia.moments import loss_moments
from fairforget.components.mia.protocol import class_matched_rows, split_calibration_evaluation
from fairforget.components.mia.queries import QueryOutputs, probabilities_from_logits, true_class_loss
from fairforget.components.models import SmallCNN
from fairforget.components.training import TrainConfig, apply_augmentation, fit_classifier

FAST = AuditConfig(fpr_levels=(0.01,), num_bootstrap=50, show_progress=False)
LAX = Tolerance(max_auc_excess=0.15, max_tpr_at_1pct_fpr=0.1)  # what 200 + 200 evaluation records can resolve



# ---------------------------------------------------------------- metrics vs scikit-learn / direct counts
@pytest.fixture
def scored():
    rng = np.random.default_rng(3)
    is_member = rng.random(1500) < 0.45
    # rounded scores: many ties, which is where ROC implementations differ
    scores = np.round(rng.normal(0.4 * is_member, 1.0), 1)
    return is_member, scores


def test_roc_auc_and_tpr_agree_with_scikit_learn(scored):
    is_member, scores = scored
    fpr, tpr, thresholds = roc_curve_points(is_member, scores)
    sk_fpr, sk_tpr, sk_thresholds = roc_curve(is_member, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thresholds[1:], sk_thresholds[1:])
    assert roc_auc(is_member, scores) == pytest.approx(roc_auc_score(is_member, scores), abs=1e-12)
    for level in (0.01, 0.05, 0.2):
        assert tpr_at_fpr(is_member, scores, level) == pytest.approx(sk_tpr[sk_fpr <= level].max())


def test_balanced_accuracy_is_a_direct_count(scored):
    is_member, scores = scored
    predicted = scores >= 0.2
    tp = sum(1 for m, p in zip(is_member, predicted) if m and p)
    tn = sum(1 for m, p in zip(is_member, predicted) if not m and not p)
    expected = (tp / is_member.sum() + tn / (~is_member).sum()) / 2
    assert balanced_accuracy(is_member, predicted) == pytest.approx(expected)
    estimates = evaluate_scores(is_member, scores, 0.2, fpr_levels=(0.01,), num_bootstrap=100)
    assert estimates["success"].value == pytest.approx(expected)
    assert estimates["advantage"].value == pytest.approx(2 * expected - 1)
    assert estimates["auc"].value == pytest.approx(roc_auc_score(is_member, scores))
    for estimate in estimates.values():
        assert estimate.ci_low <= estimate.value <= estimate.ci_high
    assert estimates["auc"].ci_high - estimates["auc"].ci_low > 0.01  # the bootstrap does resample


def test_fit_threshold_maximises_balanced_accuracy(scored):
    is_member, scores = scored
    best = max(balanced_accuracy(is_member, scores >= t) for t in np.r_[np.unique(scores), np.inf])
    threshold = fit_threshold(is_member, scores)
    assert np.isfinite(threshold)
    assert balanced_accuracy(is_member, scores >= threshold) == pytest.approx(best)


def test_too_few_non_members_for_an_fpr_level_says_how_many():
    with pytest.raises(ValueError, match="at least 1000 evaluation non-members, got 999"):
        check_fpr_levels((0.01, 0.001), 999)
    check_fpr_levels((0.01, 0.001), 1000)


def test_chance_bound_for_default_sizes():
    assert 0.515 < chance_success_bound(2000, 2000, 0.05, 8) <= 0.53


# ---------------------------------------------------------------- augmentations and per-sample signals
def test_fixed_augmentations_replay_the_training_family():
    augmentations = make_fixed_augmentations(10, padding=4, seed=0)
    assert augmentations[0] == FixedAugmentation(False, 0, 0)
    assert len(set(augmentations)) == 10
    assert augmentations == make_fixed_augmentations(10, padding=4, seed=0)
    images = np.random.default_rng(0).integers(0, 256, size=(5, 12, 12, 1), dtype=np.uint8)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32))
    for aug in augmentations:
        # training.py crops the 4 px zero-padded image at offset (4 + dy, 4 + dx)
        n = len(images)
        expected = apply_augmentation(x, torch.full((n,), aug.flip), torch.full((n,), 4 + aug.dy),
                                      torch.full((n,), 4 + aug.dx), padding=4)
        np.testing.assert_array_equal(aug.apply(images), expected.numpy().transpose(0, 2, 3, 1).astype(np.uint8))
    with pytest.raises(ValueError, match="distinct"):
        make_fixed_augmentations(3, padding=0)


def test_true_class_loss_and_moments_match_direct_formulas():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(40, 6, 5))
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, 5, size=40)
    direct = -np.log(probabilities[np.arange(40)[:, None], np.arange(6)[None, :], labels[:, None]])
    losses = true_class_loss(probabilities, labels)
    np.testing.assert_allclose(losses, direct, rtol=1e-9)
    # a confident prediction keeps its loss even when p_y rounds to 1
    confident = np.array([[1.0 - 1e-20, 1e-20]])
    assert true_class_loss(confident, np.array([0]))[0] == pytest.approx(1e-20, rel=1e-6)
    moments = loss_moments(losses, 20)
    for k in (1, 2, 7, 20):
        np.testing.assert_allclose(moments[:, k - 1], np.mean(losses ** k, axis=1) ** (1 / k), rtol=1e-9)


def test_metric_statistics_match_song_and_mittal():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(4), size=30)
    labels = rng.integers(0, 4, size=30)
    queries = QueryOutputs(p[:, None, :], labels)
    for name, formula in {
        "confidence": lambda q, y: q[y],
        "entropy": lambda q, y: -sum(v * np.log(v) for v in q),
        "modified_entropy": lambda q, y: -(1 - q[y]) * np.log(q[y]) - sum(q[k] * np.log(1 - q[k]) for k in range(4)
                                                                          if k != y),
    }.items():
        statistic = ATTACKS[name](FAST).statistic(queries)
        np.testing.assert_allclose(statistic, [formula(q, y) for q, y in zip(p, labels)], rtol=1e-9)


# ---------------------------------------------------------------- protocol and bad input
def _pair(n_members=240, n_non=240, seed=0):
    data = make_toy_dataset(per_class_train=(n_members // 4,) * 4, per_class_other=n_non // 4, seed=seed)
    return data.split("train"), data.split("audit")


def test_split_is_deterministic_disjoint_equal_and_stratified():
    members, non_members = _pair(200, 160)
    split = split_calibration_evaluation(members, non_members, FAST)
    again = split_calibration_evaluation(members.by_ids(members.ids[::-1]), non_members, FAST)
    assert list(split.calibration_members.ids) == list(again.calibration_members.ids)  # order-independent
    sizes = split.sizes()
    assert sizes["calibration_members"] + sizes["evaluation_members"] == 160  # equal numbers: min of both
    assert sizes["calibration_non_members"] + sizes["evaluation_non_members"] == 160
    all_ids = [i for part in (split.calibration_members, split.calibration_non_members, split.evaluation_members,
                              split.evaluation_non_members) for i in part.ids]
    assert len(all_ids) == len(set(all_ids))
    counts = pd.Series(split.calibration_non_members.labels).value_counts()
    assert set(counts) == {20}  # half of each class
    other = split_calibration_evaluation(members, non_members, dataclasses.replace(FAST, seed=1))
    assert set(other.calibration_members.ids) != set(split.calibration_members.ids)


def test_split_audit_pool_halves_by_class():
    audit = make_toy_dataset(per_class_other=10).split("audit")
    reference, non_members = split_audit_pool(audit, seed=0)
    assert len(reference) == len(non_members) == 20
    assert not set(reference.ids) & set(non_members.ids)
    assert list(pd.Series(reference.labels).value_counts().sort_index()) == [5, 5, 5, 5]


def _uniform_predict(num_classes):
    return lambda images: np.full((len(images), num_classes), 1.0 / num_classes)


@pytest.mark.parametrize("problem, match", [
    ("overlap", "both members and non-members"),
    ("unknown_attack", "unknown attack 'lira'; known attacks: confidence"),
    ("class_mismatch", "predicts 5 classes but the data has 4"),
    ("rmia_without_reference", "rmia needs at least one reference model"),
    ("subset_not_members", "not members"),
    ("too_few", "at least 1000 evaluation non-members"),
    ("logits", "not probabilities"),
])
def test_bad_input_gives_a_clear_error(problem, match):
    members, non_members = _pair()
    predict, attacks, kwargs, config = _uniform_predict(4), ["mloss"], {}, FAST
    if problem == "overlap":
        non_members = non_members.concat(members.select(np.arange(len(members)) < 3))
    elif problem == "unknown_attack":
        attacks = ["mloss", "lira"]
    elif problem == "class_mismatch":
        predict = _uniform_predict(5)
    elif problem == "rmia_without_reference":
        attacks = ["rmia"]
    elif problem == "subset_not_members":
        kwargs["member_subsets"] = {"forgotten": list(non_members.ids[:2])}
    elif problem == "too_few":
        config = dataclasses.replace(FAST, fpr_levels=(0.001,))
    elif problem == "logits":
        def predict(images):
            return np.full((len(images), 4), 3.0)
    with pytest.raises(ValueError, match=match):
        audit_membership(predict, members, non_members, attacks=attacks, config=config, **kwargs)


# ---------------------------------------------------------------- behaviour with real trained models
def _noise_dataset(n, seed, prefix, num_classes=4):
    """Pure-noise 8x8 images with random labels: a model can only memorise them."""
    rng = np.random.default_rng(seed)
    manifest = pd.DataFrame({"id": [f"{prefix}-{i:04d}" for i in range(n)], "split": "train",
                             "label": rng.integers(0, num_classes, n)})
    manifest["class_name"] = manifest["label"].map(lambda k: "abcd"[k])
    manifest["superclass"] = manifest["class_name"].map({"a": "big", "b": "big", "c": "small", "d": "small"})
    manifest["origin"] = "real"
    images = rng.integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8)
    return Dataset(manifest, images, list("abcd"), {"a": "big", "b": "big", "c": "small", "d": "small"})


def _train(dataset, seed, epochs):
    with torch.random.fork_rng(devices=[]):  # the former small_cnn and recipe: these figures were calibrated on it
        torch.manual_seed(seed)
        model = SmallCNN(4, 1, batch_norm=False)
    return fit_classifier(model, dataset.images, dataset.labels,
                          TrainConfig(epochs=epochs, batch_size=100, lr=5e-3, augment=False, schedule="constant"),
                          seed=seed)


@pytest.fixture(scope="module")
def memorised():
    """400 members (300 retained: trained on; 100 'forgotten': never trained on, as after exact unlearning),
    400 non-members, a model that memorised the retained ones (40 epochs), a reference model and a model that
    never saw any of them (each trained on other noise)."""
    members = _noise_dataset(400, 0, "member")
    non_members = _noise_dataset(400, 1, "non")
    retained = members.select(np.arange(400) < 300)
    model = _train(retained, seed=0, epochs=40)
    reference = _train(_noise_dataset(300, 2, "ref"), seed=1, epochs=10)
    never_saw = _train(_noise_dataset(300, 3, "other"), seed=2, epochs=10)
    return members, non_members, retained, torch_predictor(model), torch_predictor(reference), torch_predictor(never_saw)


def test_overfit_model_is_clearly_attackable_and_forgotten_records_are_not(memorised):
    members, non_members, retained, predict, reference, _ = memorised
    assert np.mean(predict(retained.images).argmax(1) == retained.labels) > 0.97  # it did memorise
    forgotten = [i for i in members.ids if i not in set(retained.ids)]
    report = audit_membership(predict, members, non_members, config=FAST, reference_predicts=[reference],
                              member_subsets={"forgotten": forgotten, "retained": list(retained.ids)})
    retained_loss = report.results["retained"]["mloss"].estimates
    assert retained_loss["success"].value >= 0.65 and retained_loss["auc"].value >= 0.7
    all_loss = report.results["all"]["mloss"].estimates
    assert all_loss["success"].value >= 0.65 and all_loss["auc"].value >= 0.7
    # the memorised records are visibly members; the 100 forgotten records (never trained on) are not detected but
    # too few to certify at the default tolerance. Their class mix (a third class c, against a fifth among the
    # non-members) once made them "detected" (exact test p 0.004) against every non-member; they are judged
    # against class-matched non-members now
    assert report.leak_detected("retained") and not report.certified("retained")
    assert not report.leak_detected("forgotten") and report.certificate("forgotten").verdict(Tolerance()) == TOO_FEW
    assert not report.certified("retained", LAX)
    assert "forgotten: " in report.summary()
    metrics = report.metrics()
    for attack in ATTACKS:
        for metric in ("success", "auc", "tpr_at_1pct_fpr", "advantage"):
            assert f"mia/{attack}/{metric}" in metrics and f"mia/{attack}/{metric}_ci_low" in metrics
            assert f"mia/forgotten/{attack}/{metric}" in metrics
    assert metrics["mia/max_success"] == max(metrics[f"mia/{a}/success"] for a in ATTACKS)
    assert metrics["mia/accuracy_gap"] > 0.5
    assert metrics["mia/forgotten/certified"] == 0.0 and metrics["mia/retained/leak_detected"] == 1.0
    # a detection is a test: the smallest one-sided Mann-Whitney p-value over the attacks (scipy recomputation)
    from scipy.stats import mannwhitneyu

    results = report.results["retained"].values()
    method = "asymptotic" if min(next(iter(results)).n_members, next(iter(results)).n_non_members) > 20 else "exact"
    expected = min(mannwhitneyu(r.scores[r.is_member], r.scores[~r.is_member], alternative="greater",
                                method=method).pvalue for r in results)
    assert report.leak_p_value("retained") == pytest.approx(expected, rel=1e-9)
    assert metrics["mia/retained/leak_p_value"] == report.leak_p_value("retained") < 0.05 / len(ATTACKS)
    table = report.table()
    assert len(table) == 3 * len(ATTACKS) and set(table["subset"]) == {"all", "forgotten", "retained"}
    # reported figures are recomputed from the evaluation ROC curve scikit-learn would draw
    result = report.results["all"]["mmean"]
    assert result.estimates["auc"].value == pytest.approx(np.trapezoid(result.tpr, result.fpr))


def test_model_that_never_saw_the_members_sits_at_chance(memorised):
    members, non_members, _, _, reference, never_saw = memorised
    # 50 members with the non-members' class mix
    shares = np.bincount(non_members.labels, minlength=4) / len(non_members)
    few = [i for label, share in enumerate(shares) for i in members.ids[members.labels == label][:round(50 * share)]]
    report = audit_membership(never_saw, members, non_members, config=FAST, reference_predicts=[reference],
                              member_subsets={"few": few})
    bound = report.chance_bound["all"]
    # cross-fitted: all 400 + 400 audited records are measured, not the 200 + 200 of one evaluation half
    assert bound == pytest.approx(chance_success_bound(400, 400, 0.05, len(ATTACKS)))
    for attack, result in report.results["all"].items():
        assert result.estimates["success"].value <= bound, attack
        assert 0.4 < result.estimates["auc"].value < 0.6, attack
    assert report.certified("all", LAX) and not report.leak_detected("all")
    # 50 members at chance cannot be certified at the default tolerance: too few, with the records it needs
    assert report.certificate("few").verdict(Tolerance()) == TOO_FEW and "too few records to certify" in \
        report.summary()
    metrics = report.metrics()
    assert metrics["mia/few/too_few"] == 1.0 and metrics["mia/few/members_needed"] > 50


def test_class_matched_rows_keep_the_subset_mix_and_as_many_non_members_as_it_allows():
    labels = np.r_[np.zeros(60, int), np.ones(40, int), np.zeros(50, int), np.ones(150, int), np.full(30, 2)]
    is_member = np.r_[np.ones(100, bool), np.zeros(230, bool)]
    in_subset = np.r_[np.ones(30, bool), np.zeros(60, bool), np.ones(10, bool), np.zeros(230, bool)]  # 30 of 0, 10 of 1
    rows = class_matched_rows(labels, is_member, in_subset, seed=(0, 6))
    assert (rows[:100] == in_subset[:100]).all()  # the subset's members, no other member
    chosen = labels[100:][rows[100:]]
    # class 0 limits: 50 non-members for 30 members, so r = 5/3 and class 1 gets floor(10 r) = 16; class 2 none
    assert np.bincount(chosen, minlength=3).tolist() == [50, 16, 0]
    assert (class_matched_rows(labels, is_member, in_subset, seed=(0, 6)) == rows).all()
    assert not (class_matched_rows(labels, is_member, in_subset, seed=(1, 6)) == rows).all()


def test_a_subset_is_judged_against_non_members_of_its_own_class_mix(memorised):
    """Records the model never saw, all of one class: against every non-member their class alone tells them apart
    (the positive control, exact test p < 1e-20); against class-matched non-members they are not detected."""
    members, non_members, _, _, reference, never_saw = memorised
    one_class = list(members.ids[members.labels == 2])
    matched = audit_membership(never_saw, members, non_members, config=FAST, reference_predicts=[reference],
                               member_subsets={"one_class": one_class})
    assert not matched.leak_detected("one_class") and matched.leak_p_value("one_class") > 0.1
    assert 0 < matched.sizes["subset_one_class_non_members"] < matched.sizes["evaluation_non_members"]
    unmatched = audit_membership(never_saw, members, non_members, config=FAST, reference_predicts=[reference],
                                 member_subsets={"one_class": one_class}, class_matched_subsets=False)
    assert unmatched.leak_detected("one_class") and unmatched.leak_p_value("one_class") < 1e-20


def test_cross_fitting_measures_every_record_once(memorised):
    """Cross-fitted (the default), every audited record is measured: the evaluation half keeps the scores of the
    attack fitted on calibration (centred on its threshold) and the calibration half is scored by a copy fitted on
    the evaluation half; every figure is then that of the pooled scores (AUC as scikit-learn computes it)."""
    members, non_members, _, predict, reference, _ = memorised
    pooled = audit_membership(predict, members, non_members, config=FAST, reference_predicts=[reference])
    half = audit_membership(predict, members, non_members, config=dataclasses.replace(FAST, cross_fit=False),
                            reference_predicts=[reference])
    for attack, result in pooled.results["all"].items():
        single = half.results["all"][attack]
        assert (result.n_members, result.n_non_members) == (2 * single.n_members, 2 * single.n_non_members)
        assert result.estimates["auc"].value == pytest.approx(roc_auc_score(result.is_member, result.scores))
        evaluated = len(single.scores)  # the evaluation half comes first, unchanged but for the centring
        np.testing.assert_allclose(result.scores[:evaluated], single.scores - single.threshold)
        assert result.threshold == 0.0
    assert pooled.certificate("all").n_members == 2 * half.certificate("all").n_members


def test_same_audit_twice_gives_the_same_numbers(memorised):
    members, non_members, _, predict, reference, _ = memorised
    first = audit_membership(predict, members, non_members, config=FAST, reference_predicts=[reference])
    second = audit_membership(predict, members, non_members, config=FAST, reference_predicts=[reference])
    assert first.metrics() == second.metrics()


def test_logits_adapter_and_roc_figure(memorised, tmp_path):
    from fairforget.components.report import plot_roc_curves

    members, non_members, _, predict, _, _ = memorised
    def logits(images):
        return np.log(predict(images)) + 7.0

    report = audit_membership(probabilities_from_logits(logits), members, non_members, attacks=["mloss", "mmean"], config=FAST)
    direct = audit_membership(predict, members, non_members, attacks=["mloss", "mmean"], config=FAST)
    assert report.metrics()["mia/mmean/auc"] == pytest.approx(direct.metrics()["mia/mmean/auc"])
    figure = plot_roc_curves(report.roc_curves(), aucs={"mloss": 0.5})
    figure.savefig(tmp_path / "roc.png")
    assert (tmp_path / "roc.png").stat().st_size > 1000
    assert figure.axes[0].get_xscale() == "log" and figure.axes[0].get_yscale() == "log"


def test_per_model_audit_drops_unresolvable_fpr_levels(memorised):
    members, non_members, retained, predict, _, never_saw = memorised
    config = dataclasses.replace(FAST, fpr_levels=(0.01, 0.001))
    reports = audit_per_model(
        {"memorised": predict, "other": never_saw}, {"memorised": list(retained.ids), "other": list(retained.ids)},
        members, non_members, attacks=["mloss"], config=config)
    assert reports["memorised"].config.fpr_levels == (0.01,)
    metrics = reports["memorised"].metrics(root="mia_shard/memorised")
    assert metrics["mia_shard/memorised/mloss/success"] >= 0.65
    assert "mia_shard/memorised/mloss/tpr_at_0.1pct_fpr" not in metrics
    assert reports["other"].metrics()["mia/mloss/success"] <= reports["other"].chance_bound["all"]


def test_memoized_reference_answers_equal_fresh_ones_and_query_each_batch_once(memorised):
    from fairforget.components.mia.queries import MemoizedPredict

    members, non_members, _, _, reference, _ = memorised
    calls = []

    def counting(images):
        calls.append(len(images))
        return reference(images)

    memo = MemoizedPredict(counting)
    first, again = memo(members.images[:50]), memo(members.images[:50])
    np.testing.assert_array_equal(first, reference(members.images[:50]))
    np.testing.assert_array_equal(first, again)
    assert calls == [50]
    again[0, 0] = -1.0  # a caller writing into its answer does not change the remembered one
    assert memo(members.images[:50])[0, 0] != -1.0
    assert not np.array_equal(memo(members.images[50:100]), first) and calls == [50, 50]


def test_the_attack_names_a_config_accepts_are_the_registry_s():
    from fairforget.components.mia.config import ATTACK_NAMES
    from fairforget.components.mia.registry import ATTACKS

    assert set(ATTACK_NAMES) == set(ATTACKS)
