"""The generator's membership audit (positive and negative controls, scores against scikit-learn) and the
differentially private generator (epsilon from opacus' accountant, checked independently; bad budgets refused)."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fairforget.components.dataset import make_toy_dataset
from fairforget.components.gate import (
    GENERATOR_ABOVE,
    GENERATOR_CERTIFIED,
    GENERATOR_NOT_CERTIFIED,
    GENERATOR_TOO_FEW,
    GENERATOR_UNMEASURED,
    GENERATOR_WITHIN,
    GateConfig,
    RegistryPolicy,
    certificate_tags,
    check_promotable,
    evaluate_gate,
    generator_audit_verdict,
    generator_tags,
)
from fairforget.components.generator import GeneratorConfig, tiny_config, train_generator
from fairforget.components.generator.audit import (
    GeneratorAuditConfig,
    audit_generator,
    audit_timesteps,
    denoising_errors,
    matched_non_members,
)
from fairforget.components.generator.train import check_poisson_sampler, dp_noise_multiplier, dp_sample_rate
from fairforget.components.mia.certify import Certificate
from fairforget.components.model_card import generator_privacy_lines
from fairforget.errors import ConfigError

# A pixel UNet trained long on 64 tiny images learns them by heart (the positive control); the same recipe trained on
# other images of the same distribution never saw the members (the negative control). No dropout: the default's
# regulariser against memorising (denoiser_dropout 0.1) is what a memorising generator lacks.
MEMORISING = dict(architecture="pixel_unet", unet_channels=(16, 32), train_steps=600, batch_size=64,
                  learning_rate=3e-3, ema_decay=0.95, condition_dropout=0.0, denoiser_dropout=0.0)
AUDIT = GeneratorAuditConfig(num_bootstrap=50)


@pytest.fixture(scope="module")
def toy():
    return make_toy_dataset(per_class_train=(16, 16, 16, 16), per_class_other=16, seed=0)


@pytest.fixture(scope="module")
def audited_sets(toy):
    return matched_non_members(toy.split("train"), toy.split("audit"), max_members=2000, seed=0)


@pytest.fixture(scope="module")
def memorising_generator(toy):
    return train_generator(toy, config=tiny_config(**MEMORISING), progress=False)


@pytest.fixture(scope="module")
def unseen_sets(toy):
    """Two sets the memorising generator never saw (the reference and audit splits), as "members" and
    non-members: the negative control is the very model the positive control catches."""
    return matched_non_members(toy.split("reference"), toy.split("audit"), max_members=2000, seed=0)


def _before_certificates(metrics: dict) -> dict:
    """A generator's metrics as logged before its audit carried a certificate."""
    return {k: v for k, v in metrics.items() if k in ("generator/mia/auc", "generator/mia/auc_chance_bound")}


def test_a_generator_that_memorised_its_records_is_caught(memorising_generator, audited_sets):
    report = audit_generator(memorising_generator, *audited_sets, AUDIT)
    assert report.auc >= 0.8
    assert not report.within_bound
    metrics = report.metrics()
    assert metrics["generator/mia/auc"] == report.auc and metrics["generator/mia/within_bound"] == 0.0
    # its certificate: the exact test detects the members, so it is not certified whatever the audit's size
    certificate = report.certificate()
    assert certificate.leak_detected and metrics["generator/mia/certified"] == 0.0
    assert generator_audit_verdict(metrics) == GENERATOR_NOT_CERTIFIED
    assert generator_audit_verdict(_before_certificates(metrics)) == GENERATOR_ABOVE  # a generator audited before
    assert "ABOVE" in report.summary() and "membership detected" in report.summary()


def test_a_generator_that_never_saw_the_members_is_at_chance(memorising_generator, unseen_sets):
    report = audit_generator(memorising_generator, *unseen_sets, AUDIT)
    assert report.within_bound, report.summary()
    # 64 records a side cannot resolve a TPR at 1% FPR (it needs 100 non-members): "too few", never a pass
    assert not report.certificate().leak_detected
    assert generator_audit_verdict(report.metrics()) == GENERATOR_TOO_FEW
    assert generator_audit_verdict(_before_certificates(report.metrics())) == GENERATOR_WITHIN


