"""What the scale-out tests share: the compose file and env file read as the stack reads them, process helpers
that start a service on loopback and stop it with its process group, and the stack's MLflow server (basic-auth) run
as a local process."""


import base64
import configparser
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
SCALING_DOC = ROOT / "docs" / "scaling.md"
BIN = Path(sys.executable).parent
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|ROOT_USER")
# what docker/check_secrets.py treats as a secret (the values that must never keep their example)
CHECKED_SECRET = re.compile(r"PASSWORD|SECRET|TOKEN")
# where docker/Dockerfile.mlflow copies the files of docker/ that its containers run
IMAGE_FILES = "/opt/fairforget/"
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


def service_environment(service: str, env: dict[str, str] | None = None) -> dict[str, str]:
    env = read_env_file(ENV_EXAMPLE) if env is None else env
    return {key: interpolate(str(value), env)
            for key, value in (compose()["services"][service].get("environment") or {}).items()}


def operator_env() -> dict[str, str]:
    """docker/.env as an operator writes it: the example file with every secret replaced by a fresh random one."""
    env = read_env_file(ENV_EXAMPLE)
    return {key: secrets.token_urlsafe(18) if CHECKED_SECRET.search(key) else value for key, value in env.items()}


def container_command(service: str, env: dict[str, str]) -> list[str]:
    """What the container of ``service`` executes (entrypoint + command), mapped onto this checkout: the image's
    ``/opt/fairforget/X`` is ``docker/X``, ``python`` this interpreter, ``mlflow`` this environment's CLI."""
    spec = compose()["services"][service]
    parts = [interpolate(str(part), env) for part in [*spec.get("entrypoint", []), *spec["command"]]]
    programs = {"python": sys.executable, "mlflow": str(BIN / "mlflow")}
    for i in [0, parts.index("--") + 1] if "--" in parts else [0]:
        parts[i] = programs.get(parts[i], parts[i])
    return [str(DOCKER / part.removeprefix(IMAGE_FILES)) if part.startswith(IMAGE_FILES) else part for part in parts]


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


def http_status(url: str, host: str | None = None, auth: tuple[str, str] | None = None) -> int:
    return http_call("GET", url, host=host, auth=auth)[0]


def http_call(method: str, url: str, body: dict | None = None, host: str | None = None,
              auth: tuple[str, str] | None = None) -> tuple[int, str]:
    """(status, body text) of one request; ``auth`` = (user, password) for HTTP basic authentication."""
    headers = {"Host": host} if host else {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except OSError:
        return 0, ""


# ---- the stack's MLflow server, as a local process --------------------------------------------------------------
def auth_config(tmp_path: Path) -> Path:
    """docker/basic_auth.ini with its users database moved from the mlflow-auth volume into ``tmp_path``."""
    config = configparser.ConfigParser()
    config.read(DOCKER / "basic_auth.ini")
    config["mlflow"]["database_uri"] = f"sqlite:///{tmp_path / 'basic_auth.db'}"
    path = tmp_path / "basic_auth.ini"
    with open(path, "w") as handle:
        config.write(handle)
    return path


@contextlib.contextmanager
def stack_mlflow_server(tmp_path: Path, env_values: dict[str, str], backend_store_uri: str | None = None):
    """The ``mlflow`` service as its container runs it (secrets check, then ``mlflow server --app-name basic-auth``
    with the compose environment of ``env_values``), with the backend store ``backend_store_uri`` (default: sqlite
    in ``tmp_path``) for PostgreSQL, a folder for MinIO, the users database in ``tmp_path``, one worker, on a free
    loopback port. Yields the server's URL once ``/health`` answers."""
    port = free_port()
    command = container_command("mlflow", env_values)
    command = replace_option(command, "--artifacts-destination", str(tmp_path / "server-artifacts"))
    command = replace_option(command, "--host", "127.0.0.1")
    command = replace_option(command, "--port", str(port))
    command = replace_option(command, "--workers", "1")
    env = {**{k: v for k, v in os.environ.items() if not CHECKED_SECRET.search(k) and not k.startswith("MLFLOW_")},
           **service_environment("mlflow", env_values), "MLFLOW_DISABLE_TELEMETRY": "true",
           "MLFLOW_BACKEND_STORE_URI": backend_store_uri or f"sqlite:///{tmp_path / 'server.db'}",
           "MLFLOW_AUTH_CONFIG_PATH": str(auth_config(tmp_path))}
    log = tmp_path / "mlflow-server.log"
    url = f"http://127.0.0.1:{port}"
    with background(command, log, env=env, cwd=tmp_path) as server:
        wait_until(lambda: http_status(f"{url}/health") == 200, 180, "mlflow server /health", server, log)
        yield url


def pipeline_resources() -> tuple[str, str]:
    """The experiment and registered model the ``mlflow-users`` one-shot prepares for the pipeline."""
    command = compose()["services"]["mlflow-users"]["command"]
    return command[command.index("--experiment") + 1], command[command.index("--model") + 1]


def run_mlflow_users(url: str, env_values: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    """The one-shot ``mlflow-users`` as its container runs it, against the server at ``url`` (``arguments``, when
    given, replace its ``--experiment``/``--model`` options)."""
    command = container_command("mlflow-users", env_values)
    if arguments:
        command = command[:command.index("--") + 3] + list(arguments)
    env = {**{k: v for k, v in os.environ.items() if not CHECKED_SECRET.search(k) and not k.startswith("MLFLOW_")},
           **service_environment("mlflow-users", env_values), "MLFLOW_TRACKING_URI": url,
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)


# ---- the files ----------------------------------------------------------------------------------------------------
LONG_RUNNING = {"postgres", "minio", "mlflow", "ray-head", "ray-worker", "serve"}
ONE_SHOT = {"secrets-check", "minio-buckets", "mlflow-users", "pipeline", "pipeline-gpu"}


