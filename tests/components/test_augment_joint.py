"""Algorithm 1 with several debiased attributes (issue #14 part 4): two correlated attributes as in the issue, and
CelebA-style Young and Male; every figure recomputed with scipy / scikit-learn on the data Algorithm 1 returns."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy
from sklearn.metrics import mutual_info_score

from fairforget.components.augment import AugmentConfig, augment, cell_headroom, target_cells
from fairforget.components.dataset import Dataset, make_toy_dataset
from fairforget.components.generator import tiny_config, train_generator
from fairforget.components.priors import TargetDistribution, build_target
from fairforget.errors import ConfigError

# The issue's training split: 2000 images, 80% "big" (a, b) of which 17% inverted, 20% "small" (c, d) 83% inverted.
INVERTED_TRAIN = {"a": 136, "b": 136, "c": 166, "d": 166}
JOINT = "superclass x inverted"


def with_inverted(ds: Dataset, inverted_train: dict[str, int] | None) -> Dataset:
    """Mark the first ``inverted_train[c]`` train images of class c (every other image elsewhere) as inverted."""
    manifest = ds.manifest
    rank = manifest.groupby(["split", "class_name"]).cumcount().to_numpy()
    if inverted_train is None:
        flag = rank % 2 == 1
    else:
        limit = manifest["class_name"].map(inverted_train).to_numpy()
        flag = np.where(manifest["split"] == "train", rank < limit, rank % 2 == 1)
    manifest["inverted"] = np.where(flag, "yes", "no")
    ds.images[flag] = 255 - ds.images[flag]
    ds.attributes = ["inverted"]
    return ds


@pytest.fixture(scope="module")
def issue_data():
    return with_inverted(make_toy_dataset(per_class_train=(800, 800, 200, 200), per_class_other=2), INVERTED_TRAIN)


@pytest.fixture(scope="module")
def inverted_generator():
    """A tiny generator conditioned on (class, inverted), trained on a few images: Algorithm 1 only needs its
    condition space to match the data's."""
    small = with_inverted(make_toy_dataset(per_class_train=(8, 8, 8, 8), per_class_other=1), None)
    return train_generator(small, config=tiny_config(), data_md5="md5-small", progress=False)


def inverted_share(manifest: pd.DataFrame, superclass: str, value: str) -> float:
    rows = manifest[manifest["superclass"] == superclass]
    return float((rows["inverted"] == value).mean())


def kl_to_uniform(column: pd.Series) -> float:
    observed = column.value_counts(normalize=True).sort_index().to_numpy()
    return float(entropy(np.full(len(observed), 1.0 / len(observed)), observed))


def test_two_correlated_attributes_are_balanced_jointly_and_the_correlation_falls(issue_data, inverted_generator):
    real = issue_data.split("train").manifest
    target = build_target(real, ["superclass", "inverted"])
    result = augment(issue_data, target, inverted_generator, config=AugmentConfig(rho=0.01))
    after = result.dataset.split("train").manifest

    # before: the real split's bias, exactly KL(0.5/0.5 || 0.8/0.2) = 0.2231
    assert result.before.kl("superclass") == pytest.approx(entropy([0.5, 0.5], [0.8, 0.2]), rel=1e-12)
    assert result.before.kl("superclass") == pytest.approx(0.2231, abs=5e-5)
    # after: both marginals and their joint within rho, recomputed with scipy on the returned data
    assert kl_to_uniform(after["superclass"]) < 0.01 and kl_to_uniform(after["inverted"]) < 0.01
    assert kl_to_uniform(after["superclass"] + "|" + after["inverted"]) < 0.01
    assert result.after.kl(JOINT) == pytest.approx(kl_to_uniform(after["superclass"] + "|" + after["inverted"]),
                                                   abs=1e-12)
    # the spurious correlation falls instead of rising: 83% -> 50%, and I(inverted; class) -> 0
    assert inverted_share(real, "small", "yes") == pytest.approx(0.83)
    assert inverted_share(after, "small", "yes") == pytest.approx(0.5)
    assert inverted_share(after, "big", "no") == pytest.approx(0.5)
    mi_before = mutual_info_score(real["inverted"], real["class_name"])
    mi_after = mutual_info_score(after["inverted"], after["class_name"])
    assert mi_after < 1e-12 < mi_before
    assert result.dependence_before.mutual_information("inverted") == pytest.approx(mi_before, rel=1e-12)
    assert result.dependence_after.mutual_information("inverted") == pytest.approx(mi_after, abs=1e-12)
    # no more than the target needs: the largest group (big, not inverted: 1328) must be a quarter, so 5312 in all
    assert len(result.synthetic) == 4 * 1328 - 2000 == 3312
    assert result.synthetic_to_real == pytest.approx(3312 / 2000)
    assert (after.groupby(["class_name", "inverted"]).size() == 664).all()
    assert [r["added"] for r in result.rounds] == [3312, 0]


def test_in_small_rounds_it_stops_only_when_every_partial_bias_is_below_rho(issue_data, inverted_generator):
    target = build_target(issue_data.split("train").manifest, ["superclass", "inverted"])
    rho = 0.01
    result = augment(issue_data, target, inverted_generator, config=AugmentConfig(rho=rho, round_size=500))
    after = result.dataset.split("train").manifest
    assert set(result.rounds[-1]["kl"]) == {"superclass", "inverted", JOINT}
    assert all(max(r["kl"].values()) >= rho for r in result.rounds[:-1])
    assert max(result.rounds[-1]["kl"].values()) < rho
    for column in ("superclass", "inverted"):
        assert kl_to_uniform(after[column]) < rho
    # never beyond a cell's headroom, so never more than the 3312 the target needs
    assert (result.cells["added"] <= result.cells["headroom"]).all() and len(result.synthetic) <= 3312
    # the correlation is not strengthened on the way (the issue's 98% / 92% came from balancing marginals only)
    assert inverted_share(after, "small", "yes") <= 0.83 and inverted_share(after, "big", "no") <= 0.83
    assert mutual_info_score(after["inverted"], after["class_name"]) < 0.5 * mutual_info_score(
        issue_data.split("train").manifest["inverted"], issue_data.split("train").manifest["class_name"])
    assert [r["mutual_information"]["inverted"] for r in result.rounds][-1] == pytest.approx(
        mutual_info_score(after["inverted"], after["class_name"]), abs=1e-12)


def test_a_target_that_adding_samples_cannot_reach_is_refused_before_generating(issue_data, inverted_generator):
    target = build_target(issue_data.split("train").manifest, ["superclass", "inverted"])
    joint = target.joint[~((target.joint["superclass"] == "small") & (target.joint["inverted"] == "yes"))].copy()
    joint["probability"] /= joint["probability"].sum()
    unreachable = TargetDistribution(target.attributes, joint, "no inverted small images at all")
    with pytest.raises(ConfigError, match="cannot be reached by adding samples.*332 samples in cells the target"):
        augment(issue_data, unreachable, inverted_generator)


# ------------------------------------------------------------------------------------------ CelebA-style attributes
CELEBA_COUNTS = {("Smiling", "Young", "not_Male"): 40, ("Smiling", "Young", "Male"): 10,
                 ("Smiling", "not_Young", "not_Male"): 10, ("Smiling", "not_Young", "Male"): 4,
                 ("not_Smiling", "Young", "not_Male"): 8, ("not_Smiling", "Young", "Male"): 10,
                 ("not_Smiling", "not_Young", "not_Male"): 6, ("not_Smiling", "not_Young", "Male"): 24}


@pytest.fixture(scope="module")
def celeba_like():
    """A tiny manifest shaped like ``sources.read_celeba``'s: label Smiling (superclass = label), attributes
    Young and Male with CelebA's value names, both tied to the label in train."""
    rng = np.random.default_rng(0)
    class_names = ["not_Smiling", "Smiling"]
    rows = []
    for split, counts in (("train", CELEBA_COUNTS), ("test", dict.fromkeys(CELEBA_COUNTS, 2))):
        for (label, young, male), n in counts.items():
            rows += [{"id": f"celeba-{split}-{label}-{young}-{male}-{j}", "split": split,
                      "label": class_names.index(label), "class_name": label, "superclass": label, "origin": "real",
                      "Young": young, "Male": male} for j in range(n)]
    manifest = pd.DataFrame(rows)
    images = rng.integers(0, 256, size=(len(manifest), 8, 8, 1), dtype=np.uint8)
    return Dataset(manifest, images, class_names, {c: c for c in class_names}, ["Young", "Male"],
                   {"dataset": "celeba-like"})