def test_the_cross_fitted_audit_measures_every_record_and_agrees_with_scikit_learn(memorising_generator,
                                                                                    audited_sets):
    report = audit_generator(memorising_generator, *audited_sets, AUDIT)
    half = audit_generator(memorising_generator, *audited_sets, replace(AUDIT, cross_fit=False))
    assert (report.n_members, report.n_non_members) == (len(audited_sets[0]), len(audited_sets[1]))
    assert report.n_members == 2 * half.n_members and report.evaluation.all()
    for name, scores in report.scores.items():
        assert report.estimates[name]["auc"].value == pytest.approx(roc_auc_score(report.is_member, scores),
                                                                    abs=1e-12)
        # the evaluation half keeps the scores of the attack fitted on calibration (the one-half audit's)
        np.testing.assert_array_equal(scores[half.evaluation], half.scores[name][half.evaluation])
    certificate = report.certificate()
    assert certificate.n_attacks == 2 and certificate.auc_high == max(e["auc"].ci_high
                                                                      for e in report.estimates.values())
    # the loss attack of the one-half audit is the denoising error at the chosen timestep, recomputed directly
    members, non_members = audited_sets
    errors = denoising_errors(memorising_generator, members.concat(non_members), timesteps=(half.chosen_timestep,),
                              noise_draws=AUDIT.noise_draws, seed=AUDIT.seed)
    rows = half.evaluation
    assert roc_auc_score(half.is_member[rows], -errors[rows, 0]) == pytest.approx(
        half.estimates["loss"]["auc"].value, abs=1e-12)


def test_denoising_errors_do_not_depend_on_the_batch(memorising_generator, toy):
    records = toy.split("audit")
    whole = denoising_errors(memorising_generator, records, timesteps=(2, 5), noise_draws=3, seed=4, batch_size=1024)
    batched = denoising_errors(memorising_generator, records, timesteps=(2, 5), noise_draws=3, seed=4, batch_size=7)
    np.testing.assert_allclose(whole, batched, rtol=1e-5)
    assert whole.shape == (len(records), 2) and (whole > 0).all()


def test_non_members_are_matched_class_by_class(toy):
    members, non_members = matched_non_members(toy.split("train"), toy.split("audit"), max_members=40, seed=0)
    assert np.bincount(members.labels, minlength=4).tolist() == np.bincount(non_members.labels, minlength=4).tolist()
    assert len(members) == 40 and not set(members.manifest.id) & set(non_members.manifest.id)
    assert audit_timesteps(1000, (0.02, 0.05, 0.1)) == (20, 50, 100)
    assert audit_timesteps(50, (0.001, 0.99)) == (1, 49)


# ------------------------------------------------------------------------------------------------ DP generator
@pytest.fixture(scope="module")
def dp_toy():
    return make_toy_dataset(per_class_train=(24, 24, 24, 24), per_class_other=16, seed=0)


def _dp_config(**overrides):
    return tiny_config(**{"privacy": "dp", "train_steps": 40, "autoencoder_epochs": 5, "batch_size": 16,
                          "denoiser_width": 32, "denoiser_depth": 2, "embedding_dim": 16, "warmup_steps": 5,
                          **overrides})


