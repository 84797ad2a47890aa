"""The compose stack's configuration: the compose file, the env file and the Dockerfiles agree with each other,
with requirements.txt and with the services and volumes docs/scaling.md promises; credentials only come from the env
file; the stack is safe by default (loopback ports, MLflow behind a login, the pipeline not an admin, every secret
checked before anything starts); and `docker compose config` accepts the stack where a Docker client exists."""


import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fairforget.pipelines.ledger_mirror import LEDGER_EXPERIMENT
from tests.scale_out.helpers import (
    CHECKED_SECRET,
    COMPOSE_FILE,
    DOCKER,
    ENV_EXAMPLE,
    IMAGE_FILES,
    INTERPOLATION,
    LONG_RUNNING,
    ONE_SHOT,
    ROOT,
    SCALING_DOC,
    SECRET_NAME,
    compose,
    interpolate,
    pipeline_resources,
    promised,
    read_env_file,
    service_command,
    service_environment,
)


def test_compose_names_every_service_volume_and_health_check_the_docs_promise():
    services = compose()["services"]
    assert set(services) == promised("service") == LONG_RUNNING | ONE_SHOT
    assert set(compose()["volumes"]) == promised("volume")
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck", {})
        assert check.get("test") and check.get("retries"), f"{name} has no health check"
        assert services[name]["restart"] == "unless-stopped", name
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no" and "healthcheck" not in services[name], name
    # every dependency waits for health (or successful completion of a one-shot service)
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert rule["condition"] == expected, (name, dependency)
    # named volumes: declared, and the SISA checkpoints at the same path on the pipeline and every Ray node
    mounts = {name: {m.split(":")[0]: m.split(":")[1] for m in s.get("volumes", [])} for name, s in services.items()}
    for name, volumes in mounts.items():
        assert set(volumes) <= set(compose()["volumes"]), f"{name} mounts an undeclared volume or a host path"
    assert {mounts[s]["outputs"] for s in ("pipeline", "ray-head", "ray-worker", "pipeline-gpu")} == {"/app/outputs"}
    assert mounts["postgres"] == {"postgres-data": "/var/lib/postgresql/data"}
    assert mounts["minio"] == {"minio-data": "/data"}


def test_the_commands_in_the_docs_name_real_services_and_profiles():
    """Every `run --rm X`, `--scale X=` and `--profile X` in docs/scaling.md and the README names a service/profile."""
    services = compose()["services"]
    profiles = {p for s in services.values() for p in s.get("profiles", [])}
    texts = [SCALING_DOC.read_text(), (ROOT / "README.md").read_text()]
    named = [name for text in texts for name in re.findall(r"run --rm ([\w-]+)|--scale ([\w-]+)=", text)]
    assert named, "docs/scaling.md shows no `docker compose run --rm <service>`"
    for run_name, scale_name in named:
        assert (run_name or scale_name) in services, run_name or scale_name
    for text in texts:
        for profile in re.findall(r"--profile ([\w-]+)", text):
            assert profile in profiles, profile
    # and the entry point parameter the docs use for the Ray address is the MLproject's
    assert "-P ray_address=ray://ray-head:10001" in texts[0]


