"""The ``mlflow`` service as its container runs it (basic-auth; its backend and artifact store swapped for sqlite and
a folder in tmp_path) receives a whole tiny pipeline run and its registered model version, alias ``candidate``,
logged as the pipeline's own user that the ``mlflow-users`` one-shot set up."""

from __future__ import annotations

import numpy as np
import pytest

from tests.scale_out.helpers import http_status, operator_env, run_mlflow_users, stack_mlflow_server

pytestmark = pytest.mark.integration  # whole pipeline runs, kill tests or real servers: `make test-all`

EXPERIMENT, MODEL = "fairforget-scale-out-test", "toy-classifier"


@pytest.fixture
def tracking_server(tmp_path, monkeypatch):
    """The stack's MLflow server on a free loopback port; the client logs in as the pipeline user."""
    import mlflow

    env_values = operator_env()
    artifacts = tmp_path / "server-artifacts"
    previous = mlflow.get_tracking_uri()
    with stack_mlflow_server(tmp_path, env_values) as url:
        users = run_mlflow_users(url, env_values, "--experiment", EXPERIMENT, "--model", MODEL)
        assert users.returncode == 0, users.stderr
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", env_values["MLFLOW_PIPELINE_USER"])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", env_values["MLFLOW_PIPELINE_PASSWORD"])
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        mlflow.set_tracking_uri(url)
        try:
            yield url, artifacts, (env_values["MLFLOW_PIPELINE_USER"], env_values["MLFLOW_PIPELINE_PASSWORD"])
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(previous)
            mlflow.set_registry_uri(previous)


def test_a_whole_pipeline_run_lands_on_the_tracking_server(tracking_server, tmp_path, monkeypatch):
    import mlflow

    from fairforget.components.dataset import load_dataset
    from fairforget.components.sisa.model import SisaModel
    from fairforget.components.training import images_to_tensor
    from fairforget.pipelines.main import run_pipeline
    from tests.pipelines.test_pipeline import tiny_pipeline

    url, artifacts, pipeline_user = tracking_server
    port = url.rsplit(":", 1)[1]
    # The Host header the pipeline container sends is accepted; a foreign one is refused (--allowed-hosts; the
    # health endpoint is exempt from that check, the API is not).
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(api, host=f"mlflow:{port}", auth=pipeline_user) == 200
    assert http_status(api, host="attacker.example", auth=pipeline_user) in (400, 403)
    assert http_status(api, host=f"mlflow:{port}") == 401  # no anonymous access

    monkeypatch.chdir(tmp_path)  # a client that wrote artifacts locally would leave mlruns/ or mlartifacts/ here
    summary = run_pipeline(tiny_pipeline(tmp_path, min_accuracy=0.0))
    assert summary["gate"] == "passed" and summary["registered_version"] == "1"

    client = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
    version = client.get_model_version_by_alias("toy-classifier", "candidate")
    assert version.version == "1" and version.run_id == summary["run_id"] and version.tags["gate"] == "passed"
    run = client.get_run(summary["run_id"])
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri  # proxied by the server
    assert "acc/test" in run.data.metrics and "mia/max_success" in run.data.metrics
    # the artifacts went through the server into its artifact destination (MinIO in the stack), not to the client
    stored = {p.relative_to(artifacts).as_posix() for p in artifacts.rglob("*") if p.is_file()}
    assert any(p.endswith("figures/confusion_debiased.png") and summary["run_id"] in p for p in stored)
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()
    # the registered model, downloaded from the server, predicts what the pipeline's own SISA ensemble predicts
    state = next((tmp_path / "outputs").glob("*/*/sisa"))
    data = load_dataset(tmp_path / "data")
    sisa = SisaModel.load(state, data.concat(load_dataset(state.parent / "synthetic")))
    test_images = data.split("test").images
    served = mlflow.pyfunc.load_model("models:/toy-classifier@candidate")
    np.testing.assert_allclose(served.predict(images_to_tensor(test_images).numpy()),
                               sisa.ensemble().predict_proba(test_images), atol=1e-5)