def test_dp_training_reports_the_accountants_epsilon(dp_toy):
    from opacus.accountants import PRVAccountant, RDPAccountant

    loose = train_generator(dp_toy, config=_dp_config(dp_epsilon=8.0), progress=False).training_summary
    tight = train_generator(dp_toy, config=_dp_config(dp_epsilon=1.0), progress=False).training_summary
    for summary, target in ((loose, 8.0), (tight, 1.0)):
        assert math.isfinite(summary["dp_epsilon"]) and summary["dp_epsilon"] <= target * 1.02
        assert summary["dp_delta"] == pytest.approx(1e-5) and summary["dp_steps"] == 40  # well below 1 / |S|
        # the rate the loader sampled at is the rate the noise was calibrated for: 1 / ceil(96 / 16)
        assert summary["dp_sample_rate"] == pytest.approx(1 / 6) == dp_sample_rate(16, 96)
        assert summary["autoencoder_images"] == 64  # the public reference split, not S
        # an independent accountant run on the logged noise, rate and steps of both mechanisms of the recipe (the
        # labeller of the unlabelled public images, then the DP-SGD) gives the logged epsilon
        history = [(summary["dp_label_noise_multiplier"], summary["dp_label_sample_rate"], summary["dp_label_steps"]),
                   (summary["dp_noise_multiplier"], summary["dp_sample_rate"], summary["dp_steps"])]
        assert summary["pseudo_label_epsilon"] == pytest.approx(target / 5)  # the recipe's share of the budget
        prv = PRVAccountant()
        prv.history = history
        assert prv.get_epsilon(summary["dp_delta"]) == pytest.approx(summary["dp_epsilon"], rel=0.02)
        rdp = RDPAccountant()  # RDP is an upper bound of the same mechanisms
        rdp.history = history
        assert rdp.get_epsilon(summary["dp_delta"]) >= summary["dp_epsilon"] * 0.98
    assert tight["dp_noise_multiplier"] > loose["dp_noise_multiplier"]  # more noise, smaller epsilon


def test_a_sampler_other_than_poisson_at_the_accountants_rate_is_refused_before_training():
    import torch
    from opacus.data_loader import DPDataLoader
    from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

    data = TensorDataset(torch.zeros(96, 2))
    weighted = DataLoader(data, batch_size=16, sampler=WeightedRandomSampler(torch.ones(96), 96))
    with pytest.raises(ConfigError, match="needs Poisson sampling"):
        check_poisson_sampler(weighted, 1 / 6)
    with pytest.raises(ConfigError, match="needs Poisson sampling"):
        check_poisson_sampler(DataLoader(data, batch_size=16, shuffle=True), 1 / 6)
    poisson = DPDataLoader.from_data_loader(DataLoader(data, batch_size=16))
    check_poisson_sampler(poisson, 1 / 6)
    with pytest.raises(ConfigError, match="calibrated for another rate"):
        check_poisson_sampler(poisson, 16 / 96 + 0.01)


def _denoiser_before_dp_sgd(dataset, config) -> dict:
    """The denoiser's weights when DP-SGD starts (after the public pre-training, if any)."""
    from fairforget.components.generator import train as train_module

    captured = {}
    real = train_module.fit_denoiser_dp

    def spy(denoiser, *args, **kwargs):
        captured.update({k: v.clone() for k, v in denoiser.state_dict().items()})
        return real(denoiser, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "fit_denoiser_dp", spy)
        train_generator(dataset, config=config, progress=False)
    return captured


def test_the_public_pre_training_learns_from_the_reference_split_only(dp_toy):
    # S with one training image replaced: the starting point of DP-SGD must not change (S reaches only DP-SGD;
    # with the recipe's labeller it also reaches the pre-training's conditions through the labeller's one noisy
    # release, accounted in epsilon: test_dp_labeller.py; here without it)
    images = dp_toy.images.copy()
    first_train = int(np.flatnonzero(dp_toy.manifest["split"].to_numpy() == "train")[0])
    images[first_train] = 255 - images[first_train]
    neighbour = replace(dp_toy, images=images)
    config = _dp_config(train_steps=2, public_pretrain_steps=15, pseudo_label_epsilon=0.0)
    before = _denoiser_before_dp_sgd(dp_toy, config)
    assert all(torch.equal(v, before_neighbour) for (k, v), before_neighbour
               in zip(before.items(), _denoiser_before_dp_sgd(neighbour, config).values()))
    # and the pre-training did train (public_pretrain_steps=0 starts DP-SGD from the initial weights)
    scratch = _denoiser_before_dp_sgd(dp_toy, replace(config, public_pretrain_steps=0))
    assert any(not torch.equal(before[k], scratch[k]) for k in before)
    summary = train_generator(dp_toy, config=config, progress=False).training_summary
    assert summary["public_pretrain_steps"] == 15 and math.isfinite(summary["public_pretrain_loss"])


