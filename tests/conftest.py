"""Shared fixtures. Tests never touch the project's mlflow.db or data/: each gets its own tracking DB and folders."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# the gate's signing key (components/approval.py) of this test session, not the user's
GATE_KEY_DIR = tempfile.mkdtemp(prefix="fairforget-test-key-")
atexit.register(shutil.rmtree, GATE_KEY_DIR, ignore_errors=True)
os.environ["FAIRFORGET_GATE_KEY_FILE"] = os.path.join(GATE_KEY_DIR, "gate.key")

from fairforget.components.allocator import keep_freed_memory  # noqa: E402 - after the environment above

keep_freed_memory()  # as every entry point does (pipelines.tracking.start_process): the suite trains networks too


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` (real data, long runs) run only with FAIRFORGET_SLOW=1 (``make test-slow``)."""
    if os.environ.get("FAIRFORGET_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow real-data test: run with FAIRFORGET_SLOW=1 (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def empty_tracking_db(tmp_path_factory) -> Path:
    """An sqlite tracking DB with MLflow's schema and nothing else, made once per session: creating the tables
    and running MLflow's migrations takes seconds, a file copy milliseconds."""
    import mlflow

    path = tmp_path_factory.mktemp("tracking-template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch, empty_tracking_db):
    """A fresh sqlite tracking + registry DB for one test (a copy of the session's empty one)."""
    import shutil

    shutil.copyfile(empty_tracking_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fairforget-test")
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    from fairforget.pipelines.tracking import ensure_experiment

    ensure_experiment("fairforget-test")  # also forgets the experiment id cached from another test's database
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def real_dataset():
    """The prepared default data (``data/``, or FAIRFORGET_DATA_DIR) for the slow real-data tests; skips without it."""
    from fairforget.components.dataset import load_dataset

    data_dir = Path(os.environ.get("FAIRFORGET_DATA_DIR", ROOT / "data"))
    if not (data_dir / "manifest.csv").is_file():
        pytest.skip(f"no prepared data in {data_dir}: run the prepare step first")
    return load_dataset(data_dir)


@pytest.fixture
def toy_dataset():
    from fairforget.components.dataset import make_toy_dataset

    return make_toy_dataset()


def write_idx(path: Path, array) -> None:
    """Write a uint8 array as a gzipped IDX file (the Fashion-MNIST format)."""
    import gzip
    import struct

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.GzipFile(path, "wb", mtime=0) as handle:
        handle.write(header + array.tobytes())


@pytest.fixture
def fake_fashion_mnist(tmp_path):
    """A folder shaped like Debian's dataset-fashion-mnist: 60 train and 12 test images per class, 28x28."""
    import numpy as np

    rng = np.random.default_rng(1)
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for prefix, per_class in (("train", 60), ("t10k", 12)):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture
def small_data_config(fake_fashion_mnist):
    """A DataConfig the fake source can satisfy (80/20 bias kept)."""
    from fairforget.components.data import DataConfig

    return DataConfig(source_dir=str(fake_fashion_mnist), train_size=100, test_size=50, audit_size=100,
                      reference_size=100)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread for the whole suite: two spin-waiting OpenMP threads collapse on a CPU shared with other
    jobs, and the SISA exactness checks pin one thread per shard anyway."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
