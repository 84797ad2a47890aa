"""The stack's MLflow server on a real PostgreSQL: a throw-away server from Debian's ``postgresql`` package (``make
postgres`` installs it), started by the test as an unprivileged user on loopback with a password, a database
created in it like the ``postgres`` service's ``POSTGRES_DB``, and the ``mlflow`` service's command pointed at it.
A run and a registered model version go through the server and are read back from it and from the database."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.scale_out.helpers import (
    background,
    free_port,
    operator_env,
    pipeline_resources,
    run_mlflow_users,
    service_environment,
    stack_mlflow_server,
    wait_until,
)

pytestmark = pytest.mark.integration  # whole pipeline runs, kill tests or real servers: `make test-all`


def postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb (Debian's layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda path: [int(n) for n in re.findall(r"\d+", path)])
    return Path(found[-1]).parent if found else None


@pytest.fixture
def postgres(tmp_path):
    """A PostgreSQL server on a free loopback port with the example file's user, a random password (scram-sha-256)
    and the database POSTGRES_DB: yields (env values, port). As root it runs as ``nobody``: postgres refuses root."""
    psycopg = pytest.importorskip("psycopg")
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server here (/usr/lib/postgresql/*/bin/initdb): `make postgres` installs Debian's "
                    "postgresql package")
    env = operator_env()
    user, password, database = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]
    # Not under tmp_path: the unprivileged user must reach it, and the socket path must stay short.
    base = Path(tempfile.mkdtemp(prefix="ffpg", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "nobody", "--"]
        shutil.chown(base, "nobody")
    try:
        (base / "password").write_text(password)
        if as_user:
            shutil.chown(base / "password", "nobody")
        init = subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(base / "data"), "-U", user,
                               f"--pwfile={base / 'password'}", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C",
                               "--no-sync"], cwd=base, capture_output=True, text=True, timeout=120, check=False)
        assert init.returncode == 0, init.stderr
        port = free_port()
        log = tmp_path / "postgres.log"
        server = [*as_user, str(bin_dir / "postgres"), "-D", str(base / "data"), "-p", str(port),
                  "-h", "127.0.0.1", "-k", str(base), "-c", "fsync=off"]
        with background(server, log, cwd=base) as process:
            ready = [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
            wait_until(lambda: subprocess.run(ready, capture_output=True, check=False).returncode == 0, 60,
                       "postgres", process, log)
            with psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="postgres",
                                 autocommit=True) as connection:
                connection.execute(f'CREATE DATABASE "{database}"')
            yield env, port
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow  # about 50 s on the shared 2-core machine: make test-slow
def test_the_tracking_server_keeps_runs_and_models_in_postgres(postgres, tmp_path, monkeypatch):
    import psycopg
    from mlflow import MlflowClient

    env, port = postgres
    # the stack's backend-store URI (driver, user, password, database), only the host moved to this loopback port
    stack_uri = service_environment("mlflow", env)["MLFLOW_BACKEND_STORE_URI"]
    assert stack_uri.startswith("postgresql+psycopg://")
    uri = stack_uri.replace("@postgres:5432/", f"@127.0.0.1:{port}/")
    experiment_name, model_name = pipeline_resources()
    with stack_mlflow_server(tmp_path, env, backend_store_uri=uri) as url:
        users = run_mlflow_users(url, env)
        assert users.returncode == 0, users.stderr
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", env["MLFLOW_PIPELINE_USER"])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", env["MLFLOW_PIPELINE_PASSWORD"])
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        experiment_id = client.get_experiment_by_name(experiment_name).experiment_id
        run = client.create_run(experiment_id, tags={"stage": "postgres-test"})
        client.log_param(run.info.run_id, "forget_rate", "0.1")
        for step, value in enumerate([0.70, 0.74]):
            client.log_metric(run.info.run_id, "acc/test", value, step=step)
        client.set_terminated(run.info.run_id)
        version = client.create_model_version(model_name, source=f"{run.info.artifact_uri}/model",
                                              run_id=run.info.run_id, tags={"gate": "passed"})
        client.set_registered_model_alias(model_name, "candidate", version.version)

        # read back through the server
        stored = client.get_run(run.info.run_id)
        assert stored.data.params == {"forget_rate": "0.1"} and stored.data.metrics == {"acc/test": 0.74}
        assert [m.value for m in client.get_metric_history(run.info.run_id, "acc/test")] == [0.70, 0.74]
        assert stored.info.status == "FINISHED" and stored.data.tags["stage"] == "postgres-test"
        by_alias = client.get_model_version_by_alias(model_name, "candidate")
        assert (by_alias.version, by_alias.run_id, by_alias.tags) == ("1", run.info.run_id, {"gate": "passed"})

    # ... and from PostgreSQL itself, with the MLflow server stopped: the rows are in the database
    with psycopg.connect(host="127.0.0.1", port=port, user=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"],
                         dbname=env["POSTGRES_DB"]) as connection:
        metrics = connection.execute("SELECT step, value FROM metrics WHERE run_uuid = %s ORDER BY step",
                                     (run.info.run_id,)).fetchall()
        assert metrics == [(0, 0.70), (1, 0.74)]
        assert connection.execute("SELECT version, run_id FROM model_versions WHERE name = %s",
                                  (model_name,)).fetchall() == [(1, run.info.run_id)]
        assert connection.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s",
                                  (model_name,)).fetchall() == [("candidate", 1)]
    assert not (tmp_path / "server.db").exists()  # no sqlite fallback
