"""DVC pushes to and pulls from an S3 endpoint (moto's server) the way it uses MinIO, and the bytes round-trip;
the image's entrypoint pushes the data to the stack's remote."""


import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.scale_out.helpers import BIN, DOCKER, ROOT, free_port

pytestmark = pytest.mark.integration  # whole pipeline runs, kill tests or real servers: `make test-all`


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
    for name in ("check_secrets.py", ".env.example"):  # beside the entrypoint, as in the image's /app/docker/
        shutil.copy(DOCKER / name, app / name)
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
