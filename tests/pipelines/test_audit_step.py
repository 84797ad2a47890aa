"""The ``audit`` step end to end: a tiny pyfunc logged and registered here, audited through models:/ URIs."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from fairforget.components.dataset import make_toy_dataset, save_dataset
from fairforget.components.mia import AuditConfig, audit_membership, float_array_predictor
from fairforget.components.versioning import dvc_md5_of_folder


class LinearSoftmax(mlflow.pyfunc.PythonModel):
    """float32 (N, C, H, W) in [0, 1] -> softmax(x W) (N, K): the registry's pyfunc contract, in numpy."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights

    def predict(self, context, model_input, params=None):
        x = np.asarray(model_input, dtype=np.float64).reshape(len(model_input), -1)
        logits = x @ self.weights
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def _log_and_register(weights, name):
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="classifier", python_model=LinearSoftmax(weights))
    version = mlflow.register_model(info.model_uri, name).version
    mlflow.MlflowClient().set_registered_model_alias(name, "candidate", version)
    return info.model_uri, version


@pytest.mark.integration  # the audit entry point run on a registered toy model: make test-all
def test_audit_step_logs_metrics_figures_and_tags_the_version(tracking_uri, tmp_path):
    from fairforget.pipelines.audit import run as main

    data = make_toy_dataset(per_class_train=(50, 50, 50, 50), per_class_other=100)
    data_dir = save_dataset(data, tmp_path / "data")
    weights = np.random.default_rng(0).normal(0, 0.5, size=(64, 4))
    _, version = _log_and_register(weights, "toy-classifier")
    loaded = mlflow.pyfunc.load_model("models:/toy-classifier@candidate")
    x = data.to_float_tensor_array()[:5]
    np.testing.assert_allclose(loaded.predict(x), LinearSoftmax(weights).predict(None, x))

    forgotten = tmp_path / "forgotten.txt"
    forgotten.write_text("\n".join(data.split("train").ids[::4]) + "\n")
    report = main(["--model-uri", "models:/toy-classifier@candidate", "--data-dir", str(data_dir),
                   "--reference-epochs", "2", "--fpr-levels", "0.01", "--num-bootstrap", "20",
                   "--forgotten-ids", str(forgotten), "--step", "3", "--num-threads", "1"])

    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(experiment_names=["fairforget-test"], filter_string="tags.step = 'audit'")
    assert len(runs) == 1
    run_id = runs.loc[0, "run_id"]
    history = client.get_metric_history(run_id, "mia/max_success")
    assert [m.step for m in history] == [3]
    assert history[0].value == pytest.approx(report.max_success())
    assert "mia/forgotten/rmia/auc" in runs.columns.str.replace("metrics.", "").tolist()
    artifacts = {f.path for f in client.list_artifacts(run_id, "audit")}
    assert {"audit/roc_all.png", "audit/roc_forgotten.png", "audit/mia_table.csv", "audit/summary.txt"} <= artifacts
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="audit/mia_table.csv",
                                                            dst_path=str(tmp_path)))
    assert len(table) == 3 * len(AuditConfig().attacks)

    tags = client.get_model_version("toy-classifier", version).tags
    assert tags["audit_data_md5"] == dvc_md5_of_folder(data_dir)
    assert tags["audit_run_id"] == run_id
    assert float(tags["mia_max_success"]) == pytest.approx(report.max_success(), abs=1e-4)
    assert float(tags["mia_forgotten_auc_high"]) >= 0.0 and int(tags["mia_forgotten_n"]) > 0
    assert float(tags["audit_time"]) > 0

    # the step's numbers are what a direct call on the same pyfunc gives (seeded, no hidden state)
    from fairforget.pipelines.audit import members_and_non_members

    members, non_members, _ = members_and_non_members(data, seed=0)
    direct = audit_membership(float_array_predictor(loaded.predict), members, non_members, attacks=["mloss", "mmean"],
                              config=AuditConfig(fpr_levels=(0.01,), num_bootstrap=20, show_progress=False, num_threads=1))
    assert direct.metrics()["mia/mmean/auc"] == pytest.approx(report.metrics()["mia/mmean/auc"])


def test_a_model_with_other_classes_is_refused(tracking_uri):
    data = make_toy_dataset(per_class_train=(50, 50, 50, 50), per_class_other=100)
    from fairforget.pipelines.audit import members_and_non_members

    members, non_members, _ = members_and_non_members(data, seed=0)
    three_classes = LinearSoftmax(np.zeros((64, 3)))
    with pytest.raises(ValueError, match="predicts 3 classes but the data has 4"):
        audit_membership(float_array_predictor(lambda x: three_classes.predict(None, x)), members, non_members,
                         attacks=["mloss"], config=AuditConfig(fpr_levels=(0.01,), show_progress=False))


@pytest.mark.integration  # the audit entry point run on a registered toy model: make test-all
def test_the_audit_step_sets_aside_the_images_a_registered_version_made_its_canaries_from(tracking_uri):
    from fairforget.components.canaries import cut_audit_pool, reserve_canary_pool
    from fairforget.pipelines.audit import members_and_non_members, registered_canaries

    data = make_toy_dataset(per_class_train=(50, 50, 50, 50), per_class_other=100)
    audit = data.split("audit")
    canary_images, _ = reserve_canary_pool(audit, 5, seed=0)
    _, non_members, reference_half = members_and_non_members(data, seed=0, canaries=5)
    assert not set(canary_images.ids) & (set(non_members.ids) | set(reference_half.ids))
    run = cut_audit_pool(audit, canaries=5, seed=0)  # the pipeline run's own halves
    assert non_members.ids.tolist() == run.non_members.ids.tolist()
    assert reference_half.ids.tolist() == run.reference_half.ids.tolist()
    _, every_non_member, every_reference = members_and_non_members(data, seed=0)  # no canaries: the whole split
    assert len(every_non_member) + len(every_reference) == len(audit)

    _, version = _log_and_register(np.zeros((64, 4)), "toy-canaries")
    assert registered_canaries(f"models:/toy-canaries/{version}") == 0  # no tag: a model without canaries
    mlflow.MlflowClient().set_model_version_tag("toy-canaries", version, "canaries", "5")
    assert registered_canaries("models:/toy-canaries@candidate") == 5 and registered_canaries("runs:/x/model") == 0
