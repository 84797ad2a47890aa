"""The stack's MLflow server, for real on loopback: started as the ``mlflow`` container starts it (secrets check, then
``mlflow server --app-name basic-auth`` with docker/basic_auth.ini), with the ``mlflow-users`` one-shot run against
it. Nobody anonymous reads or writes; the pipeline's own user writes its experiment and registered model and does
nothing an admin does; another logged-in user only reads."""

from __future__ import annotations

import pytest

from tests.scale_out.helpers import (
    http_call,
    http_status,
    operator_env,
    pipeline_resources,
    run_mlflow_users,
    service_command,
    stack_mlflow_server,
)

pytestmark = pytest.mark.integration  # whole pipeline runs, kill tests or real servers: `make test-all`


@pytest.fixture
def as_user(monkeypatch):
    """``as_user(name, password)``: the MLflow client of this process logs in as that user from now on."""
    def login(name: str, password: str) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", name)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)

    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    return login


@pytest.mark.slow  # about 50 s on the shared 2-core machine: make test-slow
def test_anonymous_requests_are_refused_and_the_pipeline_user_writes_only_its_own(tmp_path, as_user):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    env = operator_env()
    experiment_name, model_name = pipeline_resources()
    assert experiment_name == service_command("pipeline")[service_command("pipeline").index("--experiment-name") + 1]
    admin = (env["MLFLOW_ADMIN_USER"], env["MLFLOW_ADMIN_PASSWORD"])
    pipeline = (env["MLFLOW_PIPELINE_USER"], env["MLFLOW_PIPELINE_PASSWORD"])
    with stack_mlflow_server(tmp_path, env) as url:
        api = f"{url}/api/2.0/mlflow"
        # the compose health check needs no login; everything else does
        assert http_status(f"{url}/health") == 200
        assert http_call("POST", f"{api}/experiments/create", {"name": "anonymous"})[0] == 401
        assert http_status(f"{api}/experiments/search?max_results=5") == 401
        assert http_status(f"{api}/registered-models/search") == 401
        assert http_status(f"{api}/experiments/search?max_results=5", auth=(admin[0], "a-wrong-password")) == 401
        assert http_status(f"{api}/experiments/search?max_results=5", auth=admin) == 200

        users = run_mlflow_users(url, env)
        assert users.returncode == 0, users.stderr
        assert f"created user {pipeline[0]}" in users.stdout

        # the pipeline's user, through MlflowClient as the pipeline container uses it (MLFLOW_TRACKING_USERNAME/...)
        as_user(*pipeline)
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        experiment = client.get_experiment_by_name(experiment_name)
        run = client.create_run(experiment.experiment_id)
        client.log_metric(run.info.run_id, "acc/test", 0.75)
        client.set_terminated(run.info.run_id)
        version = client.create_model_version(model_name, source=f"{run.info.artifact_uri}/model",
                                              run_id=run.info.run_id)
        client.set_registered_model_alias(model_name, "candidate", version.version)
        # the complaint: anyone who reached the port could set champion
        alias = {"name": model_name, "alias": "champion", "version": version.version}
        assert http_call("POST", f"{api}/registered-models/alias", alias)[0] == 401
        # ... and it is not an admin: no users, no deleting what it writes to, no grants
        assert http_call("POST", f"{api}/users/create", {"username": "intruder", "password": "x" * 16},
                         auth=pipeline)[0] == 403
        assert http_call("POST", f"{api}/experiments/delete", {"experiment_id": experiment.experiment_id},
                         auth=pipeline)[0] == 403
        assert http_call("DELETE", f"{api}/registered-models/delete", {"name": model_name}, auth=pipeline)[0] == 403
        grant = {"username": pipeline[0], "resource_type": "experiment", "resource_id": "0", "permission": "MANAGE"}
        assert http_call("POST", f"{url}/api/3.0/mlflow/users/permissions/grant", grant, auth=pipeline)[0] == 403

        # what it wrote, read back by the admin
        as_user(*admin)
        admin_client = MlflowClient(tracking_uri=url, registry_uri=url)
        assert admin_client.get_run(run.info.run_id).data.metrics == {"acc/test": 0.75}
        assert admin_client.get_model_version_by_alias(model_name, "candidate").run_id == run.info.run_id
        assert experiment.experiment_id == admin_client.get_experiment_by_name(experiment_name).experiment_id

        # a user the admin creates (REST API) and grants nothing reads everything and writes nothing of the pipeline's
        reader = ("a-reader", "reader-password-123")
        created = http_call("POST", f"{api}/users/create", {"username": reader[0], "password": reader[1]}, auth=admin)
        assert created[0] == 200, created
        as_user(*reader)
        reader_client = MlflowClient(tracking_uri=url, registry_uri=url)
        assert reader_client.get_run(run.info.run_id).data.metrics == {"acc/test": 0.75}
        for write in (lambda: reader_client.log_metric(run.info.run_id, "acc/test", 0.0),
                      lambda: reader_client.set_registered_model_alias(model_name, "champion", version.version),
                      lambda: reader_client.create_run(experiment.experiment_id)):
            with pytest.raises(MlflowException) as refused:
                write()
            assert refused.value.get_http_status_code() == 403
        as_user(*admin)
        assert admin_client.get_model_version_by_alias(model_name, "candidate").version == version.version
        with pytest.raises(MlflowException):
            admin_client.get_model_version_by_alias(model_name, "champion")

        # rerunning the one-shot (every `up`) is harmless, and a new password in docker/.env replaces the old one
        rotated = {**env, "MLFLOW_PIPELINE_PASSWORD": "a-new-pipeline-password"}
        again = run_mlflow_users(url, rotated)
        assert again.returncode == 0, again.stderr
        assert f"user {pipeline[0]} exists: password set" in again.stdout
        assert http_status(f"{api}/experiments/search?max_results=5", auth=pipeline) == 401
        as_user(pipeline[0], rotated["MLFLOW_PIPELINE_PASSWORD"])
        client.log_metric(run.info.run_id, "acc/test", 0.8)  # still EDIT after the grant was replaced
        assert [m.value for m in client.get_metric_history(run.info.run_id, "acc/test")] == [0.75, 0.8]

        # and it refuses, in one line, to make the admin the pipeline's user or to set a password MLflow rejects
        same = run_mlflow_users(url, {**env, "MLFLOW_PIPELINE_USER": env["MLFLOW_ADMIN_USER"]})
        assert same.returncode == 1 and same.stderr.strip().count("\n") == 0, same.stderr
        assert "MLFLOW_PIPELINE_USER is the admin" in same.stderr
        short = run_mlflow_users(url, {**env, "MLFLOW_PIPELINE_PASSWORD": "too-short"})
        assert short.returncode == 1 and "12 characters" in short.stderr, short.stderr

