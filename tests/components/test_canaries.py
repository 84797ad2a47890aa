"""Canaries, the audit's positive control: built right, never mixed with audited records, caught by every attack
family when memorised, and at chance once exactly unlearned."""

import dataclasses

import numpy as np
import pytest

from fairforget.components.canaries import (
    CanaryAudit,
    auc_chance_bound,
    audit_canaries,
    canary_label_log_probability,
    cut_audit_pool,
    epsilon_lower_bound,
    forgotten_on_schedule,
    generator_trained,
    with_canaries,
)
from fairforget.components.dataset import make_toy_dataset
from fairforget.components.mia import AuditConfig
from fairforget.components.mia.metrics import roc_auc
from fairforget.components.mia.reference import train_reference_ensembles
from fairforget.components.sisa.model import SisaConfig, SisaModel
from fairforget.components.training import TrainConfig
from fairforget.errors import ConfigError

FAMILIES = {"loss": ("mloss", "mmean"), "metric": ("confidence", "entropy", "modified_entropy"),
            "moments": ("moments",), "rmia": ("rmia",)}
# The shards train without augmentation, so the audit replays no augmentation either (copy 0 only): the attacks
# query the model the way it was trained, as the pipeline's audit does.
AUDIT = AuditConfig(attacks=tuple(a for family in FAMILIES.values() for a in family), num_augmentations=1,
                    num_bootstrap=10,
                    fpr_levels=(), show_progress=False, reference_models=2)


def test_canaries_carry_a_wrong_label_and_stay_out_of_the_audited_records():
    data = make_toy_dataset(per_class_other=40)
    pool = cut_audit_pool(data.split("audit"), canaries=8, seed=3)
    canaries = pool.canaries
    assert len(canaries) == 8 and len(canaries.held_out) == 8
    assert all(i.startswith("canary-") and not i.startswith("canary-held-") for i in canaries.inserted.ids)
    assert all(i.startswith("canary-held-") for i in canaries.held_out.ids)
    for part in (canaries.inserted, canaries.held_out):
        assert (part.labels != part.manifest["true_label"].to_numpy()).all()
        assert set(part.manifest["origin"]) == {"canary"}
    # matched: canary-<i> and canary-held-<i> show the same class and carry the same wrong label
    assert (canaries.inserted.labels == canaries.held_out.labels).all()
    assert (canaries.inserted.manifest["true_label"].to_numpy() == canaries.held_out.manifest["true_label"]).all()
    # the canary images come out of the audit pool: neither reference data nor audited non-members
    used = np.concatenate([pool.reference_half.images, pool.non_members.images]).reshape(-1, 64)
    for image in np.concatenate([canaries.inserted.images, canaries.held_out.images]).reshape(-1, 64):
        assert not (used == image).all(axis=1).any()
    assert len(pool.reference_half) + len(pool.non_members) + 16 == len(data.split("audit"))
    again = cut_audit_pool(data.split("audit"), canaries=8, seed=3)
    assert (again.canaries.inserted.labels == canaries.inserted.labels).all()
    assert list(with_canaries(data.split("train"), canaries).ids[-8:]) == list(canaries.inserted.ids)
    assert cut_audit_pool(data.split("audit"), canaries=0).canaries is None


def test_half_the_canaries_train_the_generator_crossed_with_the_forgetting_schedule():
    """The forgotten canaries split evenly into the generator channel's probe and the unlearning control, and the
    generator's canaries name the audit images they came from (the generator audit leaves those out)."""
    data = make_toy_dataset(per_class_other=40)
    pool = cut_audit_pool(data.split("audit"), canaries=8, seed=3)
    ids = list(pool.canaries.inserted.ids)
    in_generator, forgotten = set(generator_trained(ids)), set(forgotten_on_schedule(ids))
    assert len(in_generator) == 4 and len(in_generator & forgotten) == 2 and len(forgotten - in_generator) == 2
    assert generator_trained(pool.canaries.held_out.ids) == []
    probes = pool.canaries.for_generator()
    assert set(probes.ids) == in_generator and "true_label" not in probes.manifest.columns
    sources = data.split("audit").by_ids(pool.canaries.generator_source_ids())
    assert (sources.images == probes.images).all() and (sources.labels != probes.labels).all()


@pytest.mark.parametrize("count, match", [(-1, "canaries must be >= 0"), (41, "more than a quarter")])
def test_impossible_canary_counts_are_refused_with_the_fix(count, match):
    with pytest.raises(ConfigError, match=match):
        cut_audit_pool(make_toy_dataset(per_class_other=40).split("audit"), canaries=count)