def test_the_stack_is_wired_as_the_docs_say():
    services = compose()["services"]
    mlflow_server = service_command("mlflow")
    assert mlflow_server[:2] == ["mlflow", "server"] and "--serve-artifacts" in mlflow_server
    option = {k: v for k, v in zip(mlflow_server, mlflow_server[1:]) if k.startswith("--")}
    assert "--backend-store-uri" not in option  # the password it holds would be on the command line
    backend = service_environment("mlflow")["MLFLOW_BACKEND_STORE_URI"]
    # psycopg 3, the driver requirements.txt pins and tests/scale_out/test_mlflow_postgres.py runs against PostgreSQL
    assert backend.startswith("postgresql+psycopg://") and "@postgres:5432/" in backend
    env = read_env_file(ENV_EXAMPLE)
    assert option["--artifacts-destination"].startswith(f"s3://{env['MLFLOW_BUCKET']}/")
    assert service_environment("mlflow")["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    buckets = service_command("minio-buckets")[0]
    assert "mc mb" in buckets and "$MLFLOW_BUCKET" in buckets and "$DVC_BUCKET" in buckets
    pipeline = service_command("pipeline")
    assert pipeline[:3] == ["mlflow", "run", "."] and pipeline[pipeline.index("--env-manager") + 1] == "local"
    parameters = dict(p.split("=", 1) for p in pipeline[pipeline.index("-P") + 1::2] if "=" in p)
    assert parameters == {"forget_rate": "0.1", "executor": "ray", "ray_address": "ray://ray-head:10001"}
    head = service_command("ray-head")
    assert "--head" in head and "--port=6379" in head and "--ray-client-server-port=10001" in head
    assert "--address=ray-head:6379" in service_command("ray-worker")
    pipeline_env = service_environment("pipeline")
    assert pipeline_env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # no password or secret on any command line (entrypoint + command, as Compose interpolates the example .env)
    env = read_env_file(ENV_EXAMPLE)
    secret_values = [v for k, v in env.items() if re.search(r"PASSWORD|SECRET|TOKEN", k) and v]
    for name, service in services.items():
        command = service_command(name, env) if "command" in service else []
        line = " ".join(str(part) for part in [*(service.get("entrypoint") or []), *command])
        assert not any(value in line for value in secret_values), name
    # the gate's key on a volume of its own: it outlives a container, and the serve step verifies with it (read-only)
    for name, mode in (("pipeline", "rw"), ("pipeline-gpu", "rw"), ("serve", "ro")):
        key_dir = str(Path(service_environment(name)["FAIRFORGET_GATE_KEY_FILE"]).parent)
        mounts = {m.split(":")[1]: (m.split(":") + ["rw"])[2] for m in services[name]["volumes"]}
        assert mounts.get(key_dir) == mode and f"gate-key:{key_dir}" in " ".join(services[name]["volumes"]), name
    assert pipeline_env["DVC_REMOTE_URL"].startswith(f"s3://{env['DVC_BUCKET']}/")
    assert pipeline_env["DVC_ENDPOINT_URL"] == "http://minio:9000"
    # the MLproject parameters the pipeline service sets exist, and the entry point maps ray_address on
    mlproject = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]["main"]
    assert {"forget_rate", "executor", "ray_address"} <= set(mlproject["parameters"])
    assert "--ray-address {ray_address}" in mlproject["command"]
    assert services["pipeline-gpu"]["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    assert services["pipeline-gpu"]["profiles"] == ["gpu"]
    assert services["pipeline"]["profiles"] == ["pipeline"]  # `up` starts the stack, `run pipeline` the work


def test_credentials_come_from_the_env_file_only():
    env = read_env_file(ENV_EXAMPLE)
    text = COMPOSE_FILE.read_text()
    referenced = {m.group(1) for m in INTERPOLATION.finditer(text)}
    assert referenced <= set(env), f"variables missing from docker/.env.example: {sorted(referenced - set(env))}"
    secrets = {key: value for key, value in env.items() if SECRET_NAME.search(key)}
    assert {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "RAY_AUTH_TOKEN"} <= set(secrets)
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert INTERPOLATION.fullmatch(str(value)), f"{name}.{key} must come from docker/.env: ${{{key}}}"
    for path in [COMPOSE_FILE, *DOCKER.glob("Dockerfile*")]:
        content = path.read_text()
        for key, value in secrets.items():
            assert value not in content, f"{path.name} holds the value of {key}: take it from docker/.env"
        if path.name.startswith("Dockerfile") and not path.name.endswith(".dockerignore"):
            secret_setting = re.compile(r"^\s*(ENV|ARG)\s+\S*(PASSWORD|SECRET|TOKEN)", re.MULTILINE | re.IGNORECASE)
            assert not secret_setting.search(content), f"{path.name} sets a secret: take it from docker/.env"
    for ignore in DOCKER.glob("*.dockerignore"):
        patterns = ignore.read_text().split()
        assert "docker/.env" in patterns or "*" in patterns, f"{ignore.name} must keep docker/.env out of the image"
    # every value the compose file needs resolves from the example file (Compose would refuse otherwise)
    for name, service in compose()["services"].items():
        if "command" in service:
            service_command(name)
        service_environment(name)


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_dockerfiles_build_from_the_pinned_requirements():
    pins = _pins(ROOT / "requirements.txt")
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (DOCKER / name).read_text()
        assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE), name
        assert "pip install -r requirements.txt" in text and "COPY requirements.txt" in text, name
        assert "dataset-fashion-mnist" in text, name
        assert "core.no_scm true" in text, f"{name}: no .git in the image, so `dvc add` needs core.no_scm"
        assert 'ENTRYPOINT ["/app/docker/entrypoint.sh"]' in text, name
        cmd = re.search(r"^CMD (\[.*?\])\s*$", text.replace("\\\n", ""), re.MULTILINE | re.DOTALL)
        assert cmd and yaml.safe_load(cmd.group(1))[:6] == ["mlflow", "run", ".", "-P", "forget_rate=0.1",
                                                            "--env-manager"], name
        for package, version in re.findall(r"\b(torch|torchvision)==([0-9][0-9A-Za-z.+]*[0-9A-Za-z])", text):
            assert pins[package] == version, f"{name}: {package}=={version}, requirements.txt: {pins[package]}"
    for dockerfile in DOCKER.glob("Dockerfile*"):
        if dockerfile.suffix != ".dockerignore":
            assert (DOCKER / f"{dockerfile.name}.dockerignore").is_file(), f"{dockerfile.name} has no .dockerignore"
    server = (DOCKER / "Dockerfile.mlflow").read_text()
    for package, spelled in (("mlflow", "mlflow"), ("boto3", "boto3"), ("psycopg", "psycopg[binary]"),
                             ("flask-wtf", "Flask-WTF")):
        assert f"{spelled}=={pins[package]}" in server, f"Dockerfile.mlflow must install {spelled}=={pins[package]}"


