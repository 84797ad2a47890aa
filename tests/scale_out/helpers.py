"""What the scale-out tests share: the compose file and env file read as the stack reads them, and process
helpers that start a service on loopback and stop it with its process group."""


import contextlib
import os
import re
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


