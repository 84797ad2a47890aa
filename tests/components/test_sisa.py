"""SISA: plan, content-addressed checkpoints, exact unlearning, deletion capacity, aggregation (toy data)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fairforget.components.dataset import make_toy_dataset
from fairforget.components.models import build_classifier
from fairforget.components.sisa import (
    CheckpointError,
    CheckpointStore,
    DeletionCapacityError,
    PlanError,
    ShardEnsemble,
    ShardPlan,
    SisaConfig,
    SisaModel,
    shard_seed,
    train_shard,
)
from fairforget.components.training import TrainConfig, make_optimizer, train_epochs

TINY_TRAIN = TrainConfig(epochs=2, batch_size=8, crop_padding=1, augment=True)


def tiny_config(**overrides) -> SisaConfig:
    values = dict(num_shards=2, num_slices=3, train=TINY_TRAIN, epochs_per_slice=1, executor="serial",
                  audit_exactness=False)
    values.update(overrides)
    return SisaConfig(**values)


@pytest.fixture
def train_set():
    return make_toy_dataset(per_class_train=(16, 16, 8, 8)).split("train")


@pytest.fixture
def trained(train_set, tmp_path):
    model = SisaModel.create(train_set, tiny_config(), tmp_path / "sisa")
    model.train()
    return model


def final_weights(model: SisaModel, shard: int) -> dict:
    return model.store.load(model.final_keys()[shard])["model"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def from_scratch_weights(model: SisaModel, dataset, shard: int) -> dict:
    """An independent recomputation of one shard: the SISA schedule written out with the training primitives."""
    config = model.config
    train = dataclasses.replace(config.train, num_threads=config.threads_per_shard)
    net = build_classifier(config.classifier, dataset.num_classes, 1, 8, seed=shard_seed(config.seed, shard))
    optimizer = make_optimizer(net, train)
    generator = torch.Generator().manual_seed(shard_seed(config.seed, shard))
    rows = model.plan.live()
    rows = rows[rows["shard"] == shard].sort_values("order")
    for stage in range(1, config.num_slices + 1):
        prefix = [rows.loc[rows["slice"] == r, "id"].tolist() for r in range(stage)]
        ids = [i for slice_ids in prefix for i in slice_ids]
        subset = dataset.by_ids(ids)
        train_epochs(net, optimizer, subset.images, subset.labels, config.stage_epochs(), train, generator)
    return net.state_dict()


# plan ------------------------------------------------------------------------------------------------------
def test_plan_is_stratified_balanced_and_seeded(train_set):
    plan = ShardPlan.build(train_set.ids, train_set.labels, num_shards=3, num_slices=2, seed=4)
    table = plan.table
    sizes = plan.shard_sizes()
    assert sum(sizes) == len(train_set) and max(sizes) - min(sizes) <= 1
    for shard in range(3):
        assert set(table.loc[table["shard"] == shard, "label"]) == {0, 1, 2, 3}
    assert table.equals(ShardPlan.build(train_set.ids, train_set.labels, 3, 2, seed=4).table)
    assert not table["shard"].equals(ShardPlan.build(train_set.ids, train_set.labels, 3, 2, seed=5).table["shard"])


def test_grouped_rows_share_a_shard_so_forgetting_a_record_and_its_copies_retrains_one(train_set, tmp_path):
    copies = train_set.by_ids(train_set.ids[:12])
    copies = dataclasses.replace(copies, manifest=copies.manifest.assign(id=[f"{i}~copy{n}" for n, i in
                                                                              enumerate(copies.ids)]))
    with_copies = train_set.concat(copies).concat(dataclasses.replace(
        copies, manifest=copies.manifest.assign(id=[f"{i}-again" for i in copies.ids])))
    groups = [i.split("~copy")[0] for i in with_copies.ids]
    model = SisaModel.create(with_copies, SisaConfig(num_shards=3, num_slices=2, seed=4), tmp_path / "m",
                             groups=groups)
    table = model.plan.table.assign(group=groups)
    assert (table.groupby("group")["shard"].nunique() == 1).all()
    holding = table.loc[table["group"] == train_set.ids[0], "shard"]
    assert len(holding) == 3 and holding.nunique() == 1
    # the records themselves are still dealt stratified and balanced over the shards
    originals = table[~table["id"].str.contains("~copy")]
    for shard in range(3):
        assert set(originals.loc[originals["shard"] == shard, "label"]) == {0, 1, 2, 3}
    # without copies, one group per row is the ungrouped plan
    plain = ShardPlan.build(train_set.ids, train_set.labels, 3, 2, seed=4)
    assert plain.table.equals(ShardPlan.build(train_set.ids, train_set.labels, 3, 2, seed=4,
                                              groups=train_set.ids).table)
    with pytest.raises(PlanError, match="group keys"):
        ShardPlan.build(train_set.ids, train_set.labels, 3, 2, groups=train_set.ids[:-1])


@pytest.mark.parametrize("k,r", [(0, 2), (2, 0), (-1, 1)])
def test_plan_refuses_bad_shard_and_slice_counts(train_set, k, r):
    with pytest.raises(PlanError, match=">= 1"):
        ShardPlan.build(train_set.ids, train_set.labels, k, r)


def test_added_samples_go_to_the_last_slices(train_set):
    plan = ShardPlan.build(train_set.ids, train_set.labels, 2, 3, seed=0)
    rows = plan.add(["new-1", "new-2", "new-3"], [2, 2, 3])
    assert set(rows["slice"]) == {2}
    rows = plan.add(["new-4", "new-5"], [0, 0], shard_of={"new-4": 1, "new-5": 1}, into_last_slices=2)
    assert rows["shard"].tolist() == [1, 1] and sorted(rows["slice"]) == [1, 2]
    with pytest.raises(PlanError, match="already in the plan"):
        plan.add(["new-1"], [0])


# checkpoints -----------------------------------------------------------------------------------------------
def test_resuming_from_a_checkpoint_equals_an_uninterrupted_run(trained, train_set, tmp_path):
    task = trained.shard_task(0, checkpoint_dir=tmp_path / "resumed")
    keys = task.keys()
    store = CheckpointStore(tmp_path / "resumed")
    train_shard(task)
    for key in keys[2:]:  # "interrupt" after stage 1: only its checkpoint survives
        store.path(key).unlink()
    result = train_shard(task)
    assert result.resumed_from == 1 and result.stages_trained == [2, 3]
    assert same_weights(store.load(keys[-1])["model"], final_weights(trained, 0))
    assert same_weights(final_weights(trained, 0), from_scratch_weights(trained, train_set, 0))


def test_corrupt_or_mismatched_checkpoint_is_refused(trained):
    key = trained.final_keys()[0]
    path = trained.store.path(key)
    good = path.read_bytes()
    path.write_bytes(good[:-5] + b"xxxxx")
    with pytest.raises(CheckpointError, match="corrupt"):
        trained.store.load(key)
    path.write_bytes(good)
    other = trained.final_keys()[1]
    trained.store.path(other).write_bytes(good)  # a valid file under the wrong name
    with pytest.raises(CheckpointError, match="not its file name"):
        trained.store.load(other)


def test_forgetting_and_replenishing_in_one_retrain_equals_two_steps(train_set, tmp_path):
    """``unlearn(ids, replacements=...)`` retrains once and lands on the weights of unlearn, add, train (and of a
    from-scratch schedule on the new data)."""
    toy = make_toy_dataset(per_class_train=(16, 16, 8, 8), seed=3).split("train")
    new = toy.select(np.arange(len(toy)) < 4)
    new = dataclasses.replace(new, manifest=new.manifest.assign(id=[f"new-{k}" for k in range(4)]))
    one = SisaModel.create(train_set, tiny_config(), tmp_path / "one")
    two = SisaModel.create(train_set, tiny_config(), tmp_path / "two")
    one.train(), two.train()
    rows = one.plan.live()
    forget = rows[rows["slice"] == 0]["id"].tolist()[:4]
    shards = [0, 0, 1, 1]

    with pytest.raises(PlanError, match="already in the plan"):
        one.unlearn(forget, replacements=train_set.select(np.arange(len(train_set)) < 1), replacement_shards=[0])
    assert one.plan.live_ids() == two.plan.live_ids()  # the refused request changed nothing
    report = one.unlearn(forget, replacements=new, replacement_shards=shards)
    two.unlearn(forget)
    two.add(new, shard_of=shards)
    second = two.train()

    assert report.shards_retrained == [0, 1] and second.shards_trained == [0, 1]
    assert one.plan.live_ids() == two.plan.live_ids()
    data = train_set.concat(new)
    for shard in range(2):
        assert same_weights(final_weights(one, shard), final_weights(two, shard))
        assert same_weights(final_weights(one, shard), from_scratch_weights(one, data, shard))


# unlearning ------------------------------------------------------------------------------------------------
def test_unlearning_is_exact_and_leaves_other_shards_alone(trained, train_set):
    shard1_file = trained.store.path(trained.final_keys()[1])
    shard1_bytes, shard1_mtime = shard1_file.read_bytes(), shard1_file.stat().st_mtime_ns
    rows = trained.plan.live()
    forget = rows[(rows["shard"] == 0) & (rows["slice"] == 1)]["id"].tolist()[:2]

    report = trained.unlearn(forget, audit=True)

    assert report.shards_retrained == [0]
    assert report.first_slice == {0: 1}
    assert report.slices_retrained == 2  # stages 2 and 3 of shard 0; stage 1 reused
    assert report.exact is True and report.audited_shard == 0
    assert shard1_file.stat().st_mtime_ns == shard1_mtime and shard1_file.read_bytes() == shard1_bytes
    remaining = train_set.select(~np.isin(train_set.ids, forget))
    assert same_weights(final_weights(trained, 0), from_scratch_weights(trained, remaining, 0))
    # nothing that saw the forgotten samples survives
    assert set(trained.store.keys()) <= {k for s in range(2) for k in trained.shard_task_keys(s)}
    assert all(i not in trained._images for i in forget)
    assert report.as_metrics()["unlearn/exact"] == 1.0


def test_deletion_capacity_is_enforced_before_anything_changes(trained):
    rows = trained.plan.live()
    shard0 = rows[rows["shard"] == 0]["id"].tolist()
    too_many = shard0[: int(0.2 * len(shard0)) + 1]
    files_before = {k: trained.store.path(k).read_bytes() for k in trained.store.keys()}
    with pytest.raises(DeletionCapacityError, match="split it into at least 2 calls"):
        trained.unlearn(too_many)
    assert not trained.plan.table["deleted"].any()
    assert {k: trained.store.path(k).read_bytes() for k in trained.store.keys()} == files_before
    trained.unlearn(too_many[:-1])  # exactly at the cap is allowed


def test_bad_deletion_requests_are_refused(trained):
    first = trained.plan.live_ids()[0]
    with pytest.raises(PlanError, match="never trained on"):
        trained.unlearn(["no-such-id"])
    with pytest.raises(ValueError, match="empty"):
        trained.unlearn([])
    with pytest.raises(PlanError, match="repeats"):
        trained.unlearn([first, first])
    trained.unlearn([first])
    with pytest.raises(PlanError, match="already forgotten"):
        trained.unlearn([first])


def test_emptying_a_shard_is_refused(train_set, tmp_path):
    model = SisaModel.create(train_set, tiny_config(max_deletion_fraction=1.0), tmp_path / "s")
    model.train()
    shard0 = model.plan.live().query("shard == 0")["id"].tolist()
    with pytest.raises(PlanError, match="empty"):
        model.unlearn(shard0)


def test_adding_samples_retrains_only_the_last_stage(trained):
    extra = make_toy_dataset(per_class_train=(2, 2, 2, 2), seed=9).split("train")
    extra.manifest["id"] = "syn-" + extra.manifest["id"]
    stale = trained.add(extra)
    report = trained.train()
    assert report.shards_trained == stale
    assert report.stages_trained == len(stale)
    assert all(r.resumed_from == trained.config.num_slices - 1 for r in report.results)
    assert trained.train().shards_trained == []


def test_forgetting_orders(trained):
    candidates = trained.plan.live_ids()
    late = trained.sample_forget_set(candidates, 3, order="last_slice_first", seed=0)
    rows = trained.plan.rows_of(late)
    assert len(late) == 6 and (rows.groupby("shard").size() == 3).all()
    assert (rows["slice"] == trained.config.num_slices - 1).all()
    uniform = trained.sample_forget_set(candidates, 3, order="random", seed=0)
    assert uniform == trained.sample_forget_set(candidates, 3, order="random", seed=0)
    assert uniform != trained.sample_forget_set(candidates, 3, order="random", seed=1)
    with pytest.raises(ValueError, match="last_slice_first"):
        trained.sample_forget_set(candidates, 3, order="oldest")



def test_the_exactness_audit_runs_in_the_retraining_pool_and_catches_a_retrain_that_differs(trained, monkeypatch):
    """The from-scratch retrain is one more task of the pool (trained in a scratch folder), and a from-scratch
    result that differs from the served shard by one weight makes ``exact`` False."""
    from fairforget.components.sisa import model as sisa_model

    calls, train_shard = [], sisa_model.train_shard

    def train_then_perturb_scratch(task):
        result = train_shard(task)
        calls.append(task.checkpoint_dir)
        if "sisa-audit-" in task.checkpoint_dir:
            store = sisa_model.CheckpointStore(task.checkpoint_dir)
            state = store.load(result.final_key)
            first = next(iter(state["model"]))
            state["model"][first] = state["model"][first] + 1e-6
            store.save(result.final_key, state)
        return result

    monkeypatch.setattr(sisa_model, "train_shard", train_then_perturb_scratch)
    report = trained.unlearn([trained.plan.live_ids()[0]], audit=True)
    assert report.exact is False
    assert "sisa-audit-" in calls[0] and len(calls) == 2  # the audit first, then the one retrained shard

def test_every_shard_retrained_from_scratch_equals_the_unlearned_model_and_a_changed_weight_is_named(
        trained, monkeypatch):
    """The final exactness check (``exactness_audit=final``): after unlearning without per-step audits, every
    shard retrained from scratch equals the stored one bit for bit; a stored shard changed by one weight is named."""
    trained.unlearn(trained.plan.live_ids()[:2], audit=False)
    assert trained.shards_differing_from_scratch() == []
    key = trained.final_keys()[1]
    state = trained.store.load(key)
    first = next(iter(state["model"]))
    state["model"][first] = state["model"][first] + 1e-6
    trained.store.save(key, state)
    assert trained.shards_differing_from_scratch() == [1]


def test_state_folder_reopens_and_keeps_unlearning(trained, train_set):
    trained.unlearn([trained.plan.live_ids()[0]])
    reopened = SisaModel.load(trained.state_dir, train_set)
    assert reopened.plan.table.equals(trained.plan.table)
    assert SisaModel.read_plan(trained.state_dir).table.equals(trained.plan.table)  # the plan without the images
    assert reopened.stale_shards() == []
    report = reopened.unlearn([reopened.plan.live_ids()[0]], audit=True)
    assert report.exact is True


# aggregation -----------------------------------------------------------------------------------------------
def test_aggregations_match_a_numpy_recomputation_and_survive_save_load(trained, tmp_path):
    images = make_toy_dataset().split("test").images
    ensemble = trained.ensemble()
    shard_proba = ensemble.shard_proba(images)
    assert shard_proba.shape == (2, len(images), 4)
    np.testing.assert_allclose(ensemble.predict_proba(images), shard_proba.mean(axis=0), rtol=1e-6)
    votes = np.argmax(shard_proba, axis=2)
    expected_votes = np.stack([np.bincount(votes[:, n], minlength=4) / 2 for n in range(len(images))])
    np.testing.assert_allclose(ensemble.predict_proba(images, aggregation="majority_vote"), expected_votes)
    ensemble.save(tmp_path / "ens")
    loaded = ShardEnsemble.load(tmp_path / "ens")
    np.testing.assert_array_equal(loaded.predict_proba(images), ensemble.predict_proba(images))
    with open(tmp_path / "ens" / "shard_1.pt", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ValueError, match="altered"):
        ShardEnsemble.load(tmp_path / "ens")
    with pytest.raises(ValueError, match="mean_softmax"):
        ensemble.predict_proba(images, aggregation="median")


def test_ensemble_before_training_says_to_train(train_set, tmp_path):
    model = SisaModel.create(train_set, tiny_config(), tmp_path / "s")
    with pytest.raises(CheckpointError, match="train"):
        model.ensemble()


# the train step ---------------------------------------------------------------------------------------------
def test_train_step_logs_sizes_accuracies_and_the_ensemble(tracking_uri, tmp_path):
    import mlflow

    from fairforget.components.dataset import save_dataset
    from fairforget.pipelines.train import run as main

    data = make_toy_dataset(per_class_train=(16, 16, 8, 8))
    save_dataset(data, tmp_path / "data")
    outcome = main(["--data-dir", str(tmp_path / "data"), "--state-dir", str(tmp_path / "state"), "--num-shards", "2",
                    "--num-slices", "2", "--epochs", "2", "--batch-size", "8", "--executor", "serial",
                    "--augment", "0", "--progress", "0"])
    run = mlflow.get_run(outcome.run_id)
    metrics = run.data.metrics
    assert metrics["shard/0/size"] + metrics["shard/1/size"] == len(data.split("train"))
    test = data.split("test")
    ensemble = outcome.model.ensemble()
    expected = float(np.mean(ensemble.predict(test.images) == test.labels))
    assert metrics["acc/test"] == pytest.approx(expected)
    assert 0.0 <= metrics["train/shard_fit_accuracy_min"] <= 1.0 and "acc/shard/1/test" in metrics
    assert metrics["time/train_s"] > 0 and metrics["train/stages_trained"] == 4
    local = mlflow.artifacts.download_artifacts(run_id=outcome.run_id, artifact_path="ensemble",
                                                dst_path=str(tmp_path / "dl"))
    np.testing.assert_array_equal(ShardEnsemble.load(local).predict_proba(test.images),
                                  ensemble.predict_proba(test.images))
    again = main(["--data-dir", str(tmp_path / "data"), "--state-dir", str(tmp_path / "state"), "--num-shards", "2",
                  "--num-slices", "2", "--epochs", "2", "--batch-size", "8", "--executor", "serial",
                  "--augment", "0", "--progress", "0"])
    assert again.metrics["train/stages_trained"] == 0  # same data and config: checkpoints reused


@pytest.mark.slow
def test_real_fashion_mnist_sisa_is_accurate_and_exact(tmp_path):
    """k=5, R=4 on the prepared default data: the measured accuracy, and one deletion served exactly."""
    from pathlib import Path

    from fairforget.components.dataset import load_dataset

    data_dir = Path(__file__).resolve().parents[2] / "data"
    if not (data_dir / "manifest.csv").is_file():
        pytest.skip("no prepared data in data/: run `mlflow run . -e prepare --env-manager local` first")
    data = load_dataset(data_dir)
    model = SisaModel.create(data.split("train"), SisaConfig(executor="local"), tmp_path / "sisa")
    model.train()
    test = data.split("test")
    assert np.mean(model.ensemble().predict(test.images) == test.labels) > 0.5  # 0.549 measured (chance 0.1)
    report = model.unlearn([model.plan.live_ids()[0]], audit=True)
    assert report.shards_retrained and report.exact is True