def compose_cli() -> list[str] | None:
    """The Compose CLI here: v2 (`docker compose`), else v1 (`docker-compose`, Debian's package), else None."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_itself_accepts_the_stack(tmp_path):
    """Compose's own parsing, schema validation and interpolation. `config` needs the Compose CLI, not a running
    engine; with neither Compose v2 nor v1 installed the YAML checks above stand in for it."""
    cli = compose_cli()
    if cli is None:
        docker = shutil.which("docker")
        engine = bool(docker) and subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0
        pytest.skip(f"no Compose CLI here (docker engine answering: {engine}): `docker compose config` not run")
    env_file = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, env_file)
    base = [*cli, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "--profile", "gpu", "--profile", "pipeline",
            "config"]
    result = subprocess.run([*base, "--quiet"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = subprocess.run([*base, "--services"], capture_output=True, text=True, timeout=60)
    assert set(services.stdout.split()) == LONG_RUNNING | ONE_SHOT
    resolved = yaml.safe_load(subprocess.run(base, capture_output=True, text=True, timeout=60).stdout)
    env = read_env_file(ENV_EXAMPLE)
    assert resolved["services"]["pipeline"]["environment"]["RAY_AUTH_TOKEN"] == env["RAY_AUTH_TOKEN"]
    mlflow_service = resolved["services"]["mlflow"]
    assert f"{env['POSTGRES_PASSWORD']}@postgres:5432" in mlflow_service["environment"]["MLFLOW_BACKEND_STORE_URI"]
    for name, service in resolved["services"].items():  # no password on any command line
        line = " ".join([*(service.get("entrypoint") or []), *(service.get("command") or [])])
        assert not any(env[k] in line for k in env if "PASSWORD" in k), name
    # Compose's own reading of the ports: every one on loopback (v1 writes "127.0.0.1:5000:5000/tcp", v2 a mapping)
    ports = [(name, port) for name, s in resolved["services"].items() for port in s.get("ports", [])]
    assert len(ports) == 3
    for name, port in ports:
        host = port.get("host_ip") if isinstance(port, dict) else port.split(":")[0]
        assert host == "127.0.0.1", (name, port)
    # without the secrets Compose refuses to start, naming the variable to set
    env_file.write_text("\n".join(line for line in ENV_EXAMPLE.read_text().splitlines()
                                  if not line.startswith("POSTGRES_PASSWORD=")))
    refused = subprocess.run([*base, "--quiet"], capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"})
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr


# ---- safe by default ----------------------------------------------------------------------------------------------
def test_every_published_port_binds_to_loopback_unless_the_operator_opts_in():
    services = compose()["services"]
    env = read_env_file(ENV_EXAMPLE)
    assert env["BIND_ADDRESS"] == "127.0.0.1"
    without = {key: value for key, value in env.items() if key != "BIND_ADDRESS"}  # an older docker/.env
    published = set()
    for name, service in services.items():
        assert service.get("network_mode") != "host", f"{name} must not share the host's network"
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), (name, port)
            for values in (env, without):
                host, _, container = interpolate(port, values).split(":")
                assert host == "127.0.0.1", (name, port)
            assert interpolate(port, {**env, "BIND_ADDRESS": "0.0.0.0"}).startswith("0.0.0.0:")  # the opt-in
            published.add((name, container))
    # MLflow (login required), MinIO's S3 API and console (MinIO's root credentials), the champion's predictions
    # (serve: no login, loopback by default); nothing of Ray
    assert published == {("mlflow", "5000"), ("minio", "9000"), ("minio", "9001"), ("serve", "5001")}
    assert "ports" not in services["ray-head"] and "ports" not in services["ray-worker"]
    assert not {"RAY_CLIENT_PORT", "RAY_DASHBOARD_PORT"} & set(env)


def test_mlflow_requires_a_login_and_the_pipeline_logs_in_as_its_own_user():
    services = compose()["services"]
    server = service_command("mlflow")
    assert server[server.index("--app-name") + 1] == "basic-auth"
    raw = services["mlflow"]["environment"]
    assert raw["MLFLOW_AUTH_ADMIN_USERNAME"].startswith("${MLFLOW_ADMIN_USER:?")
    assert raw["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    assert raw["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("${MLFLOW_FLASK_SERVER_SECRET_KEY:?")
    # the auth configuration the image points MLflow at: users in the mlflow-auth volume, no password in the file
    dockerfile = (DOCKER / "Dockerfile.mlflow").read_text()
    assert f"MLFLOW_AUTH_CONFIG_PATH={IMAGE_FILES}basic_auth.ini" in dockerfile
    copied = re.search(rf"^COPY (.+) {IMAGE_FILES}$", dockerfile, re.MULTILINE).group(1).split()
    assert {"basic_auth.ini", "check_secrets.py", "mlflow_users.py", ".env.example"} <= set(copied)
    ignore = (DOCKER / "Dockerfile.mlflow.dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:] and {f"!{name}" for name in copied} <= set(ignore)
    assert "!.env" not in ignore
    config = configparser.ConfigParser()
    config.read(DOCKER / "basic_auth.ini")
    settings = config["mlflow"]
    assert settings["default_permission"] == "READ"  # logged-in users read; writes need a grant or ownership
    assert "admin_password" not in settings and "admin_username" not in settings
    volume = next(m for m in services["mlflow"]["volumes"] if m.startswith("mlflow-auth:")).split(":")[1]
    assert settings["database_uri"].startswith(f"sqlite:///{volume}/")
    image_cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE).group(1))
    assert image_cmd[image_cmd.index("--app-name") + 1] == "basic-auth"  # the image alone starts no open server
    # the pipeline authenticates as MLFLOW_PIPELINE_USER, never as the admin; the Ray nodes hold no MLflow login
    for name in ("pipeline", "pipeline-gpu"):
        environment = services[name]["environment"]
        assert environment["MLFLOW_TRACKING_USERNAME"].startswith("${MLFLOW_PIPELINE_USER:?"), name
        assert environment["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_PIPELINE_PASSWORD:?"), name
        assert services[name]["depends_on"]["mlflow-users"]["condition"] == "service_completed_successfully"
    for name in ("ray-head", "ray-worker"):
        assert not any(key.startswith("MLFLOW_") for key in services[name]["environment"]), name
    admin_users = {name for name, s in services.items() if "${MLFLOW_ADMIN_PASSWORD" in str(s.get("environment"))}
    assert admin_users == {"secrets-check", "mlflow", "mlflow-users"}
    env = read_env_file(ENV_EXAMPLE)
    assert env["MLFLOW_PIPELINE_USER"] != env["MLFLOW_ADMIN_USER"]
    assert all(len(env[key]) >= 12 for key in ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_PIPELINE_PASSWORD"))  # MLflow's minimum
    # mlflow-users prepares exactly the experiment and model the pipeline writes to
    experiment, model = pipeline_resources()
    pipeline = service_command("pipeline")
    assert pipeline[pipeline.index("--experiment-name") + 1] == experiment
    mlproject = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]["main"]
    assert mlproject["parameters"]["model_name"]["default"] == model
    # and the deletion ledger's mirror, so the pipeline holds EDIT there (adds mirror runs, cannot delete them)
    users = compose()["services"]["mlflow-users"]["command"]
    assert [users[i + 1] for i, part in enumerate(users) if part == "--experiment"] == [experiment, LEDGER_EXPERIMENT]


def test_every_secret_is_checked_before_any_service_starts():
    services = compose()["services"]
    env = read_env_file(ENV_EXAMPLE)
    secrets = {key for key in env if CHECKED_SECRET.search(key)}
    check = services["secrets-check"]
    assert check["entrypoint"] == ["python", f"{IMAGE_FILES}check_secrets.py"]
    assert set(check["command"]) == secrets and set(check["environment"]) == secrets
    for key, value in check["environment"].items():
        assert value.startswith(f"${{{key}:?"), key

    def waits_for(name: str) -> set[str]:
        direct = set(services[name].get("depends_on") or {})
        return direct.union(*(waits_for(d) for d in direct)) if direct else set()

    for name in set(services) - {"secrets-check"}:
        assert "secrets-check" in waits_for(name), f"{name} may start before the secrets are checked"
    # the services that hold secrets check them again themselves (the images may run without compose)
    for name in ("mlflow", "mlflow-users"):
        entrypoint = services[name]["entrypoint"]
        assert entrypoint[:2] == ["python", f"{IMAGE_FILES}check_secrets.py"] and entrypoint[-1] == "--", name
        for required in entrypoint[2:-1]:
            assert required in services[name]["environment"], (name, required)
    assert 'python "$(dirname "$0")/check_secrets.py"' in (DOCKER / "entrypoint.sh").read_text()
    # a secret never falls back to a value written in the compose file: ${NAME:?...}, never ${NAME:-...}
    for match in INTERPOLATION.finditer(COMPOSE_FILE.read_text()):
        if CHECKED_SECRET.search(match.group(1)):
            assert match.group(2) in (None, ":?"), f"${{{match.group(1)}{match.group(2)}...}} has a default"
