"""Algorithm 2 as a pure component (no MLflow): one loop on toy data with a tiny generator and canaries."""

import dataclasses

import numpy as np
import pytest

from fairforget.components import names
from fairforget.components.canaries import cut_audit_pool, with_canaries
from fairforget.components.config import ConfigBase
from fairforget.components.dataset import make_toy_dataset
from fairforget.components.forgetting import ForgettingLoop, LoopConfig, sampled_audit_config
from fairforget.components.gate import EXACTNESS_UNVERIFIED, EXACTNESS_VERIFIED, exactness_verdict
from fairforget.components.generator import tiny_config, train_generator
from fairforget.components.mia import AuditConfig
from fairforget.components.priors import build_target
from fairforget.components.sisa.model import SisaConfig, SisaModel
from fairforget.components.training import TrainConfig
from fairforget.errors import ConfigError, DataError

AUDIT = dataclasses.replace(AuditConfig(), attacks=("mloss", "mmean"), num_augmentations=2, num_bootstrap=10,
                            fpr_levels=(0.1,), show_progress=False)


def toy_loop(folder, config: LoopConfig, epochs: int = 2, audit_exactness: bool = True) -> ForgettingLoop:
    """Algorithm 2 on toy data: 64 originals and 4 canaries in 2 shards x 2 slices, a tiny generator."""
    data = make_toy_dataset(per_class_other=40)
    train = data.split("train")
    pool = cut_audit_pool(data.split("audit"), canaries=4, seed=0)
    generator = train_generator(data, config=tiny_config(), data_md5="toy", progress=False)
    sisa = SisaModel.create(with_canaries(train, pool.canaries), SisaConfig(
        num_shards=2, num_slices=2, executor="serial", max_deletion_fraction=0.5,
        train=TrainConfig(epochs=epochs, batch_size=16), audit_exactness=audit_exactness), folder)
    sisa.train()
    return ForgettingLoop(sisa=sisa, original_train=train, synthetic=train.select(np.zeros(len(train), bool)),
                          generator=generator, target=build_target(train.manifest, ["superclass"]),
                          test=data.split("test"), non_members=pool.non_members, canaries=pool.canaries,
                          config=config, audit_config=AUDIT)


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    return toy_loop(tmp_path_factory.mktemp("sisa"), LoopConfig(forget_rate=0.25, iterations=2,
                                                                 convergence_patience=1, shard_audit_size=8))


def test_an_iteration_forgets_replaces_and_measures_without_counting_the_canaries(loop):
    first = loop.evaluate(0)
    assert first.data_size == 64 and first.originals_forgotten == 0  # 64 originals; the 4 canaries not counted
    result = loop.run()
    assert [o.iteration for o in result.outcomes] == [1, 2] and result.stopped_because == "ran all 2 iterations"
    last = result.outcomes[-1]
    assert last.data_size == 64  # every forgotten record (original or canary) was replaced by a synthetic one
    assert last.originals_forgotten + len(loop.canaries) - len(loop.live_canaries()) == 2 * 2 * loop.forget_per_shard()
    assert set(loop.current().manifest["origin"]) == {"real", "synthetic"}
    metrics = last.metrics()
    for key in (names.ACC_TEST, names.ACC_RETAIN, names.UNLEARN_POINTS, names.REPLENISHED, names.CANARY_POWER,
                "mia/forgotten/max_success", f"{names.SHARD_AUDIT_PREFIX}/0/max_success", "mia_shard/1/mloss/auc"):
        assert key in metrics, key
    assert names.UNLEARN_EXACT not in metrics  # exactness_audit=final: no step audits itself
    check = loop.verify_final_exactness()  # every shard retrained from scratch and compared
    assert check["unlearn_exact"] == 1.0 and check["shards_differing"] == []
    rows = [o.history_row() for o in result.outcomes]
    assert exactness_verdict(rows) == EXACTNESS_UNVERIFIED and exactness_verdict([*rows, check]) == EXACTNESS_VERIFIED
    row = last.history_row()
    assert row["iteration"] == 2 and "canary_live_auc" in row and "max_success_forgotten" in row
    assert "iteration 2: acc/test" in last.summary()


def test_an_iteration_s_audit_equals_the_full_audit_of_the_model_it_leaves(loop):
    """What lets a run's final audit reuse its last iteration's (``iteration_audit_size`` None): same numbers."""
    outcome = loop.evaluate(9)
    np.testing.assert_equal(outcome.audit.metrics(), loop.audit().metrics())
    np.testing.assert_equal(outcome.canaries.metrics(), loop.audit_canaries().metrics())


