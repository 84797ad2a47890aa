"""Scale out (docker/): the compose stack's configuration, and the same configuration exercised on loopback.

No Docker engine runs on these machines, so the containers' parts are run here as processes, with the commands
and settings read from docker/docker-compose.yml and docker/.env.example:

- the compose file, the env file and the Dockerfiles agree with each other, with requirements.txt and with the
  services and volumes docs/scaling.md promises; credentials only come from the env file;
- the ``mlflow`` service's own command (its backend and artifact store swapped for sqlite and a folder in
  tmp_path) receives a whole tiny pipeline run and its registered model version, alias ``candidate``;
- a Ray head and a worker started with the ``ray-head`` / ``ray-worker`` commands and token (tests/test_executors.py
  covers a local ``ray.init``; here the pipeline's ``ray_address`` path through the Ray client) train SISA shards
  bit-identical to the serial executor;
- DVC pushes to and pulls from an S3 endpoint (moto's server) the way it uses MinIO, and the bytes round-trip.

Every process a test starts is stopped by that test, by its process group.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
SCALING_DOC = ROOT / "docs" / "scaling.md"
BIN = Path(sys.executable).parent
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|ROOT_USER")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# ---- reading the compose file the way Compose does --------------------------------------------------------------
def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$`` (a literal ``$``)."""
    def substitute(match: re.Match) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = env.get(name, "")
        if operator in (":-", "-") and not value:
            return argument
        if operator in (":?", "?") and not value:
            raise KeyError(f"{name}: {argument}")
        return value

    return INTERPOLATION.sub(substitute, text.replace("$$", "\0")).replace("\0", "$")


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service_command(service: str, env: dict[str, str] | None = None) -> list[str]:
    env = read_env_file(ENV_EXAMPLE) if env is None else env
    return [interpolate(str(part), env) for part in compose()["services"][service]["command"]]


def service_environment(service: str) -> dict[str, str]:
    env = read_env_file(ENV_EXAMPLE)
    return {key: interpolate(str(value), env)
            for key, value in (compose()["services"][service].get("environment") or {}).items()}


def replace_option(command: list[str], option: str, value: str) -> list[str]:
    """``command`` with the value of ``option`` (``--opt value`` or ``--opt=value``) replaced."""
    out = list(command)
    for i, part in enumerate(out):
        if part == option:
            out[i + 1] = value
            return out
        if part.startswith(option + "="):
            out[i] = f"{option}={value}"
            return out
    raise AssertionError(f"{option} is not in {command}")


def promised(table_header: str) -> set[str]:
    """The backticked names in the first column of the docs/scaling.md table whose header starts with it."""
    names, inside = set(), False
    for line in SCALING_DOC.read_text().splitlines():
        if line.startswith(f"| {table_header} |"):
            inside = True
            continue
        if inside and line.startswith("|---"):
            continue
        if inside and line.startswith("|"):
            names.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
        elif inside:
            break
    assert names, f"docs/scaling.md has no '| {table_header} |' table"
    return names


# ---- processes ----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def background(command: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Run ``command`` in its own process group; on exit stop the whole group (SIGTERM, then SIGKILL)."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                   start_new_session=True)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # children that outlived their parent (Ray's raylet, ...)
        process.wait(timeout=10)