def test_celeba_style_young_and_male_are_debiased_jointly(celeba_like):
    generator = train_generator(celeba_like, config=tiny_config(), data_md5="md5-celeba", progress=False)
    real = celeba_like.split("train").manifest
    target = build_target(real, ["Young", "Male"])
    cells = target_cells(target, celeba_like.split("train"), generator)
    # by hand: the label keeps its share (64/112 smiling) in each of the 4 equally likely (Young, Male) groups;
    # M = 40 / (0.25 * 64/112) = 280, so each smiling cell ends at 40 and each other at 30
    assert int(cell_headroom(cells).sum()) == 280 - 112
    result = augment(celeba_like, target, generator, config=AugmentConfig(rho=0.01))
    after = result.dataset.split("train").manifest
    assert len(after) == 280 and result.synthetic_to_real == pytest.approx(168 / 112)
    for attribute in ("Young", "Male"):
        assert kl_to_uniform(after[attribute]) < 0.01 < kl_to_uniform(real[attribute])
        before_mi = mutual_info_score(real[attribute], real["class_name"])
        after_mi = mutual_info_score(after[attribute], after["class_name"])
        assert after_mi < 1e-12 < before_mi
        assert result.dependence_after.mutual_information(attribute) == pytest.approx(after_mi, abs=1e-12)
    assert mutual_info_score(after["Young"], after["Male"]) < 1e-12
    assert result.after.kl("Young x Male") < 0.01
    counts = after.groupby(["class_name", "Young", "Male"]).size()
    assert set(counts.xs("Smiling")) == {40} and set(counts.xs("not_Smiling")) == {30}


# ------------------------------------------------------------------------------------------------ MLflow logging
def test_augment_step_and_main_log_the_dependence_and_the_synthetic_ratio(tracking_uri, tmp_path, issue_data,
                                                                          inverted_generator):
    from fairforget.pipelines.augment import run_augment
    from fairforget.pipelines.main import Balanced, _log_balance

    result = run_augment(issue_data, inverted_generator, ["superclass", "inverted"], AugmentConfig(),
                         tmp_path / "augmented")
    real = issue_data.split("train").manifest
    client = mlflow.MlflowClient()
    run = mlflow.search_runs(filter_string="tags.step = 'augment'", output_format="list")[0]
    metrics = run.data.metrics
    assert metrics["bias/mi/inverted/before"] == pytest.approx(mutual_info_score(real["inverted"],
                                                                                 real["class_name"]), rel=1e-9)
    assert metrics["bias/mi/inverted/after"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["augment/synthetic_to_real_ratio"] == pytest.approx(3312 / 2000)
    assert client.get_metric_history(run.info.run_id, "bias/kl/superclass")[0].value == pytest.approx(
        entropy([0.5, 0.5], [0.8, 0.2]), rel=1e-9)
    assert client.get_metric_history(run.info.run_id, f"bias/kl/{JOINT}")[-1].value < 0.01
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "augment")}
    assert {"augment/dependence.png", "augment/dependence.json"} <= paths
    table = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/augment/dependence.json"))
    frame = pd.DataFrame(table["data"], columns=table["columns"])
    share = frame.query("superclass == 'small' and value == 'yes'").set_index("when")["proportion"]
    assert share["before"] == pytest.approx(0.83) and share["after"] == pytest.approx(0.5)

    with mlflow.start_run() as parent:
        _log_balance(result.before, Balanced(result.dataset, result.after, inverted_generator, {}, 1.0))
    logged = mlflow.get_run(parent.info.run_id).data.metrics
    assert logged["augment/synthetic_to_real_ratio"] == pytest.approx(3312 / 2000)
    assert logged["bias/mi/inverted/before"] == pytest.approx(metrics["bias/mi/inverted/before"], rel=1e-12)
    assert logged["bias/mi/inverted/after"] == pytest.approx(0.0, abs=1e-12)
    assert "figures/dependence.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
