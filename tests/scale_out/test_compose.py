"""The compose stack's configuration: the compose file, the env file and the Dockerfiles agree with each other,
with requirements.txt and with the services and volumes docs/scaling.md promises; credentials only come from the env
file; and `docker compose config` accepts the stack where a Docker client exists."""


import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.scale_out.helpers import (
    COMPOSE_FILE,
    DOCKER,
    ENV_EXAMPLE,
    INTERPOLATION,
    LONG_RUNNING,
    ONE_SHOT,
    ROOT,
    SCALING_DOC,
    SECRET_NAME,
    compose,
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
    backend = option["--backend-store-uri"]
    assert backend.startswith("postgresql://") and "@postgres:5432/" in backend
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
    for package in ("mlflow", "boto3"):
        assert f"{package}=={pins[package]}" in server, f"Dockerfile.mlflow must install {package}=={pins[package]}"
    assert "psycopg2-binary==" in server


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
    assert f"{env['POSTGRES_PASSWORD']}@postgres:5432" in " ".join(resolved["services"]["mlflow"]["command"])
    # without the secrets Compose refuses to start, naming the variable to set
    env_file.write_text("\n".join(line for line in ENV_EXAMPLE.read_text().splitlines()
                                  if not line.startswith("POSTGRES_PASSWORD=")))
    refused = subprocess.run([*base, "--quiet"], capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"})
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr
