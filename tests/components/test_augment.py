"""Algorithm 1 and replenish on toy data with a tiny generator, plus the train_generator/augment MLflow steps."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from fairforget.components.augment import (
    AugmentConfig,
    augment,
    cell_headroom,
    fill_within_caps,
    largest_remainder,
    replenish,
    target_cells,
)
from fairforget.components.bias import measure_bias
from fairforget.components.dataset import load_dataset, make_toy_dataset, save_dataset
from fairforget.components.generator import tiny_config, train_generator
from fairforget.components.priors import TargetDistribution, build_target
from fairforget.components.versioning import dvc_md5_of_folder


@pytest.fixture(scope="module")
def toy():
    return make_toy_dataset()  # train: a, b (big) 24 each; c, d (small) 8 each


@pytest.fixture(scope="module")
def generator(toy):
    return train_generator(toy, config=tiny_config(), data_md5="md5-toy", progress=False)


@pytest.fixture(scope="module")
def target(toy):
    return build_target(toy.split("train").manifest, ["superclass"])  # 50/50, classes as in S within superclass


def test_headroom_is_the_smallest_balanced_superset(toy, generator, target):
    cells = target_cells(target, toy.split("train"), generator)
    assert list(cells["class_name"]) == ["a", "b", "c", "d"]
    np.testing.assert_allclose(cells["probability"], [0.25] * 4)
    assert list(cells["count"]) == [24, 24, 8, 8]
    # by hand: M = 24 / 0.25 = 96, so c and d may each take 96 * 0.25 - 8 = 16
    assert list(cell_headroom(cells)) == [0, 0, 16, 16]


def test_augment_one_round_reaches_the_target_exactly(toy, generator, target):
    result = augment(toy, target, generator, config=AugmentConfig(rho=0.01), data_md5="md5-toy")
    train = result.dataset.split("train")
    independent = measure_bias(train.manifest, {"superclass": {"big": 0.5, "small": 0.5}})
    assert independent.kl("superclass") == pytest.approx(0.0, abs=1e-12)
    assert result.after.kl("superclass") == pytest.approx(independent.kl("superclass"), abs=1e-12)
    assert result.before.kl("superclass") == pytest.approx(0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25))
    assert len(result.synthetic) == 32
    assert result.synthetic.manifest["class_name"].value_counts().to_dict() == {"c": 16, "d": 16}
    assert [r["added"] for r in result.rounds] == [32, 0]
    # other splits untouched, synthetic rows well-formed
    for split in ("test", "audit", "reference"):
        assert len(result.dataset.split(split)) == len(toy.split(split))
    m = result.synthetic.manifest
    assert (m["origin"] == "synthetic").all() and (m["split"] == "train").all()
    assert (m["superclass"] == "small").all() and (m["generator_version"] == generator.version).all()
    assert m["id"].is_unique and m["id"].iloc[0] == f"syn-{generator.version}-0-000000"
    assert set(m["condition"]) == {"class_name=c", "class_name=d"}
    assert (m["label"] == m["class_name"].map({"c": 2, "d": 3})).all()
    assert result.synthetic.images.shape == (32, 8, 8, 1)


def test_augment_in_small_rounds_never_overshoots_and_logs_each_round(toy, generator, target):
    seen = []
    result = augment(toy, target, generator, config=AugmentConfig(rho=1e-6, round_size=10, step_size=1.0),
                     on_round=lambda r, report, record: seen.append((r, report.loss, record["added"])))
    losses = [loss for _, loss, _ in seen]
    assert [r for r, _, _ in seen] == list(range(len(seen)))
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert [added for _, _, added in seen] == [10, 10, 10, 2, 0]
    counts = result.dataset.split("train").manifest["class_name"].value_counts()
    assert counts["c"] <= 24 and counts["d"] <= 24 and counts["a"] == 24
    assert sorted(set(result.synthetic.manifest["seed"])) == [0, 1, 2, 3]  # one seed per round
    # Lambda moves towards the cells that lack samples: after the first step c and d outweigh a and b
    first_lambda = result.rounds[1]["lambda"]
    assert first_lambda["c"] > first_lambda["a"] and first_lambda["d"] > first_lambda["b"]


def test_bad_inputs_are_refused_before_anything_is_generated(toy, generator, target):
    with pytest.raises(ValueError, match="rho must be > 0"):
        augment(toy, target, generator, config=AugmentConfig(rho=0.0))
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        augment(toy, target, generator, config=AugmentConfig(guidance_scale=-1.0))
    joint = pd.DataFrame({"superclass": ["big", "small", "small"], "class_name": ["a", "c", "zebra"],
                          "probability": [0.5, 0.25, 0.25]})
    alien = TargetDistribution(("superclass",), joint, "with a class the generator does not know")
    with pytest.raises(ValueError, match="prior asks for class_name=\\['zebra'\\], which the generator was not"):
        augment(toy, alien, generator)
    mixed = TargetDistribution(("superclass",), pd.DataFrame({"superclass": ["small"], "class_name": ["a"],
                                                              "probability": [1.0]}), "impossible pair")
    with pytest.raises(ValueError, match="never pairs"):
        augment(toy, mixed, generator)


def test_prior_on_an_attribute_the_generator_does_not_condition_on_is_refused(generator):
    ds = make_toy_dataset()
    ds.manifest["tone"] = np.where(np.arange(len(ds)) % 3 == 0, "light", "dark")
    target = build_target(ds.split("train").manifest, ["tone"])
    with pytest.raises(ValueError, match="'tone', which the generator was not conditioned on"):
        augment(ds, target, generator)


def test_generator_of_another_data_version_is_refused_unless_forced(toy, generator, target):
    with pytest.warns(UserWarning, match="trained on data 'md5-toy'"), pytest.raises(ValueError, match="force"):
        augment(toy, target, generator, data_md5="another-md5")
    with pytest.warns(UserWarning, match="!!!"):
        result = augment(toy, target, generator, data_md5="another-md5", force=True)
    assert len(result.synthetic) == 32


def test_attribute_conditioned_augmentation_balances_the_attribute():
    ds = make_toy_dataset(per_class_train=(16, 16, 16, 16))
    rng = np.random.default_rng(0)
    ds.manifest["tone"] = np.where(rng.random(len(ds)) < 0.2, "light", "dark")
    ds.attributes = ["tone"]
    gen = train_generator(ds, config=tiny_config(), data_md5="m", progress=False)
    target = build_target(ds.split("train").manifest, ["tone"])
    result = augment(ds, target, gen, config=AugmentConfig(rho=0.01))
    assert result.after.kl("tone") < 0.01 < result.before.kl("tone")
    synthetic = result.synthetic.manifest
    assert set(synthetic["tone"]) == {"light"}  # only the minority value has headroom
    assert synthetic["condition"].str.contains("tone=light").all()


def test_replenish_keeps_size_and_balance(toy, generator, target):
    augmented = augment(toy, target, generator).dataset
    train = augmented.split("train")
    rng = np.random.default_rng(0)
    removed = rng.choice(len(train), size=12, replace=False)
    keep = np.ones(len(train), dtype=bool)
    keep[removed] = False
    remaining = train.select(keep)
    new = replenish(remaining, 12, generator, target, seed=101)
    assert len(new) == 12 and (new.manifest["origin"] == "synthetic").all()
    refilled = remaining.concat(new)
    assert len(refilled) == len(train)
    # independent check: each class ends within one sample of its share of the target
    counts = refilled.manifest["class_name"].value_counts().reindex(list("abcd"), fill_value=0)
    assert np.all(np.abs(counts.to_numpy() - 0.25 * len(refilled)) <= 1)
    # removed originals of a and b (which have no synthetic substitutes of their own class yet) come back as a, b
    lost = train.manifest.iloc[removed]["class_name"].value_counts()
    gained = new.manifest["class_name"].value_counts()
    for c in ("a", "b"):
        assert gained.get(c, 0) == lost.get(c, 0)
    with pytest.raises(ValueError, match="already exists"):
        replenish(refilled, 2, generator, target, seed=101)
    assert len(replenish(remaining, 0, generator, target, seed=5)) == 0


def test_allocation_helpers():
    assert list(largest_remainder(10, np.array([1.0, 1.0, 1.0]))) == [4, 3, 3]
    assert largest_remainder(7, np.array([0.2, 0.5, 0.3])).sum() == 7
    alloc = fill_within_caps(10, np.array([0.9, 0.1, 0.0]), np.array([3, 10, 10]))
    assert list(alloc) == [3, 7, 0]
    assert list(fill_within_caps(50, np.array([1.0, 1.0]), np.array([2, 3]))) == [2, 3]


# ------------------------------------------------------------------------------------------------ MLflow steps
def test_get_or_train_generator_reuses_and_retrains(tracking_uri, toy, monkeypatch, tmp_path):
    from fairforget.components.quality import QualityConfig
    from fairforget.pipelines.train_generator import get_or_train_generator

    quality = QualityConfig(reference_epochs=1, cas_epochs=1, eval_per_class=4, kid_subset_size=8, kid_subsets=2,
                            grid_per_class=2)
    first, info = get_or_train_generator(toy, "md5-a", tiny_config(), quality=quality, dataset_name="toy")
    assert info["reused"] is False
    run = mlflow.get_run(info["run_id"])
    assert run.data.tags["data_md5"] == "md5-a" and run.data.tags["generator_config_hash"] == info["config_hash"]
    assert "generator/conditional_accuracy" in run.data.metrics and "generator/fid" in run.data.metrics
    assert run.data.metrics["generator/mia/auc"] == info["metrics"]["generator/mia/auc"]  # the membership audit
    assert 0.5 < run.data.metrics["generator/mia/auc_chance_bound"] < 1.0
    assert run.data.tags["generator_privacy"] == "none"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(info["run_id"], "generator")}
    assert {"generator/generator.json", "generator/weights.pt", "generator/sample_grid.png",
            "generator/mia_roc.png", "generator/mia_summary.txt"} <= artifacts

    temp_folders = set(Path(tempfile.gettempdir()).glob("fairforget-generator-*"))
    again, info2 = get_or_train_generator(toy, "md5-a", tiny_config(guidance_scale=1.5), quality=quality,
                                          dataset_name="toy")
    assert set(Path(tempfile.gettempdir()).glob("fairforget-generator-*")) <= temp_folders  # its download removed
    assert info2["reused"] is True and info2["run_id"] == info["run_id"]
    assert again.config.guidance_scale == 1.5  # a sampling option, not a reason to retrain
    # a generator logged in another experiment (`mlflow run` without --experiment-name logs to Default) is found
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "another-experiment")
    _, elsewhere = get_or_train_generator(toy, "md5-a", tiny_config(), quality=quality, dataset_name="toy",
                                          evaluate=False, log_model=False)
    assert elsewhere["reused"] is True and elsewhere["run_id"] == info["run_id"]
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fairforget-test")
    table = pd.DataFrame({"class_name": ["a", "d"]})
    np.testing.assert_array_equal(again.sample(table, seed=1, guidance_scale=2.0),
                                  first.sample(table, seed=1, guidance_scale=2.0))
    _, info3 = get_or_train_generator(toy, "md5-b", tiny_config(), quality=quality, dataset_name="toy",
                                      evaluate=False, log_model=False)
    assert info3["reused"] is False  # another data version
    _, info4 = get_or_train_generator(toy, "md5-a", tiny_config(), retrain=True, dataset_name="toy",
                                      evaluate=False, log_model=False)
    assert info4["reused"] is False and info4["run_id"] != info["run_id"]
    # the run's canaries: half of them train the generator too, and they are part of the reuse key
    from fairforget.components.canaries import cut_audit_pool

    canaries = cut_audit_pool(toy.split("audit"), canaries=4, seed=0).canaries
    _, probed = get_or_train_generator(toy, "md5-a", tiny_config(), dataset_name="toy", evaluate=False,
                                       log_model=False, canaries=canaries)
    assert probed["reused"] is False
    probed_run = mlflow.get_run(probed["run_id"])
    assert probed_run.data.tags["generator_canary_count"] == "2"
    assert probed_run.data.metrics["generator/train_images"] == len(toy.split("train")) + 2
    _, probed_again = get_or_train_generator(toy, "md5-a", tiny_config(), dataset_name="toy", evaluate=False,
                                             log_model=False, canaries=canaries)
    assert probed_again["reused"] is True and probed_again["run_id"] == probed["run_id"]

    # the pyfunc model loads and generates
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert models, "no logged pyfunc model"
    pyfunc = mlflow.pyfunc.load_model(models[-1].model_uri)
    images = pyfunc.predict(table, params={"seed": 1, "guidance_scale": 2.0})
    np.testing.assert_array_equal(images, first.sample(table, seed=1, guidance_scale=2.0))
    # logged from code: a clean process that refuses pickled models loads it and gets the same images
    import subprocess
    import sys

    expected = tmp_path / "expected.npy"
    np.save(expected, images)
    script = (f"import mlflow, numpy as np, pandas as pd; mlflow.set_tracking_uri({mlflow.get_tracking_uri()!r}); "
              f"model = mlflow.pyfunc.load_model({models[-1].model_uri!r}); "
              "out = model.predict(pd.DataFrame({'class_name': ['a', 'd']}), params={'seed': 1, 'guidance_scale': 2.0}); "
              f"assert (out == np.load({str(expected)!r})).all(); print('same images')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"})
    assert done.returncode == 0 and "same images" in done.stdout, done.stderr[-2000:]


def test_augment_step_logs_and_writes_atomically(tracking_uri, tmp_path, toy, generator):
    from fairforget.pipelines.augment import run_augment

    data_dir = save_dataset(toy, tmp_path / "data")
    md5 = dvc_md5_of_folder(data_dir)
    out = tmp_path / "augmented"
    with pytest.raises(ValueError, match="trained on data"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_augment(toy, generator, ["superclass"], AugmentConfig(), out, data_dir=data_dir, data_md5=md5)
    assert not out.exists()  # refused before anything was written
    with pytest.warns(UserWarning):
        result = run_augment(toy, generator, ["superclass"], AugmentConfig(round_size=20), out, data_dir=data_dir,
                             data_md5=md5, force=True)
    written = load_dataset(out)
    assert len(written) == len(toy) + 32 and (written.manifest["origin"] == "synthetic").sum() == 32
    np.testing.assert_array_equal(written.images[-32:], result.synthetic.images)
    run = mlflow.search_runs(filter_string="tags.step = 'augment'", output_format="list")[0]
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "bias/kl/superclass")
    assert [h.step for h in history] == [0, 1, 2]
    assert history[0].value == pytest.approx(result.before.kl("superclass"))
    assert history[-1].value < 0.01
    paths = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "augment")}
    assert {"augment/distribution_after.png", "augment/distribution_before.png", "augment/rounds.json"} <= paths
    rounds = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/augment/rounds.json"))
    assert [r["added"] for r in rounds] == [20, 12, 0]
    # the run stores no private record: the synthetic samples and a digest that names the whole set exactly
    logged = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="augmented",
                                                 dst_path=str(tmp_path / "logged"))
    files = {p.relative_to(logged).as_posix() for p in Path(logged).rglob("*") if p.is_file()}
    assert files == {"digest.json", "synthetic/manifest.csv", "synthetic/images.npy", "synthetic/meta.json"}
    synthetic = load_dataset(Path(logged) / "synthetic")
    assert set(synthetic.manifest["origin"]) == {"synthetic"} and len(synthetic) == 32
    real = toy.split("train")
    text = "".join((Path(logged) / f).read_text() for f in ("digest.json", "synthetic/manifest.csv"))
    assert not any(i in text for i in real.ids)
    assert not any((synthetic.images == image).all(axis=(1, 2, 3)).any() for image in real.images)
    digest = json.loads((Path(logged) / "digest.json").read_text())
    assert digest["augmented_md5"] == dvc_md5_of_folder(out) == run.data.tags["augmented_md5"]
    assert digest["records"] == len(toy) + 32 and digest["synthetic_records"] == 32


def test_augmented_output_is_dvc_added_with_our_md5(tracking_uri, tmp_path, toy, generator):
    """``--dvc-add true``: the augmented folder is tracked by a ``.dvc`` file whose md5 is the one we log."""
    import subprocess
    import sys

    import yaml

    from fairforget.pipelines.augment import run_augment

    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    data_dir = save_dataset(toy, tmp_path / "data")
    out = tmp_path / "augmented"
    with pytest.warns(UserWarning):
        run_augment(toy, generator, ["superclass"], AugmentConfig(), out, data_dir=data_dir,
                    data_md5=dvc_md5_of_folder(data_dir), force=True, dvc_add=True)
    tracked = yaml.safe_load((tmp_path / "augmented.dvc").read_text())["outs"][0]
    assert tracked["path"] == "augmented" and tracked["md5"] == dvc_md5_of_folder(out)
    run = mlflow.search_runs(filter_string="tags.step = 'augment'", output_format="list")[0]
    assert run.data.tags["augmented_md5"] == tracked["md5"]


def test_command_lines_train_reuse_and_augment(tracking_uri, tmp_path, capsys):
    from fairforget.pipelines import augment as augment_step
    from fairforget.pipelines import train_generator as train_step

    data_dir = save_dataset(make_toy_dataset(), tmp_path / "data")
    small = ["--data-dir", str(data_dir), "--train-steps", "5.0", "--autoencoder-epochs", "1", "--num-threads", "1"]
    assert train_step.main(small + ["--evaluate", "false"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["reused"] is False and info["data_md5"] == dvc_md5_of_folder(data_dir)
    out = tmp_path / "augmented"
    summary = augment_step.run(small + ["--output-dir", str(out), "--rho", "0.01"])
    assert "reusing generator" in capsys.readouterr().err
    assert summary["synthetic_added"] == 32 and summary["after"]["bias/kl/superclass"] < 0.01
    assert len(load_dataset(out)) == len(make_toy_dataset()) + 32
    assert augment_step.main(small + ["--output-dir", str(tmp_path / "never"), "--rho", "0"]) == 2
    assert "error: rho must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("extra, message", [
    (["--output-dir", "DATA"], "would overwrite the data folder"),
    (["--prior", "zipf"], "unknown prior 'zipf'"),
    (["--attributes", "colour"], "attributes ['colour'] are not columns of the data"),
    (["--generator-run-id", "0123456789abcdef0123456789abcdef"], "names no run of the tracking store"),
    (["--dvc-add", "true"], "needs output_dir inside a DVC repository"),
])
def test_augment_refuses_bad_inputs_in_one_line_before_any_generator_work(extra, message, tracking_uri, tmp_path,
                                                                          capsys):
    """A bad prior, attribute, generator run, output folder or DVC set-up used to surface after the generator
    trained (minutes): each is now one line and exit code 2, and nothing is trained or written."""
    import mlflow

    from fairforget.pipelines import augment as augment_step

    data_dir = save_dataset(make_toy_dataset(), tmp_path / "data")
    extra = [str(data_dir) if word == "DATA" else word for word in extra]
    output = ["--output-dir", str(tmp_path / "out")] if "--output-dir" not in extra else []
    capsys.readouterr()
    code = augment_step.main(["--data-dir", str(data_dir), "--train-steps", "5", *output, *extra])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert mlflow.search_runs(search_all_experiments=True).empty  # no generator trained, no run opened
    assert not (tmp_path / "out").exists()