def wait_until(check, timeout: float, what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}: not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def http_status(url: str, host: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


# ---- the files ----------------------------------------------------------------------------------------------------
LONG_RUNNING = {"postgres", "minio", "mlflow", "ray-head", "ray-worker"}
ONE_SHOT = {"minio-buckets", "pipeline", "pipeline-gpu"}


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


# ---- the tracking server -----------------------------------------------------------------------------------------
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

    from components.dataset import load_dataset
    from components.sisa.model import SisaModel
    from components.training import images_to_tensor
    from pipelines.main import run_pipeline
    from tests.test_pipeline import tiny_pipeline

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


# ---- the Ray cluster ---------------------------------------------------------------------------------------------
def ray_health(address: str, env: dict[str, str]) -> bool:
    command = [str(BIN / "ray"), "health-check", "--address", address]
    return subprocess.run(command, env=env, capture_output=True, timeout=60).returncode == 0


ALIVE_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.monotonic() + float(sys.argv[3])
while sum(node["Alive"] for node in ray.nodes()) < int(sys.argv[2]):
    if time.monotonic() > deadline:
        sys.exit(f"only {sum(node['Alive'] for node in ray.nodes())} nodes alive")
    time.sleep(0.5)
"""


RAY_DRIVER = """
import sys
from pathlib import Path
import torch
sys.path.insert(0, ".")
from tests.test_executors import sisa_weights
torch.save(sisa_weights("ray", Path(sys.argv[2]), ray_address=sys.argv[1]), sys.argv[3])
"""


def wait_for_alive_nodes(address: str, count: int, env: dict[str, str], timeout: float, process, log: Path) -> None:
    """Block until ``count`` nodes of the cluster at ``address`` are alive (one driver connection)."""
    result = subprocess.run([sys.executable, "-c", ALIVE_NODES, address, str(count), str(timeout)], env=env,
                            capture_output=True, text=True, timeout=timeout + 60)
    assert result.returncode == 0 and process.poll() is None, f"{result.stderr[-2000:]}\n{log.read_text()[-2000:]}"


def test_ray_cluster_started_like_the_stack_trains_the_serial_weights(tmp_path):
    """ray-head + ray-worker as in the compose file (token auth from the env file), the pipeline's Ray client
    address; the shard weights equal the serial executor's bit for bit."""
    pytest.importorskip("ray")
    import torch

    from tests.test_executors import assert_same, sisa_weights

    env_values = read_env_file(ENV_EXAMPLE)
    gcs_port, client_port = free_port(), free_port()
    # Ray's socket paths must stay short: a temp dir of its own under /tmp, not tmp_path.
    temp_dir = Path(tempfile.mkdtemp(prefix="ffray", dir="/tmp"))
    env = {**os.environ, **service_environment("ray-head"), "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == env_values["RAY_AUTH_TOKEN"]
    assert service_environment("ray-worker") == service_environment("ray-head")
    # the stack's commands, moved to free loopback ports, with a small object store and no dashboard for the test
    test_only = ["--include-dashboard=false", "--object-store-memory=100000000", f"--temp-dir={temp_dir}"]
    head = service_command("ray-head")
    head = replace_option(replace_option(head, "--port", str(gcs_port)), "--ray-client-server-port", str(client_port))
    head = replace_option(replace_option(head, "--num-cpus", "1"), "--dashboard-host", "127.0.0.1")
    head = [str(BIN / "ray"), *head[1:], "--node-ip-address=127.0.0.1", *test_only]
    worker = replace_option(service_command("ray-worker"), "--address", f"127.0.0.1:{gcs_port}")
    worker = [str(BIN / "ray"), *replace_option(worker, "--num-cpus", "1")[1:], "--node-ip-address=127.0.0.1",
              "--object-store-memory=100000000"]
    serial = sisa_weights("serial", tmp_path / "serial")
    try:
        with background(head, tmp_path / "ray-head.log", env=env) as head_process:
            address = f"127.0.0.1:{gcs_port}"
            wait_until(lambda: ray_health(address, env), 120, "ray head health check", head_process,
                       tmp_path / "ray-head.log")
            # the head's health check, as compose runs it inside the container
            check = compose()["services"]["ray-head"]["healthcheck"]["test"][1:]
            assert subprocess.run(replace_option(check, "--address", address), env=env,
                                  capture_output=True, timeout=60).returncode == 0
            # a client without the token is refused
            outsider = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"} | {
                "RAY_AUTH_MODE": "disabled", "HOME": str(tmp_path / "no-home")}
            assert not ray_health(address, outsider)
            with background(worker, tmp_path / "ray-worker.log", env=env) as worker_process:
                wait_for_alive_nodes(address, 2, env, timeout=120, process=worker_process,
                                     log=tmp_path / "ray-worker.log")
                worker_check = [part.replace("ray-head:6379", address)
                                for part in compose()["services"]["ray-worker"]["healthcheck"]["test"][1:]]
                assert subprocess.run(worker_check, env=env, capture_output=True, timeout=60).returncode == 0
                # the driver is its own process, like the pipeline container, with the stack's environment
                # (Ray reads the token once per process)
                out = tmp_path / "ray-weights.pt"
                for _ in range(3):
                    driver = subprocess.run([sys.executable, "-c", RAY_DRIVER, f"ray://127.0.0.1:{client_port}",
                                             str(tmp_path / "ray"), str(out)], env=env, cwd=ROOT,
                                            capture_output=True, text=True, timeout=300)
                    # On a loaded machine Ray's per-client server sometimes misses its start-up deadline: retry.
                    if "Starting Ray client server failed" not in driver.stderr:
                        break
                assert driver.returncode == 0, driver.stderr[-3000:]
                weights = torch.load(out)
        assert_same(weights, serial)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


# ---- DVC against S3 ----------------------------------------------------------------------------------------------
def dvc(*args: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def s3_endpoint(tmp_path):
    """moto's S3 server on a free loopback port with an empty bucket ``dvc``: (endpoint, boto3 client, env)."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        credentials = {"AWS_ACCESS_KEY_ID": "fake-access-key", "AWS_SECRET_ACCESS_KEY": "fake-secret-key",
                       "AWS_DEFAULT_REGION": "us-east-1"}
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DVC_"))}, **credentials,
               "DVC_NO_ANALYTICS": "1", "HOME": str(tmp_path / "home"),
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"])
        s3.create_bucket(Bucket="dvc")
        yield endpoint, s3, env
    finally:
        server.stop()


def write_data_folder(data: Path) -> dict[str, bytes]:
    """A small data folder (binary, text, nested) -> {relative path: bytes}."""
    rng = np.random.default_rng(0)
    files = {"images.npy": rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes(),
             "manifest.csv": b"id,split,label\nx-1,train,0\nx-2,test,1\n",
             "nested/meta.json": b'{"classes": ["a", "b"]}\n'}
    for name, content in files.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(content)
    return files


def stored_md5s(s3, prefix: str) -> set[str]:
    """md5s of the objects under ``prefix`` (DVC 3 stores ``files/md5/ab/cdef...``, addressed by content)."""
    listed = s3.list_objects_v2(Bucket="dvc", Prefix=prefix)
    return {item["Key"].replace("/", "").removesuffix(".dir")[-32:] for item in listed.get("Contents", [])}


def test_dvc_push_and_pull_round_trip_through_an_s3_endpoint(s3_endpoint, tmp_path):
    endpoint, s3, env = s3_endpoint
    project = tmp_path / "project"
    data = project / "data"
    files = write_data_folder(data)
    dvc("init", "--no-scm", cwd=project, env=env)
    dvc("config", "core.analytics", "false", cwd=project, env=env)
    dvc("add", "data", cwd=project, env=env)
    # the same commands docs/scaling.md gives for MinIO
    dvc("remote", "add", "-d", "minio", "s3://dvc/fairforget", cwd=project, env=env)
    dvc("remote", "modify", "minio", "endpointurl", endpoint, cwd=project, env=env)
    dvc("push", cwd=project, env=env)
    assert stored_md5s(s3, "fairforget/") >= {hashlib.md5(content).hexdigest() for content in files.values()}

    shutil.rmtree(data)
    shutil.rmtree(project / ".dvc" / "cache")
    dvc("pull", cwd=project, env=env)
    for name, content in files.items():
        assert (data / name).read_bytes() == content, name


def test_the_image_entrypoint_pushes_the_data_to_the_stack_remote(s3_endpoint, tmp_path):
    """docker/entrypoint.sh in a git-less copy of the project (as in the image): it runs the command, then
    `dvc add` + `dvc push` to DVC_REMOTE_URL; a failing command pushes nothing; without a remote it only runs."""
    endpoint, s3, env = s3_endpoint
    app = tmp_path / "app"
    (app / ".dvc").mkdir(parents=True)
    shutil.copy(ROOT / ".dvc" / "config", app / ".dvc" / "config")
    entrypoint = shutil.copy(DOCKER / "entrypoint.sh", app / "entrypoint.sh")
    files = write_data_folder(app / "data")
    stack = {**env, "DVC_REMOTE_URL": "s3://dvc/stack", "DVC_ENDPOINT_URL": endpoint}

    def run(command: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(entrypoint), *command], cwd=app, env=environment, capture_output=True,
                              text=True, timeout=300)

    failed = run(["sh", "-c", "exit 3"], stack)
    assert failed.returncode == 3 and stored_md5s(s3, "stack/") == set(), failed.stderr
    passed = run(["sh", "-c", "echo pipeline ran > ran.txt"], stack)
    assert passed.returncode == 0, passed.stderr
    assert (app / "ran.txt").read_text() == "pipeline ran\n"
    assert "no_scm = true" in (app / ".dvc" / "config.local").read_text()
    assert stored_md5s(s3, "stack/") >= {hashlib.md5(content).hexdigest() for content in files.values()}
    assert yaml.safe_load((app / "data.dvc").read_text())["outs"][0]["md5"].endswith(".dir")
    plain = run(["sh", "-c", "exit 5"], env)
    assert plain.returncode == 5
