"""The purge and the deletion report of a served request: every store searched for the deleted images' pixels.

After a served request has rewritten the data, moved ``champion`` and retired the versions that held the ids,
``purge_copies`` removes what is left: run state folders under ``outputs/`` that still hold a deleted image (a run
that registered nothing, an interrupted one: they trained on the records and must not be resumed), staging folders
a killed writer left beside the data folder (``.data.tmp-*``, ``.data.old-*``), and, when the data folder is the
project's DVC-tracked one, DVC's cache and the default remote (``dvc gc --workspace --force``,
``--cloud`` when a remote is configured), which keep every earlier data version by design.

``deletion_report`` then searches, by SHA-256 of each deleted image (``components.copies``), every store this
project writes image arrays to: the data folder, the state folders, the tracking store's artifact stores, DVC's
cache and the DVC remote; and it lists every registered version that still holds an id unless it is a retired
tombstone, and every alias that points at one. Local folders are searched in place; a store elsewhere (an S3 or
MinIO artifact store or DVC remote) through its own client: every artifact listed through MLflow's artifact
repository and fetched one at a time (``scan_artifact_store``), every object of the DVC remote listed through DVC
and, unless the DVC cache holds the same object (content-addressed: the same md5 is the same bytes, searched there),
fetched and searched (``scan_dvc_remote``). Its verdict is ``clean`` when every store was searched and holds
nothing, ``copies_found`` when one holds something, and ``unverified`` when a store could not be searched (its
client failed: no credentials, no network); only ``clean`` marks the request complete.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow

from fairforget.components.copies import StoreScan, find_copies

log = logging.getLogger(__name__)

CLEAN, COPIES_FOUND, UNVERIFIED = "clean", "copies_found", "unverified"


def dvc_root_of(data_dir: Path) -> Path | None:
    """The DVC project that tracks ``data_dir`` (a ``<name>.dvc`` file beside it and ``.dvc/`` in its folder)."""
    data_dir = Path(data_dir).resolve()
    root = data_dir.parent
    return root if (root / ".dvc").is_dir() and data_dir.with_name(data_dir.name + ".dvc").is_file() else None


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)


def dvc_default_remote(root: Path) -> tuple[str, str] | None:
    """(name, url) of the DVC project's default remote, or None."""
    name = _dvc(root, "remote", "default").stdout.strip()
    if not name:
        return None
    url = _dvc(root, "config", f"remote.{name}.url").stdout.strip()
    return name, url


def _local_path(url: str, root: Path) -> Path | None:
    """A local folder for a DVC remote or artifact URL (plain path or ``file://``), else None."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = Path(url2pathname(parsed.path)) if parsed.scheme == "file" else Path(url)
        return path if path.is_absolute() else (root / path).resolve()
    return None


def staging_folders(data_dir: Path) -> list[Path]:
    """Temporary siblings a killed writer of ``data_dir`` left (``.data.tmp-*``, ``.data.old-*``), beside the folder
    a symbolic link ``data_dir`` points to."""
    data_dir = Path(data_dir).resolve()
    return sorted(p for pattern in (f".{data_dir.name}.tmp-*", f".{data_dir.name}.old-*")
                  for p in data_dir.parent.glob(pattern) if p.is_dir())


def purge_copies(digests: set[str], image_shape: tuple[int, int, int], *, data_dir: Path, outputs_dir: Path,
                 keep: Path) -> dict:
    """Remove what still holds a deleted image after the commit (see the module docstring); ``keep`` is the new
    version's state folder, never removed. Returns {"state_folders_removed": [...], "dvc_gc": ...}."""
    removed = []
    scan = find_copies(outputs_dir, digests, image_shape)
    for name in sorted(scan.copies):
        parts = Path(name).parts
        folder = outputs_dir.joinpath(*parts[:2]) if len(parts) > 2 else None  # <config hash>/<run id>/...
        if folder is None or folder.resolve() == Path(keep).resolve() or not folder.is_dir():
            continue
        shutil.rmtree(folder)
        removed.append(str(folder))
    for orphan in staging_folders(data_dir):  # a writer killed mid-rename; the request holds the data lock
        shutil.rmtree(orphan, ignore_errors=True)
        removed.append(str(orphan))
    gc = "not a DVC-tracked data folder"
    root = dvc_root_of(data_dir)
    if root is not None:
        remote = dvc_default_remote(root)
        args = ["gc", "--workspace", "--force", "--quiet"] + (["--cloud", "--remote", remote[0]] if remote else [])
        done = _dvc(root, *args)
        gc = f"dvc {' '.join(args)}: " + ("ok" if done.returncode == 0 else
                                          f"failed: {' '.join((done.stderr or done.stdout).split())}")
    return {"state_folders_removed": removed, "dvc_gc": gc}


