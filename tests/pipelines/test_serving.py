"""Serving the champion: `mlflow models serve -m models:/<name>@champion` on loopback answers the documented request
(docs/pipeline.md#serving) with the registered pyfunc's probabilities, in a process that refuses pickled models;
the serve step (`python -m fairforget.pipelines.serve`) answers 503 before any promotion, then the champion's
probabilities with its version, and follows champion to the new version a served deletion request registers."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import mlflow
import numpy as np
import pytest

from fairforget.components.dataset import load_dataset
from fairforget.pipelines.forget import serve_deletion_request
from fairforget.pipelines.main import run_pipeline
from tests.pipelines.test_deletion import MODEL, live_ids, promote
from tests.pipelines.test_pipeline import tiny_pipeline

pytestmark = pytest.mark.integration  # whole pipeline runs, kill tests or real servers: `make test-all`

CHAMPION_URI = f"models:/{MODEL}@champion"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served(model_uri: str, tracking_uri: str):
    """``mlflow models serve`` for ``model_uri`` on a free loopback port; yields its base URL."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager",
                               "local", "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, server.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the model server did not answer /ping within 180 s"
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def documented_request(url: str, images_uint8: np.ndarray) -> np.ndarray:
    """The request of docs/pipeline.md#serving: float32 (N, C, H, W) in [0, 1] as JSON ``inputs``."""
    inputs = (images_uint8.transpose(0, 3, 1, 2) / 255.0).astype("float32")
    request = urllib.request.Request(f"{url}/invocations", json.dumps({"inputs": inputs.tolist()}).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return np.asarray(json.load(answer)["predictions"], dtype=np.float32)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.5)


def follower_answer(url: str, images_uint8: np.ndarray) -> tuple[int, dict]:
    inputs = (images_uint8.transpose(0, 3, 1, 2) / 255.0).astype("float32")
    request = urllib.request.Request(f"{url}/invocations", json.dumps({"inputs": inputs.tolist()}).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return 0, {}


def test_the_champion_is_served_and_the_serve_step_follows_it_through_a_promotion_and_a_deletion(tracking_uri,
                                                                                               tmp_path):
    summary = run_pipeline(tiny_pipeline(tmp_path))
    assert summary["registered_version"] == "1"
    images = load_dataset(tmp_path / "data").split("test").images[:6]
    inputs = (images.transpose(0, 3, 1, 2) / 255.0).astype("float32")
    version_1 = mlflow.pyfunc.load_model(f"models:/{MODEL}/1").predict(inputs)

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    follower = subprocess.Popen([sys.executable, "-m", "fairforget.pipelines.serve", "--model-name", MODEL,
                                 "--port", str(port), "--poll-seconds", "1"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        # nothing promoted yet: a clear "no approved model"
        status, body = wait_for(lambda: (lambda a: a if a[0] else None)(follower_answer(url, images)), 60,
                                "the serve step did not answer")
        assert status == 503 and "no approved model" in body["error"]

        assert promote(tmp_path, 1) == 0
        status, body = wait_for(lambda: (lambda a: a if a[0] == 200 else None)(follower_answer(url, images)), 180,
                                "the serve step did not follow the promotion")
        assert body["version"] == "1"
        np.testing.assert_allclose(np.asarray(body["predictions"], dtype=np.float32), version_1, atol=1e-6)
        # MLflow's own server on @champion answers the documented request the same
        with served(CHAMPION_URI, tracking_uri) as plain:
            np.testing.assert_allclose(documented_request(plain, images), version_1, atol=1e-6)

        # a served deletion moves champion to version 2: the serve step answers with it, without a restart
        live = sorted(i for i in live_ids(1) if i.startswith("toy-train"))
        assert serve_deletion_request(live[:3], MODEL)["served"] == "champion -> version 2"
        version_2 = mlflow.pyfunc.load_model(f"models:/{MODEL}/2").predict(inputs)
        moved = time.monotonic()
        status, body = wait_for(lambda: (lambda a: a if a[1].get("version") == "2" else None)(
            follower_answer(url, images)), 180, "the serve step did not follow the deletion request")
        print(f"the serve step followed champion to version 2 in {time.monotonic() - moved:.1f} s")
        assert status == 200
        np.testing.assert_allclose(np.asarray(body["predictions"], dtype=np.float32), version_2, atol=1e-6)
    finally:
        follower.terminate()
        follower.wait(timeout=60)