def test_a_dp_generator_warns_of_classes_the_public_split_lacks(dp_toy):
    from fairforget.components.generator.train import public_classes_lacking

    held_out = dp_toy.class_names.index("b")
    lacking_b = dp_toy.select(~((dp_toy.labels == held_out) & (dp_toy.manifest["split"] == "reference").to_numpy()))
    assert public_classes_lacking(dp_toy, dp_toy.split("train")) == []
    assert public_classes_lacking(lacking_b, lacking_b.split("train")) == ["b"]
    with pytest.warns(UserWarning, match="no images of b: the DP generator"):
        summary = train_generator(lacking_b, config=_dp_config(train_steps=2), progress=False).training_summary
    assert summary["public_classes_lacking"] == 1


def test_public_condition_codes_use_the_null_code_for_unknown_attribute_values():
    from fairforget.components.generator.denoiser import ConditionSpace
    from fairforget.components.generator.train import public_condition_codes

    toy = make_toy_dataset()
    manifest = toy.manifest.assign(colour=np.where(toy.manifest["split"] == "train", "red", "blue"))
    toy = replace(toy, manifest=manifest, attributes=["colour"])
    space = ConditionSpace.from_dataset(toy.class_names, toy.split("train").manifest, ["colour"])
    reference = toy.split("reference")
    codes = public_condition_codes(space, toy, reference)
    assert codes[:, 0].tolist() == reference.labels.tolist()  # the class is always known
    assert (codes[:, 1] == space.cardinalities[1]).all()  # "blue" is not in S's space: null



@pytest.mark.parametrize("public_labels", [False, True])
def test_the_dp_generators_public_learning_sees_no_record_of_s_and_no_label_unless_allowed(dp_toy, monkeypatch,
                                                                                           public_labels):
    """What the public pre-training of the denoiser and the autoencoder's feature network are given, recorded at
    the call: public images only (never a record of S); without ``public_labels`` no label either: the feature
    network learns rotations and, without the DP labeller, every condition of the pre-training is the null one
    (with it, the conditions come from S's DP centroids and no public label: test_dp_labeller.py)."""
    from fairforget.components.generator import train as train_module
    from fairforget.components.generator.autoencoder import fit_perceptual_network

    given = {}
    real_fit_denoiser = train_module.fit_denoiser

    def fit_denoiser(denoiser, data, codes, space, config, progress):
        given.setdefault("denoiser", []).append((data.clone(), codes.copy(), space))
        return real_fit_denoiser(denoiser, data, codes, space, config, progress)

    def perceptual(images, labels, num_classes, epochs, seed):
        given["perceptual"] = (images.copy(), None if labels is None else labels.copy())
        return fit_perceptual_network(images, labels, num_classes, epochs, seed)

    monkeypatch.setattr(train_module, "fit_denoiser", fit_denoiser)
    monkeypatch.setattr(train_module, "fit_perceptual_network", perceptual)
    config = _dp_config(train_steps=2, public_labels=public_labels, pseudo_label_epsilon=0.0)  # no DP labeller
    train_generator(dp_toy, config=config, progress=False)

    public, private = dp_toy.split("reference"), dp_toy.split("train")
    images, labels = given["perceptual"]
    assert np.array_equal(images, public.images)  # the public split, whole, and nothing else
    assert not {image.tobytes() for image in images} & {image.tobytes() for image in private.images}
    assert (labels is None) != public_labels and (labels is None or np.array_equal(labels, public.labels))
    (data, codes, space), = given["denoiser"]  # only the public pre-training: DP-SGD on S has its own trainer
    assert len(data) == len(public)
    if public_labels:
        assert codes[:, 0].tolist() == public.labels.tolist()
    else:
        assert (codes == space.null_codes(len(public))).all()

def test_the_dp_generator_samples_and_its_identity_differs(dp_toy):
    import pandas as pd

    generator = train_generator(dp_toy, config=_dp_config(), progress=False)
    images = generator.sample(pd.DataFrame({"class_name": ["a", "d"]}), seed=0)
    assert images.shape == (2, 8, 8, 1) and images.dtype == np.uint8
    private, plain = _dp_config().identity_record(), tiny_config().identity_record()
    assert private["privacy"] == "dp" and plain["privacy"] == "none" and "dp_epsilon" not in plain
    assert private["denoiser_width"] == 32 and private["train_steps"] == 40  # the DP recipe is what is trained
    assert generator.config.denoiser_width == 32 and generator.config.privacy == "dp"