def test_a_schedule_that_covers_every_original_runs_until_none_is_left_and_half_the_canaries_stay(
        tmp_path_factory):
    """forget_rate x iterations = 1: the per-shard count is rounded up, so the scheduled iterations forget every
    original (the loop would go on while any is left); the odd-numbered canaries are never forgotten, so the
    deployed model's audit still has live canaries to show its power on."""
    loop = toy_loop(tmp_path_factory.mktemp("sweep"), LoopConfig(forget_rate=0.25, iterations=4,
                                                                  convergence_patience=0, shard_audit_size=0),
                    epochs=1, audit_exactness=False)
    assert loop.forget_per_shard() == 9  # ceil(0.25 x (64 originals + 2 scheduled canaries) / 2): 4 x 9 >= 33
    result = loop.run()
    assert len(result.outcomes) == 4 and result.stopped_because == "no original records left after 4 iterations"
    assert loop.live_originals() == []
    assert sorted(loop.live_canaries()) == ["canary-1", "canary-3"]
    assert loop.audit_canaries().live is not None


def test_a_converged_loop_resumed_forgets_nothing_more(loop):
    live = loop.sisa.plan.live_ids()
    result = loop.run(after_iteration=1, converged_streak=1)  # patience 1 was reached before the restart
    assert result.outcomes == [] and result.stopped_because.startswith("converged")
    assert loop.sisa.plan.live_ids() == live


def test_an_empty_request_is_refused(loop):
    with pytest.raises(DataError, match="empty"):
        loop.forget_and_replenish([], seed_base=1)


@pytest.mark.parametrize("field, value, match", [
    ("forget_rate", 0.0, "forget_rate must lie in"), ("iterations", -1, "iterations must be"),
    ("forget_order", "oldest", "unknown forget_order"), ("convergence_patience", -1, "convergence_patience"),
    ("shard_audit_size", 1, "shard_audit_size"), ("exactness_audit", "sometimes", "unknown exactness_audit")])
def test_loop_config_names_the_bad_parameter(field, value, match):
    with pytest.raises(ConfigError, match=match):
        LoopConfig(**{field: value}).validate()


def test_the_sampled_audit_keeps_only_the_fpr_levels_it_can_resolve():
    config = sampled_audit_config(AuditConfig(), 1000, 4000)
    assert config.sample_size == 1000 and config.fpr_levels == (0.01,)
    assert sampled_audit_config(AuditConfig(), None, 4000).fpr_levels == (0.01, 0.001)


def test_every_config_round_trips_through_its_dict():
    from fairforget.pipelines.config import PipelineConfig

    config = PipelineConfig(canaries=12, loop=LoopConfig(iterations=3))
    assert PipelineConfig.from_dict(config.to_dict()) == config
    for cls in ConfigBase.__subclasses__():
        assert cls.__dataclass_params__.frozen, f"{cls.__name__} must be frozen"
        if all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in dataclasses.fields(cls)):
            assert cls.from_dict(cls().to_dict()) == cls(), cls.__name__
    with pytest.raises(ConfigError, match="unknown LoopConfig keys \\['speed'\\]"):
        LoopConfig.from_dict({"speed": 3})


def test_shard_fit_leaves_the_canaries_out(tmp_path):
    from fairforget.components.forgetting import shard_fit_accuracies
    from fairforget.components.training import accuracy, predict_proba

    data = make_toy_dataset(per_class_other=40)
    pool = cut_audit_pool(data.split("audit"), canaries=4, seed=0)
    everything = with_canaries(data.split("train"), pool.canaries)
    sisa = SisaModel.create(everything, SisaConfig(num_shards=2, num_slices=1, executor="serial",
                                                   train=TrainConfig(epochs=2, batch_size=16)), tmp_path)
    sisa.train()
    live = sisa.plan.live()
    for shard, (model, fit) in enumerate(zip(sisa.ensemble().models, shard_fit_accuracies(sisa, everything))):
        ids = [i for i in live.loc[live["shard"] == shard, "id"] if not str(i).startswith("canary-")]
        own = everything.by_ids(ids)
        assert fit == pytest.approx(accuracy(predict_proba(model, own.images), own.labels))
    assert int(live["id"].astype(str).str.startswith("canary-").sum()) == 4  # they were trained on, and left out


def test_a_schedule_above_the_deletion_cap_is_refused_with_both_parameters():
    from fairforget.components.forgetting import check_schedule_capacity

    # the default: 10% of 4040 forgettable records over 5 shards of 6440 / 5 = 1288 records: 81 <= 0.2 * 1288
    assert check_schedule_capacity(forget_rate=0.1, forgettable=4040, total=6440, num_shards=5,
                                   max_deletion_fraction=0.2) == 81
    # 25% of the originals is still fine when synthetic records make the shards large enough ...
    assert check_schedule_capacity(forget_rate=0.25, forgettable=64, total=128, num_shards=2,
                                   max_deletion_fraction=0.2) == 8
    # ... and refused when it is not
    with pytest.raises(ConfigError, match="forget_rate 0.9 forgets 728 records per shard .* max_deletion_fraction 0.2"):
        check_schedule_capacity(forget_rate=0.9, forgettable=4040, total=6440, num_shards=5, max_deletion_fraction=0.2)
