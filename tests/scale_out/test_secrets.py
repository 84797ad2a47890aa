"""No container of the stack starts with a secret that is empty or still its value from docker/.env.example:
docker/check_secrets.py as the ``secrets-check`` one-shot and the ``mlflow`` service run it, and docker/entrypoint.sh
(the pipeline and Ray image) before its command. Each refusal is one line naming the variable and the fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.scale_out.helpers import (
    BIN,
    CHECKED_SECRET,
    DOCKER,
    ENV_EXAMPLE,
    ROOT,
    compose,
    container_command,
    operator_env,
    read_env_file,
    service_environment,
)

EX_CONFIG = 78
EXAMPLE = read_env_file(ENV_EXAMPLE)
EXAMPLE_SECRETS = sorted(key for key in EXAMPLE if CHECKED_SECRET.search(key))


def clean_environ() -> dict[str, str]:
    """This process's environment without anything secret-looking (the machine's own variables must not leak in)."""
    return {key: value for key, value in os.environ.items() if not CHECKED_SECRET.search(key)}


def run_container(service: str, env_values: dict[str, str], **overrides: str) -> subprocess.CompletedProcess:
    """The container's entrypoint + command with the compose environment of ``env_values`` (``overrides`` set after
    Compose's interpolation, as ``docker run -e NAME=...`` would)."""
    environment = {**clean_environ(), **service_environment(service, env_values), **overrides}
    return subprocess.run(container_command(service, env_values), capture_output=True, text=True, timeout=60,
                          check=False, env=environment)


def assert_refused(result: subprocess.CompletedProcess, *names: str) -> None:
    assert result.returncode == EX_CONFIG, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refusing to start: "), result.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert "docker/.env" in lines[0]


def test_the_example_file_marks_every_secret_as_an_example():
    assert {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "RAY_AUTH_TOKEN", "MLFLOW_ADMIN_PASSWORD",
            "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= set(EXAMPLE_SECRETS)
    for key in EXAMPLE_SECRETS:
        assert EXAMPLE[key].startswith("change-me"), f"{key}: example secrets say so (change-me-...)"


@pytest.mark.parametrize("secret", EXAMPLE_SECRETS)
def test_the_stack_refuses_each_example_or_empty_secret_by_name(secret):
    """``secrets-check`` (every service waits for it) with an operator's .env where one secret was left alone."""
    env = operator_env()
    assert run_container("secrets-check", env).returncode == 0
    assert_refused(run_container("secrets-check", {**env, secret: EXAMPLE[secret]}), secret)
    # empty: Compose itself refuses (${NAME:?...}); the check refuses it too, where the variable arrives empty anyway
    with pytest.raises(KeyError, match=secret):
        service_environment("secrets-check", {**env, secret: ""})
    assert_refused(run_container("secrets-check", env, **{secret: ""}), secret)


def test_the_mlflow_server_refuses_example_secrets_in_its_environment():
    env = operator_env()
    # its MinIO account's password reaches the server as AWS_SECRET_ACCESS_KEY: the message names both
    assert_refused(run_container("mlflow", {**env, "MINIO_MLFLOW_PASSWORD": EXAMPLE["MINIO_MLFLOW_PASSWORD"]}),
                   "AWS_SECRET_ACCESS_KEY", "MINIO_MLFLOW_PASSWORD")
    assert_refused(run_container("mlflow", {**env, "MLFLOW_ADMIN_PASSWORD": EXAMPLE["MLFLOW_ADMIN_PASSWORD"]}),
                   "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_ADMIN_PASSWORD")
    # the PostgreSQL password is only inside MLFLOW_BACKEND_STORE_URI (environment, not the command line)
    assert_refused(run_container("mlflow", {**env, "POSTGRES_PASSWORD": EXAMPLE["POSTGRES_PASSWORD"]}),
                   "MLFLOW_BACKEND_STORE_URI", "POSTGRES_PASSWORD")
    # with the operator's secrets the check hands over to the command (here `echo` in place of `mlflow`)
    command = container_command("mlflow", env)
    command[command.index("--") + 1] = "echo"
    passed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False,
                            env={**clean_environ(), **service_environment("mlflow", env)})
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.startswith("server --app-name basic-auth ")