def scan_artifact_store(uri: str, digests: set[str], image_shape: tuple[int, int, int]) -> dict:
    """``find_copies`` over an artifact store of any kind (``s3://...``, ``file://...``, ...): every artifact under
    ``uri`` listed through MLflow's artifact repository, fetched one at a time into a temporary folder and searched
    (a deletion is rare; the store is read whole). Returns ``StoreScan.as_dict()`` with ``files_fetched``."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repository = get_artifact_repository(uri)
    scan, fetched, folders = StoreScan(uri), 0, [None]
    with tempfile.TemporaryDirectory() as tmp:
        while folders:
            for item in repository.list_artifacts(folders.pop()):
                if item.is_dir:
                    folders.append(item.path)
                    continue
                local = Path(repository.download_artifacts(item.path, dst_path=tmp))
                fetched += 1
                _merge(scan, find_copies(local, digests, image_shape), item.path)
                local.unlink()
    return {**scan.as_dict(), "files_fetched": fetched}


def scan_dvc_remote(root: Path, remote: str, digests: set[str], image_shape: tuple[int, int, int]) -> dict:
    """``find_copies`` over the DVC remote ``remote`` of the project at ``root``, of any kind: its objects listed
    through DVC; an object the DVC cache also holds is the same bytes (both are named by their md5) and was searched
    there, every other one is fetched into a temporary folder and searched. Returns ``StoreScan.as_dict()`` with
    ``objects_listed``, ``objects_in_cache`` and ``objects_fetched``."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo, tempfile.TemporaryDirectory() as tmp:
        odb, cache = repo.cloud.get_remote_odb(remote), repo.cache.local
        scan, listed, in_cache, fetched = StoreScan(f"{remote} ({odb.path})"), 0, 0, 0
        for oid in odb.all():
            listed += 1
            if cache.exists(oid):
                in_cache += 1
                continue
            local = Path(tmp) / oid.replace("/", "_")
            odb.fs.get_file(odb.oid_to_path(oid), str(local))
            fetched += 1
            _merge(scan, find_copies(local, digests, image_shape), oid)
            local.unlink()
    return {**scan.as_dict(), "objects_listed": listed, "objects_in_cache": in_cache, "objects_fetched": fetched}


def _merge(scan: StoreScan, part: StoreScan, name: str) -> None:
    """Add the scan of one fetched file, under its name in the store, to ``scan``."""
    scan.arrays += part.arrays
    if part.total:
        scan.copies[name] = part.total
    scan.skipped.update({name: why for why in part.skipped.values()})


def _artifact_roots() -> tuple[list[Path], list[str]]:
    """The tracking store's experiments' artifact folders: (local folders, URLs that are not local)."""
    local, remote = set(), set()
    for experiment in mlflow.MlflowClient().search_experiments(view_type=3):  # active and deleted
        path = _local_path(experiment.artifact_location, Path.cwd())
        if path is None:
            remote.add(experiment.artifact_location)
        else:
            local.add(path)
    # experiments under one folder are searched once, through the folder itself
    roots = sorted(p for p in local if not any(q != p and q in p.parents for q in local))
    return roots, sorted(remote)


