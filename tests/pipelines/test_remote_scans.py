"""A deletion report searches stores that are not local folders through their own clients: the artifact store
through MLflow's artifact repository, the DVC remote through DVC's listing (the code path of S3 and MinIO, run here
on a file:// store and a local remote, which the same clients serve)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from fairforget.components.copies import image_digests
from fairforget.pipelines.deletion_report import scan_artifact_store, scan_dvc_remote

SHAPE = (4, 4, 1)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(6, *SHAPE), dtype=np.uint8)


def test_the_artifact_store_is_listed_fetched_and_searched_by_content(tmp_path, images):
    store = tmp_path / "artifacts"
    (store / "run" / "augmented" / "synthetic").mkdir(parents=True)
    np.save(store / "run" / "augmented" / "synthetic" / "images.npy", images[:4])
    np.save(store / "run" / "renamed_blob", images[3:])  # an array under any name is still searched
    (store / "run" / "notes.txt").write_text("not an array")
    deleted = image_digests(images[3:5])

    scan = scan_artifact_store(store.as_uri(), deleted, SHAPE)

    assert scan["files_fetched"] == 3 and scan["arrays_compared"] == 2
    assert scan["files_with_copies"] == {"run/augmented/synthetic/images.npy": 1, "run/renamed_blob.npy": 2}
    assert scan["copies"] == 3
    assert scan_artifact_store(store.as_uri(), image_digests(images[5:] + 1), SHAPE)["copies"] == 0


def test_the_dvc_remote_is_listed_and_what_the_cache_lacks_is_fetched_and_searched(tmp_path, images):
    dvc = [sys.executable, "-m", "dvc"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "images.npy", images)
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True, env=env)
    subprocess.run([*dvc, "remote", "add", "-d", "store", str(tmp_path / "remote")], cwd=tmp_path, check=True,
                   env=env)
    subprocess.run([*dvc, "add", "-q", "data"], cwd=tmp_path, check=True, env=env)
    subprocess.run([*dvc, "push", "-q"], cwd=tmp_path, check=True, env=env)
    deleted = image_digests(images[:2])

    in_cache = scan_dvc_remote(tmp_path, "store", deleted, SHAPE)
    assert (in_cache["objects_listed"], in_cache["objects_in_cache"], in_cache["objects_fetched"]) == (2, 2, 0)

    cached_array = next(p for p in (tmp_path / ".dvc" / "cache").rglob("*") if p.is_file()
                        and p.read_bytes().startswith(b"\x93NUMPY"))
    os.chmod(cached_array, 0o644)
    cached_array.unlink()  # only the remote holds the images now: they must be fetched to be searched
    fetched = scan_dvc_remote(tmp_path, "store", deleted, SHAPE)
    assert (fetched["objects_listed"], fetched["objects_in_cache"], fetched["objects_fetched"]) == (2, 1, 1)
    assert fetched["copies"] == 2 and fetched["arrays_compared"] == 1
