"""The ``mlflow`` service's own command (its backend and artifact store swapped for sqlite and a folder in tmp_path)
receives a whole tiny pipeline run and its registered model version, alias ``candidate``."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.scale_out.helpers import BIN, background, free_port, http_status, replace_option, service_command, wait_until


@pytest.fixture
def tracking_server(tmp_path, monkeypatch):
    """The ``mlflow`` service's command with sqlite for PostgreSQL and a folder for MinIO, on a free loopback port."""
    import mlflow

    port = free_port()
    artifacts = tmp_path / "server-artifacts"
    command = service_command("mlflow")
    command = replace_option(command, "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}")
    command = replace_option(command, "--artifacts-destination", str(artifacts))
    command = replace_option(command, "--host", "127.0.0.1")
    command = replace_option(command, "--port", str(port))
    command = replace_option(command, "--workers", "1")
    command[0] = str(BIN / "mlflow")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = tmp_path / "mlflow-server.log"
    url = f"http://127.0.0.1:{port}"
    previous = mlflow.get_tracking_uri()
    with background(command, log, env=env, cwd=tmp_path) as server:
        wait_until(lambda: http_status(f"{url}/health") == 200, 180, "mlflow server /health", server, log)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fairforget-scale-out-test")
        mlflow.set_tracking_uri(url)
        try:
            yield url, artifacts
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

    url, artifacts = tracking_server
    port = url.rsplit(":", 1)[1]
    # The Host header the pipeline container sends is accepted; a foreign one is refused (--allowed-hosts; the
    # health endpoint is exempt from that check, the API is not).
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(api, host=f"mlflow:{port}") == 200
    assert http_status(api, host="attacker.example") in (400, 403)

    monkeypatch.chdir(tmp_path)  # a client that wrote artifacts locally would leave mlruns/ or mlartifacts/ here
    summary = run_pipeline(tiny_pipeline(tmp_path, mia_threshold=1.0, min_accuracy=0.0))
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