@pytest.fixture
def app(tmp_path):
    """A git-less copy of the project's DVC set-up, as in the image (/app): ``data`` links to ``workspace/data``,
    and the workspace (a volume in the stack) is a DVC project of its own."""
    app = tmp_path / "app"
    (app / ".dvc").mkdir(parents=True)
    shutil.copy(ROOT / ".dvc" / "config", app / ".dvc" / "config")
    (app / "workspace").mkdir()
    subprocess.run([str(BIN / "python"), "-m", "dvc", "init", "--no-scm", "-q"], cwd=app / "workspace", check=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    (app / "data").symlink_to(app / "workspace" / "data", target_is_directory=True)
    return app


def run_entrypoint(app, env: dict[str, str], command: str = "echo ran > ran.txt") -> subprocess.CompletedProcess:
    """docker/entrypoint.sh (from docker/, where the image keeps check_secrets.py and .env.example beside it)."""
    path = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
            "HOME": str(app.parent / "home")}
    return subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), "sh", "-c", command], cwd=app,
                          env={**clean_environ(), **path, **env}, capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_pipeline_image_entrypoint_refuses_before_running_anything(app):
    stack = {key: value for key, value in service_environment("pipeline", operator_env()).items()
             if not key.startswith("DVC_")}  # no DVC remote: nothing to push
    for name, example in [("MLFLOW_TRACKING_PASSWORD", "MLFLOW_PIPELINE_PASSWORD"),
                          ("AWS_SECRET_ACCESS_KEY", "MINIO_PIPELINE_PASSWORD"), ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN")]:
        refused = run_entrypoint(app, {**stack, name: EXAMPLE[example]})
        assert_refused(refused, name, example)
        assert_refused(run_entrypoint(app, {**stack, name: ""}), name)
        assert not (app / "ran.txt").exists() and not (app / "workspace" / ".dvc" / "config.local").exists()
    # the example file as it is (`cp docker/.env.example docker/.env` and nothing else)
    assert_refused(run_entrypoint(app, service_environment("pipeline")))
    passed = run_entrypoint(app, stack)
    assert passed.returncode == 0, passed.stderr
    assert (app / "ran.txt").read_text() == "ran\n"
    # a plain `docker run fairforget:cpu` (embedded sqlite, no secrets at all) still runs
    (app / "ran.txt").unlink()
    alone = run_entrypoint(app, {})
    assert alone.returncode == 0 and (app / "ran.txt").exists(), alone.stderr



def test_after_a_run_the_entrypoint_versions_the_workspace_data_and_pushes_it(app, tmp_path):
    """The data a run wrote through the ``data`` link are ``dvc add``-ed in the workspace's DVC project and pushed
    to the stack's remote (a local folder here, MinIO in the stack)."""
    stack = {key: value for key, value in service_environment("pipeline", operator_env()).items()
             if not key.startswith("DVC_")}
    remote = tmp_path / "remote"
    done = run_entrypoint(app, {**stack, "DVC_REMOTE_URL": str(remote)},
                          "mkdir workspace/data && echo id > data/manifest.csv")
    assert done.returncode == 0, done.stderr
    assert (app / "workspace" / "data.dvc").is_file() and not (app / "data.dvc").exists()
    assert (app / "data").is_symlink() and (app / "workspace" / "data" / "manifest.csv").is_file()
    assert "dvc: data pushed to" in done.stdout
    pushed = sorted(p for p in remote.rglob("*") if p.is_file())
    assert any(p.read_bytes() == b"id\n" for p in pushed)  # the manifest's bytes are in the remote

def test_the_check_fails_closed_without_the_example_file(tmp_path):
    script = shutil.copy(DOCKER / "check_secrets.py", tmp_path / "check_secrets.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False,
                            env=clean_environ())
    assert result.returncode == EX_CONFIG and ".env.example is missing" in result.stderr


def test_minio_accounts_are_scoped_to_one_bucket_and_their_keys_never_reach_a_command_line(tmp_path):
    """minio-buckets' script run with a recording ``mc`` (MinIO itself needs Docker): the MLflow server and the
    pipeline each get an account whose policy names its own bucket only; ``mc admin user add`` receives the keys on
    its standard input, and no ``mc`` call has a secret among its arguments. Only MinIO and minio-buckets hold the
    root keys (and secrets-check, which only compares them with the examples)."""
    env = operator_env()
    calls = tmp_path / "calls"
    calls.mkdir()
    fake = tmp_path / "bin" / "mc"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\n'
                    f'n=$(ls "{calls}" | wc -l); call="{calls}/$n"\n'
                    'printf "%s\\n" "$@" > "$call.args"\n'
                    'case "$1 $2 $3" in\n'
                    '  "admin user add") cat > "$call.stdin" ;;\n'
                    '  "admin policy create") cat "$6" > "$call.policy" ;;\n'
                    'esac\n')
    fake.chmod(0o755)
    spec = container_command("minio-buckets", env)
    assert spec[:2] == ["/bin/sh", "-c"]
    done = subprocess.run(spec, env={**clean_environ(), **service_environment("minio-buckets", env),
                                     "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    recorded = sorted(calls.glob("*.args"), key=lambda path: int(path.name.split(".")[0]))
    arguments = [path.read_text().splitlines() for path in recorded]
    secret_values = [value for key, value in env.items() if CHECKED_SECRET.search(key)]
    for argv in arguments:
        assert not any(secret in part for secret in secret_values for part in argv), argv
    assert arguments[0] == ["mb", "--ignore-existing", f"store/{env['MLFLOW_BUCKET']}", f"store/{env['DVC_BUCKET']}"]
    for user, password, bucket in [("MINIO_MLFLOW_USER", "MINIO_MLFLOW_PASSWORD", "MLFLOW_BUCKET"),
                                   ("MINIO_PIPELINE_USER", "MINIO_PIPELINE_PASSWORD", "DVC_BUCKET")]:
        added = [path for path in calls.glob("*.stdin") if path.read_text().splitlines()[0] == env[user]]
        assert len(added) == 1 and added[0].read_text() == f"{env[user]}\n{env[password]}\n"
        policy_file = next(path for path in calls.glob("*.policy")
                           if (calls / path.name.replace(".policy", ".args")).read_text().splitlines()[4]
                           == f"fairforget-{env[bucket]}")
        resources = {resource for statement in json.loads(policy_file.read_text())["Statement"]
                     for resource in statement["Resource"]}
        assert resources == {f"arn:aws:s3:::{env[bucket]}", f"arn:aws:s3:::{env[bucket]}/*"}
        assert ["admin", "policy", "attach", "store", f"fairforget-{env[bucket]}", "--user", env[user]] in arguments
    assert service_environment("mlflow", env)["AWS_SECRET_ACCESS_KEY"] == env["MINIO_MLFLOW_PASSWORD"]
    assert service_environment("pipeline", env)["AWS_SECRET_ACCESS_KEY"] == env["MINIO_PIPELINE_PASSWORD"]
    holders = {name for name in compose()["services"]
               if any(env["MINIO_ROOT_PASSWORD"] in value for value in service_environment(name, env).values())}
    assert holders == {"secrets-check", "minio", "minio-buckets"}  # secrets-check: to refuse an example one