def test_auc_chance_bound_holds_the_null_at_its_level():
    """Independent recomputation: AUCs of scores unrelated to membership exceed the bound about alpha of the time."""
    rng = np.random.default_rng(0)
    is_member = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    aucs = np.array([roc_auc(is_member, rng.normal(size=40)) for _ in range(4000)])
    bound = auc_chance_bound(20, 20, alpha=0.05)
    assert abs(np.mean(aucs > bound) - 0.05) < 0.015
    assert auc_chance_bound(20, 20, 0.05, 8) == pytest.approx(0.731, abs=1e-3)


@pytest.fixture(scope="module")
def memorising_sisa(tmp_path_factory):
    """Two shards that train to convergence without augmentation on toy data plus 40 canaries, references
    trained like them on the reference half, and the audit pool."""
    return build_memorising_sisa(tmp_path_factory)


@pytest.fixture(scope="module")
def another_memorising_sisa(tmp_path_factory):
    """``memorising_sisa`` again, for a test that unlearns other canaries."""
    return build_memorising_sisa(tmp_path_factory)


def build_memorising_sisa(tmp_path_factory):
    data = make_toy_dataset(per_class_train=(40, 40, 40, 40), per_class_other=100, seed=1)
    pool = cut_audit_pool(data.split("audit"), canaries=40, seed=0)
    config = SisaConfig(num_shards=2, num_slices=1, executor="serial", max_deletion_fraction=0.5,
                        train=TrainConfig(epochs=60, batch_size=16, lr=5e-3, augment=False))
    sisa = SisaModel.create(with_canaries(data.split("train"), pool.canaries), config, tmp_path_factory.mktemp("s"))
    sisa.train()
    references = train_reference_ensembles(pool.reference_half, sisa_config=config, num_models=2,
                                           state_dir=tmp_path_factory.mktemp("references"))
    return sisa, pool, references


def family_aucs(audit: CanaryAudit, subset: str) -> dict[str, float]:
    return {family: max(audit.aucs[subset][a] for a in attacks) for family, attacks in FAMILIES.items()}


def test_canary_audit_reports_live_and_forgotten_canaries_with_the_configured_attacks(memorising_sisa):
    sisa, pool, references = memorising_sisa
    no_rmia = dataclasses.replace(AUDIT, attacks=("mloss",))
    audit = audit_canaries(sisa.ensemble().predict_proba, pool.canaries, live_ids=list(pool.canaries.inserted.ids)[:6],
                           config=no_rmia)
    assert set(audit.aucs) == {"live", "forgotten"} and set(audit.aucs["live"]) == {"mloss"}
    # cross-fitted: all 40 inserted canaries are measured (each by the attack fitted on the other half), split
    # between the two subsets, against all 40 held-out ones
    assert audit.live.n_members == 6 and audit.forgotten.n_members == 34 and audit.live.n_non_members == 40


def test_the_generator_channel_probe_is_reported_apart_from_the_unlearning_control(another_memorising_sisa):
    """Forgotten canaries that trained the generator are audited apart: here the model still holds them (what a
    generator that copied them into the replacements would do) while the others are exactly unlearned, and only
    the probe is detected."""
    sisa, pool, references = another_memorising_sisa
    ids = list(pool.canaries.inserted.ids)
    scheduled, in_generator = forgotten_on_schedule(ids), set(generator_trained(ids))
    sisa.unlearn([i for i in scheduled if i not in in_generator], audit=False)
    audit = audit_canaries(sisa.ensemble().predict_proba, pool.canaries,
                           live_ids=[i for i in ids if i not in scheduled], config=AUDIT,
                           reference_predicts=references, generator_ids=sorted(in_generator))
    assert audit.power and audit.generator_channel.detected, audit.summary()
    assert audit.forgotten_within_bound and not audit.forgotten.detected, audit.summary()
    metrics = audit.metrics()
    assert metrics["mia/canary/generator_channel_detected"] == 1.0
    assert metrics["mia/canary/generator_channel_p_value"] == audit.generator_channel.p_value
    assert "generator-trained forgotten" in audit.summary()
    # the generator channel's empirical epsilon: its canary pairs alone, recomputed from the model's outputs
    rows = np.isin(pool.canaries.inserted.ids, sorted(in_generator & set(scheduled)))
    direct = epsilon_lower_bound(
        canary_label_log_probability(sisa.ensemble().predict_proba, pool.canaries.inserted.select(rows)),
        canary_label_log_probability(sisa.ensemble().predict_proba, pool.canaries.held_out.select(rows)),
        alpha=AUDIT.chance_alpha)
    assert metrics["mia/canary/generator_channel_epsilon_lower_bound"] == direct > 0, audit.summary()


