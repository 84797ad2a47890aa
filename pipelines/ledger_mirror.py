"""The deletion ledger's mirror in the tracking store, so that losing or rolling back ``forgotten.csv`` cannot bring
deleted records back.

The ledger (``components/ledger.py``) lives beside the data folder and is DVC-tracked; a missing file reads as "no
record deleted", and ``dvc checkout`` of an older ``forgotten.csv.dvc`` reads as fewer. So every served request also
writes the whole ledger to the tracking store, where the models live: one run of the experiment
``LEDGER_EXPERIMENT`` per update (never deleted), tagged with the data source it belongs to (``ledger_source``: the
data set and its source folder's name, so that every data folder drawn from the same source, in any clone, shares
it), the number of rows and their digest, the ledger itself its artifact ``forgotten.csv``.

``checked_ledger_ids`` is how ``prepare``, ``main`` and ``forget`` read the ledger: it refuses (``DataError``, one
line) when the local ledger lacks a record the mirror holds, and says how to restore it
(``dvc pull forgotten.csv.dvc``, or ``python -m fairforget.pipelines.forget restore-ledger``, which writes the
mirror's rows back). A local ledger ahead of the mirror (a request that crashed between the two writes) is mirrored
then and there.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from fairforget.components.ledger import LEDGER_FILE, ledger_path, merge_ledgers, read_ledger, write_ledger
from fairforget.errors import DataError

log = logging.getLogger(__name__)

LEDGER_EXPERIMENT = "fairforget-deletion-ledger"
SOURCE_TAG, SOURCE_KEY_TAG, ROWS_TAG, DIGEST_TAG = "ledger_source", "ledger_source_key", "ledger_rows", "ledger_sha256"


def ledger_source(data_config: dict) -> str:
    """The source a data set's records come from, from its stored preparation config: the data set's name and its
    source folder's name (``fashion_mnist:``, ``folder:photos``). Ids name source records, so every data folder
    drawn from that source shares one ledger."""
    folder = str(data_config.get("source_dir") or "").rstrip("/").split("/")[-1]
    return f"{data_config.get('dataset', '')}:{folder}"


def _source_key(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _digest(ids) -> str:
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode()).hexdigest()


def mirrored_ledger(source: str) -> tuple[pd.DataFrame, str] | None:
    """The newest mirror of ``source``'s ledger and the run id that holds it; None when nothing was mirrored."""
    experiment = mlflow.get_experiment_by_name(LEDGER_EXPERIMENT)
    if experiment is None:
        return None
    runs = mlflow.MlflowClient().search_runs([experiment.experiment_id],
                                             filter_string=f"tags.{SOURCE_KEY_TAG} = '{_source_key(source)}'",
                                             order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    run = runs[0]
    with tempfile.TemporaryDirectory(prefix="fairforget-ledger-") as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=LEDGER_FILE, dst_path=tmp)
        table = read_ledger(path)
    if _digest(table["id"]) != run.data.tags.get(DIGEST_TAG) or str(len(table)) != run.data.tags.get(ROWS_TAG):
        raise DataError(f"the ledger mirror in run {run.info.run_id} does not match its own digest: the tracking "
                        "store was altered; restore it from a backup before serving or training")
    return table, run.info.run_id


def mirror_ledger(data_dir: str | Path, source: str, reason: str) -> str:
    """Write the local ledger of ``data_dir`` to the tracking store as the newest mirror of ``source``; returns the
    run id. ``reason`` (e.g. the request id) is kept as a tag."""
    path = ledger_path(data_dir)
    table = read_ledger(path)
    client = mlflow.MlflowClient()
    experiment = mlflow.get_experiment_by_name(LEDGER_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else _create_experiment()
    run = client.create_run(experiment_id, tags={SOURCE_TAG: source, SOURCE_KEY_TAG: _source_key(source),
                                                 ROWS_TAG: str(len(table)), DIGEST_TAG: _digest(table["id"]),
                                                 "reason": reason, "mlflow.runName": f"ledger {source}"})
    with tempfile.TemporaryDirectory(prefix="fairforget-ledger-") as tmp:
        copy = Path(tmp) / LEDGER_FILE
        table.to_csv(copy, index=False, lineterminator="\n")
        client.log_artifact(run.info.run_id, str(copy))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _create_experiment() -> str:
    from fairforget.pipelines.tracking import ensure_experiment

    active = mlflow.get_experiment_by_name(LEDGER_EXPERIMENT)
    if active is None:
        ensure_experiment(LEDGER_EXPERIMENT)
        active = mlflow.get_experiment_by_name(LEDGER_EXPERIMENT)
    return active.experiment_id


def restore_hint(data_dir: str | Path) -> str:
    name = ledger_path(data_dir).name
    return (f"restore it with `dvc pull {name}.dvc` (or `dvc checkout {name}.dvc` of the newest commit), or write "
            f"the mirror's rows back with `python -m fairforget.pipelines.forget restore-ledger --data-dir {data_dir}`")


def checked_ledger_ids(data_dir: str | Path, source: str) -> set[str]:
    """The ids in ``data_dir``'s ledger, after checking it against the mirror of ``source``: raises ``DataError``
    (one line, with how to restore it) when the local ledger is missing or lacks records the mirror holds; mirrors
    a local ledger that is ahead."""
    path = ledger_path(data_dir)
    local = read_ledger(path)
    mirrored = mirrored_ledger(source)
    mirror_ids = set() if mirrored is None else set(mirrored[0]["id"])
    missing = mirror_ids - set(local["id"])
    if missing:
        state = "is missing" if not path.is_file() else f"lacks {len(missing)} of them"
        raise DataError(f"the deletion ledger {path} {state}: the tracking store's mirror (run {mirrored[1]}) lists "
                        f"{len(mirror_ids)} records deleted on request, and running now would bring them back; "
                        + restore_hint(data_dir))
    if set(local["id"]) - mirror_ids:
        run_id = mirror_ledger(data_dir, source, "caught up with the local ledger")
        log.info("ledger: the mirror caught up with %s (%d records, run %s)", path.name, len(local), run_id)
    return set(local["id"])


def restore_ledger(data_dir: str | Path, source: str) -> int:
    """Write the mirror's rows of ``source`` into ``data_dir``'s ledger (merged with any local rows, atomically);
    returns the number of rows restored. Raises ``DataError`` when nothing was ever mirrored for ``source``."""
    mirrored = mirrored_ledger(source)
    if mirrored is None:
        raise DataError(f"the tracking store holds no ledger mirror for {source!r}: nothing was ever deleted from "
                        "that source through this store, or the tracking URI points elsewhere (MLFLOW_TRACKING_URI)")
    path = ledger_path(data_dir)
    before = set(read_ledger(path)["id"])
    write_ledger(path, merge_ledgers(read_ledger(path), mirrored[0]))
    return len(set(mirrored[0]["id"]) - before)
