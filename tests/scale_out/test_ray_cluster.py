"""A Ray head and a worker started with the ``ray-head`` / ``ray-worker`` commands and token train SISA shards
bit-identical to the serial executor (tests/components/test_executors.py covers a local ``ray.init``)."""


import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.scale_out.helpers import (
    BIN,
    ENV_EXAMPLE,
    ROOT,
    background,
    compose,
    free_port,
    read_env_file,
    replace_option,
    service_command,
    service_environment,
    wait_until,
)

pytestmark = pytest.mark.integration  # whole pipeline runs, kill tests or real servers: `make test-all`


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
from tests.components.test_executors import sisa_weights
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

    from tests.components.test_executors import assert_same, sisa_weights

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