def deletion_report(ids: list[str], digests: set[str], image_shape: tuple[int, int, int], *, data_dir: Path,
                    outputs_dir: Path, model_name: str, holding_versions: list[str], purge: dict,
                    request_id: str) -> dict:
    """The report of a served request (see the module docstring): per store, how it was searched and the copies
    found; the registry's holders and aliases; the verdict."""
    client = mlflow.MlflowClient()
    stores, unscanned = {}, []
    stores["data folder"] = find_copies(data_dir, digests, image_shape).as_dict()
    for i, orphan in enumerate(staging_folders(data_dir)):
        stores[f"staging folder {i + 1} beside the data"] = find_copies(orphan, digests, image_shape).as_dict()
    stores["run state folders"] = find_copies(outputs_dir, digests, image_shape).as_dict()
    roots, remote_artifacts = _artifact_roots()
    for i, root in enumerate(roots):
        stores[f"artifact store {i + 1}"] = find_copies(root, digests, image_shape).as_dict()
    for url in remote_artifacts:
        try:
            stores[f"artifact store {url}"] = scan_artifact_store(url, digests, image_shape)
        except Exception as err:  # the store's client failed (credentials, network): the store is unverified
            unscanned.append(f"artifact store {url}: could not be read ({type(err).__name__}: {err})")
    root = dvc_root_of(data_dir)
    if root is not None:
        stores["DVC cache"] = find_copies(root / ".dvc" / "cache", digests, image_shape).as_dict()
        remote = dvc_default_remote(root)
        if remote is not None:
            path = _local_path(remote[1], root)
            if path is not None:
                stores[f"DVC remote {remote[0]}"] = find_copies(path, digests, image_shape).as_dict()
            else:
                try:
                    stores[f"DVC remote {remote[0]}"] = scan_dvc_remote(root, remote[0], digests, image_shape)
                except Exception as err:  # the remote's client failed (credentials, network)
                    unscanned.append(f"DVC remote {remote[0]} ({remote[1]}): could not be read "
                                     f"({type(err).__name__}: {err})")
    tombstones = {str(v.version) for v in client.search_model_versions(f"name = '{model_name}'")
                  if v.tags.get("retired") == "true"}
    servable_holders = sorted(set(holding_versions) - tombstones, key=int)
    aliases = {alias: str(version) for alias, version in client.get_registered_model(model_name).aliases.items()}
    aliases_on_holders = {a: v for a, v in aliases.items() if v in set(holding_versions)}
    copies = sum(store["copies"] for store in stores.values())
    skipped = {f"{name}: {path}": why for name, store in stores.items() for path, why in store["skipped"].items()}
    verdict = (COPIES_FOUND if copies or servable_holders or aliases_on_holders
               else UNVERIFIED if unscanned or skipped else CLEAN)
    return {
        "request_id": request_id, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ids": len(ids), "images_searched": len(digests), "image_shape": list(image_shape),
        "how": "SHA-256 of every deleted image's pixels, compared with every image of every .npy array (any file "
               "starting with NumPy's magic) under each store",
        "purged": purge, "stores": stores, "not_searched": unscanned,
        "registry": {"versions_holding_ids_servable": servable_holders,
                     "retired_tombstones": sorted(set(holding_versions) & tombstones, key=int),
                     "aliases": aliases, "aliases_on_versions_holding_ids": aliases_on_holders},
        "not_searchable_by_content": ["figures (images re-encoded as PNG; runs log synthetic or public images only)",
                                      "model weights (what a model learned: the classifier is exactly unlearned; "
                                      "the generator's coverage is in docs/deletion.md)",
                                      "the source the data was prepared from (the user's input, untouched)"],
        "copies": copies, "verdict": verdict,
    }