def test_the_default_dp_generator_learns_and_samples_colour_images_of_an_odd_size():
    """The DP recipe is the default of every command line, a user's colour photos included: RGB at 13 x 13."""
    import pandas as pd

    colour = make_toy_dataset(per_class_train=(24, 24, 24, 24), per_class_other=16, image_size=13, channels=3,
                              seed=1)
    generator = train_generator(colour, config=_dp_config(), progress=False)
    images = generator.sample(pd.DataFrame({"class_name": ["a", "b", "d"]}), seed=0)
    assert images.shape == (3, 13, 13, 3) and images.dtype == np.uint8
    summary = generator.training_summary
    assert generator.config.privacy == "dp" and 0 < summary["dp_epsilon"] <= generator.config.dp_epsilon * 1.02


@pytest.mark.parametrize("overrides, message", [
    (dict(dp_epsilon=0.0), "dp_epsilon must be a positive number"),
    (dict(dp_epsilon=float("nan")), "dp_epsilon must be a positive number"),
    (dict(dp_delta=0.0), "dp_delta must lie in (0, 1)"),
    (dict(dp_delta=1.5), "dp_delta must lie in (0, 1)"),
    (dict(privacy="laplace"), "unknown generator privacy"),
    (dict(privacy="dp", architecture="pixel_unet"), "privacy=dp needs architecture=latent_mlp"),
])
def test_bad_privacy_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        GeneratorConfig(**overrides).validate()
    assert "\n" not in str(error.value)


def test_an_unreachable_epsilon_is_refused_before_training(dp_toy, monkeypatch):
    import fairforget.components.generator.train as train_module

    def no_training(*args, **kwargs):
        raise AssertionError("the autoencoder was trained before the budget was checked")

    monkeypatch.setattr(train_module, "fit_autoencoder", no_training)
    config = _dp_config(dp_epsilon=1e-4, batch_size=96, train_steps=5000).resolved()
    with pytest.raises(ConfigError, match="cannot be reached") as error:
        train_generator(dp_toy, config=config, progress=False)
    assert "\n" not in str(error.value)
    assert dp_noise_multiplier(_dp_config(dp_epsilon=3.0).resolved(), 96) > 0


# ------------------------------------------------------------------------------------------------ gate and card
def test_the_gate_can_require_the_generator_audit():
    policy = RegistryPolicy(require_generator_audit=True)
    certified = {held: Certificate(2000, 1980, 0.51, 0.012) for held in ("retained", "forgotten")}
    passing = dict(certificates=certified, test_accuracy=0.9, policy=policy)
    assert evaluate_gate(**passing, generator_audit=GENERATOR_WITHIN).passed
    above = evaluate_gate(**passing, generator_audit=GENERATOR_ABOVE)
    assert not above.passed and "generator's membership audit is above its chance bound" in above.reason
    assert "not audited" in evaluate_gate(**passing, generator_audit=GENERATOR_UNMEASURED).reason
    assert evaluate_gate(**passing, generator_audit=GENERATOR_CERTIFIED).passed
    assert "not certified" in evaluate_gate(**passing, generator_audit=GENERATOR_NOT_CERTIFIED).reason
    assert "too few records" in evaluate_gate(**passing, generator_audit=GENERATOR_TOO_FEW).reason
    # off in the shipped policy; a run may only switch it on
    assert evaluate_gate(certificates=certified, test_accuracy=0.9, policy=RegistryPolicy(),
                         generator_audit=GENERATOR_ABOVE).passed
    assert RegistryPolicy().tightened(GateConfig(require_generator_audit=True)).require_generator_audit
    assert RegistryPolicy(require_generator_audit=True).tightened(
        GateConfig(require_generator_audit=False)).require_generator_audit
    tags = {"gate": "passed", "data_md5": "m", "audit_data_md5": "m", "acc_test": "0.9", "audit_power": "shown",
            "unlearning_exactness": "verified", "natural_members_detected": "true", "generator_audit": GENERATOR_ABOVE, **certificate_tags(certified)}
    assert not check_promotable(tags, policy).passed and check_promotable(tags, RegistryPolicy()).passed


