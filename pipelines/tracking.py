"""MLflow wiring shared by every pipeline step: experiment, run, lineage, resolved config.

Every step opens its run with ``step_run(...)``. Inside a parent run (the ``main`` entry point) it becomes a
nested child run; alone it is a top-level run. Either way the run carries the resolved config (params and a
``config.json`` artifact), the data version (tag ``data_md5`` and ``mlflow.log_input`` with that digest) and the
code version (tag ``git_commit``).
"""

from __future__ import annotations


import contextlib
import logging
import json
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import mlflow  # noqa: E402

from fairforget.components.progress import quiet_third_party_bars, running  # noqa: E402
from fairforget.components.versioning import dvc_md5_of_folder  # noqa: E402
from fairforget.errors import FairforgetError  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the project folder: mlflow.db, data/, outputs/
DEFAULT_TRACKING_URI = f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def configure_tracking() -> str:
    """Use ``MLFLOW_TRACKING_URI`` when set, else the project's ``mlflow.db``; the registry lives in the same store.

    (``mlflow.set_registry_uri`` exports ``MLFLOW_REGISTRY_URI``, so that variable cannot tell a user's choice from
    a previous call: the registry always follows the tracking URI here.)
    """
    quiet_third_party_bars()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str) -> None:
    """Make ``name`` the active experiment, creating it if needed. With a sqlite store its artifacts go next to
    the database file (``<db folder>/mlruns``) rather than into whatever folder the process was started from."""
    uri = mlflow.get_tracking_uri()
    if mlflow.get_experiment_by_name(name) is None and uri.startswith("sqlite:///"):
        db_path = Path(uri[len("sqlite:///"):])
        if not db_path.is_absolute():
            db_path = Path.cwd() / db_path
        mlflow.create_experiment(name, artifact_location=(db_path.parent / "mlruns").as_uri())
    mlflow.set_experiment(name)


def experiment_name(dataset: str) -> str:
    """One experiment per data set: ``fairforget-<dataset>`` (``MLFLOW_EXPERIMENT_NAME`` overrides)."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"fairforget-{dataset}"


def git_commit() -> str:
    """The checked-out commit (with ``-dirty`` when the tree has changes), or ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("MLFLOW_GIT_COMMIT", "unknown")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


@contextlib.contextmanager
def step_run(step: str, config: dict[str, Any], dataset: str, data_dir: str | os.PathLike | None = None,
             run_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Open the MLflow run of one pipeline step and record config, data version and code version.

    ``config`` is the resolved configuration (nested dicts allowed), logged as params and as ``config.json``.
    Nested under the active run when there is one, or under ``MLFLOW_PARENT_RUN_ID`` when set.
    """
    configure_tracking()
    parent = mlflow.active_run()
    launched_run_id = os.environ.get("MLFLOW_RUN_ID")
    if parent is None and launched_run_id:
        # Inside `mlflow run`: the launcher created this run (in the experiment given by --experiment-name);
        # resume it rather than opening another experiment.
        launched = mlflow.MlflowClient().get_run(launched_run_id)
        mlflow.set_experiment(experiment_id=launched.info.experiment_id)
    elif parent is None:
        ensure_experiment(experiment_name(dataset))
    parent_id = parent.info.run_id if parent else os.environ.get("MLFLOW_PARENT_RUN_ID")
    kwargs: dict[str, Any] = {"run_name": run_name or step}
    if parent is not None:
        kwargs["nested"] = True
    elif parent_id and not launched_run_id:
        kwargs["parent_run_id"] = parent_id
    with mlflow.start_run(**kwargs) as run, running(step):  # heartbeat lines name the step while it runs
        flat: dict[str, Any] = {}
        _flatten("", config, flat)
        # `mlflow run` has already logged the entry point's own parameters under their names; MLflow refuses to
        # change a param, so those keep the launcher's value (the resolved value is in config.json either way).
        launched = run.data.params if launched_run_id and parent is None else {}
        mlflow.log_params({k: str(v)[:6000] for k, v in flat.items() if k not in launched})
        mlflow.log_dict(config, "config.json")
        mlflow.set_tags({"step": step, "git_commit": git_commit(), "dataset": dataset})
        if data_dir is not None and Path(data_dir).exists():
            log_data_version(data_dir)
        yield run


def log_data_version(data_dir: str | os.PathLike, context: str = "training") -> str:
    """Tag the active run with the data folder's DVC md5 and record it as an MLflow dataset input."""
    import pandas as pd

    md5 = dvc_md5_of_folder(data_dir)
    mlflow.set_tag("data_md5", md5)
    manifest_path = Path(data_dir) / "manifest.csv"
    if manifest_path.is_file():
        manifest = pd.read_csv(manifest_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # source-type guessing and integer-column hints
            dataset = mlflow.data.from_pandas(manifest, source=str(Path(data_dir).resolve()), name="manifest",
                                              digest=md5[:36])
            mlflow.log_input(dataset, context=context)
    return md5


def log_json(obj: Any, artifact_file: str) -> None:
    """Log a JSON-serialisable object as an artifact (numpy scalars converted)."""
    mlflow.log_text(json.dumps(obj, indent=2, sort_keys=True, default=float), artifact_file)


def log_figure(figure, artifact_file: str) -> None:
    """Log a matplotlib figure and close it (figures are otherwise kept alive by pyplot)."""
    import matplotlib.pyplot as plt

    mlflow.log_figure(figure, artifact_file)
    plt.close(figure)


def project_path(path: str | Path) -> Path:
    """``path`` as given when absolute, else relative to the project folder (not the working directory)."""
    return Path(path) if Path(path).is_absolute() else PROJECT_ROOT / path


def configure_logging() -> None:
    """INFO lines with the time of day (a log read later shows where the time went, and progress heartbeats are
    visible off a terminal: ``components.progress``); third-party chatter at WARNING."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("great_expectations", "alembic", "urllib3", "mlflow", "onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def start_process() -> None:
    """What every entry point does first: ``configure_logging()``, and glibc's allocator kept from handing freed
    memory back at every training step, in this process and the workers it starts
    (``components.allocator.keep_freed_memory``)."""
    from fairforget.components.allocator import keep_freed_memory

    configure_logging()
    keep_freed_memory()


def run_cli(action) -> int:
    """Run a step's ``action()`` for its command line: a user error (any ``FairforgetError``, or a ``ValueError``
    from argument parsing) becomes one ``error: ...`` line on stderr and exit code 2; an action returning an int
    returns it; otherwise 0."""
    import sys

    try:
        result = action()
    except (FairforgetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