def test_memorised_canaries_are_caught_by_every_attack_family_and_at_chance_after_exact_unlearning(memorising_sisa):
    sisa, pool, references = memorising_sisa
    canary_ids = list(pool.canaries.inserted.ids)
    live = audit_canaries(sisa.ensemble().predict_proba, pool.canaries, live_ids=canary_ids, config=AUDIT,
                          reference_predicts=references)
    assert live.power and live.forgotten is None
    assert min(family_aucs(live, "live").values()) >= 0.8, family_aucs(live, "live")

    report = sisa.unlearn(canary_ids, audit=True)
    assert report.exact is True
    after = audit_canaries(sisa.ensemble().predict_proba, pool.canaries, live_ids=[], config=AUDIT,
                           reference_predicts=references)
    assert after.live is None and after.forgotten_within_bound and not after.power
    assert after.forgotten.p_value > after.forgotten.level
    metrics = after.metrics()
    assert metrics["mia/canary/power"] == 0.0 and metrics["mia/canary/forgotten_within_bound"] == 1.0


@pytest.mark.slow
def test_the_default_recipe_memorises_canaries_on_real_data_and_exact_unlearning_removes_them(tmp_path, real_dataset):
    """Real Fashion-MNIST (the prepared data/ folder), the default SISA recipe, 40 canaries: live canary AUC >= 0.85;
    after unlearning every canary, the forgotten ones are within their chance bound."""
    data = real_dataset
    pool = cut_audit_pool(data.split("audit"), canaries=40, seed=0)
    sisa = SisaModel.create(with_canaries(data.split("train"), pool.canaries), SisaConfig(), tmp_path / "sisa")
    sisa.train()
    references = train_reference_ensembles(pool.reference_half, sisa_config=sisa.config, num_models=1,
                                           state_dir=tmp_path / "references")
    config = AuditConfig(show_progress=False).for_recipe(sisa.config.train)
    ids = list(pool.canaries.inserted.ids)
    live = audit_canaries(sisa.ensemble().predict_proba, pool.canaries, live_ids=ids, config=config,
                          reference_predicts=references)
    print("live:", live.summary())
    assert live.live.auc >= 0.85 and live.power
    assert sisa.unlearn(ids).exact is True
    after = audit_canaries(sisa.ensemble().predict_proba, pool.canaries, live_ids=[], config=config,
                           reference_predicts=references)
    print("after unlearning:", after.summary())
    assert after.forgotten_within_bound


def test_reference_shards_match_the_target_shards_size_and_class_mix(tmp_path):
    """RMIA's references: every reference shard is its own draw of the target shard's class counts from the
    reference half (the canaries not counted), deterministic, trained once."""
    from collections import Counter

    from fairforget.components.mia.reference import draw_matched_shard, target_shard_mix

    data = make_toy_dataset(per_class_train=(40, 40, 10, 10), per_class_other=100, seed=1)
    pool = cut_audit_pool(data.split("audit"), canaries=4, seed=0)
    config = SisaConfig(num_shards=2, num_slices=2, executor="serial",
                        train=TrainConfig(epochs=1, batch_size=16, augment=False))
    target = SisaModel.create(with_canaries(data.split("train"), pool.canaries), config, tmp_path / "target")
    mix = target_shard_mix(target.plan, leave_out=pool.canaries.inserted.ids)
    assert sum(sum(shard.values()) for shard in mix) == len(data.split("train"))
    assert [shard[0] > shard[2] for shard in mix] == [True, True]  # the target's 80/20 mix, not the pool's 50/50
    draws = [draw_matched_shard(pool.reference_half, counts, (7, shard)) for shard, counts in enumerate(mix)]
    for draw, counts in zip(draws, mix):
        assert dict(Counter(draw.labels.tolist())) == counts
        assert set(draw.ids) <= set(pool.reference_half.ids)
    assert list(draw_matched_shard(pool.reference_half, mix[0], (7, 0)).ids) == list(draws[0].ids)
    assert list(draws[0].ids) != list(draws[1].ids)

    predicts = train_reference_ensembles(pool.reference_half, sisa_config=config, num_models=2, shard_mix=mix,
                                         state_dir=tmp_path / "references")
    images = data.split("test").images
    outputs = [predict(images) for predict in predicts]
    assert all(out.shape == (len(images), 4) and np.allclose(out.sum(axis=1), 1.0) for out in outputs)
    assert not np.allclose(outputs[0], outputs[1])  # differently seeded references
    checkpoints = sorted(p.name for p in (tmp_path / "references").rglob("*") if p.is_file())
    assert len(checkpoints) >= 2 * 2 * 2  # 2 references x 2 shards x 2 stages
    again = train_reference_ensembles(pool.reference_half, sisa_config=config, num_models=2, shard_mix=mix,
                                      state_dir=tmp_path / "references")
    assert sorted(p.name for p in (tmp_path / "references").rglob("*") if p.is_file()) == checkpoints
    np.testing.assert_array_equal(again[0](images), outputs[0])