def test_the_model_card_says_what_a_deletion_guarantees_per_generator_mode():
    plain = {"generator/mia/auc": 0.78, "generator/mia/auc_chance_bound": 0.53, "generator/mia/tpr_at_1pct_fpr": 0.04}
    text = "\n".join(generator_privacy_lines(plain))
    assert "non-private" in text and "refresh_generator=true" in text and "above its chance bound" in text
    private = {**plain, "generator/mia/auc": 0.51, "generator/dp_epsilon": 9.97, "generator/dp_delta": 2.5e-4}
    text = "\n".join(generator_privacy_lines(private))
    assert "epsilon = 9.97" in text and "no generator refresh is needed" in text and "within its chance bound" in text
    assert "chosen on this private data set" in text
    assert "treats as public" in text and "pre-training" not in text
    pretrained = "\n".join(generator_privacy_lines({**private, "generator/public_pretrain_steps": 4000.0}))
    assert "pre-training (4000 steps) learned from the reference split's images and labels" in pretrained
    label_free = "\n".join(generator_privacy_lines({**private, "generator/public_pretrain_steps": 4000.0,
                                                    "generator/public_pretrain_labelled": 0.0}))
    assert "reference split's images without their labels (the classes were learned from S under DP)" in label_free
    labelled_by_s = "\n".join(generator_privacy_lines({**private, "generator/public_pretrain_steps": 4000.0,
                                                       "generator/public_pretrain_labelled": 0.0,
                                                       "generator/pseudo_label_epsilon": 2.0,
                                                       "generator/pseudo_labelled_fraction": 0.61}))
    assert ("images without their labels, labelled by S's class centroids released with Gaussian noise "
            "(epsilon 2 on its own; 61% of the images") in labelled_by_s and "composed into the epsilon above" in labelled_by_s
    assert generator_tags(private) == {"generator_privacy": "dp", "generator_dp_epsilon": "9.97",
                                       "generator_dp_delta": "0.00025", "generator_mia_auc": "0.51",
                                       "generator_mia_auc_bound": "0.53"}


def test_the_card_and_the_tags_say_what_protects_each_set_of_records():
    """Forgotten originals: exact unlearning, plus the generator's (epsilon, delta) for what the replacements carry
    (or the plain statement that nothing bounds it); retained originals: the audit only."""
    from fairforget.components.model_card import coverage_tags, privacy_coverage

    verdicts = {"forgotten": "certified", "retained": "not_certified"}
    plain = privacy_coverage({}, verdicts, "verified")
    assert "exact unlearning (verified)" in plain["forgotten"] and "audit: certified" in plain["forgotten"]
    assert "forgotten records may remain recoverable through the synthetic data" in plain["forgotten"]
    assert plain["retained"] == "audit only (the classifier holds them): not_certified"
    assert coverage_tags({}) == {"coverage_forgotten": "exact_unlearning_only", "coverage_retained": "audit_only"}
    private = privacy_coverage({"generator/dp_epsilon": 9.97, "generator/dp_delta": 1e-5}, verdicts, "verified")
    assert "bounded by the (9.97, 1.0e-05)-DP generator" in private["forgotten"]
    assert "proven for every record it trained on" in private["generator"]
    assert coverage_tags({"generator/dp_epsilon": 9.97})["coverage_forgotten"] == "exact_unlearning+dp"


def test_a_deletion_request_says_what_bounds_what_the_replacements_carry_of_the_requested_records():
    """On a DP version the request states the generator's (epsilon, delta) for the requested records, without
    retraining the generator; a non-private one says nothing bounds it and how to retrain; a refreshed one never
    saw them."""
    from fairforget.components.model_card import requested_coverage

    dp = requested_coverage({"generator/dp_epsilon": 9.99, "generator/dp_delta": 1e-5}, refreshed=False)
    assert "(9.99, 1.0e-05)-DP" in dp and "bounded" in dp and "no retraining" in dp
    plain = requested_coverage({"generator/fid": 7.0}, refreshed=False)
    assert "without DP" in plain and "may carry them" in plain and "refresh_generator=true" in plain
    assert "carry nothing of them" in requested_coverage({"generator/dp_epsilon": 9.99}, refreshed=True)
