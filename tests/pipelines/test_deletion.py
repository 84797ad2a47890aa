"""Deletion requests that delete everywhere, atomically, under one written registry policy; resume and concurrency.

Each test runs the toy pipeline (tests/pipelines/test_pipeline.py::tiny_pipeline) against its own sqlite store."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from fairforget.components.dataset import load_dataset
from fairforget.components.gate import OPEN_DELETION_TAG, check_promotable
from fairforget.components.ledger import ledger_ids, ledger_path
from fairforget.components.locks import Busy, exclusive
from fairforget.components.versioning import dvc_md5_of_folder
from fairforget.pipelines.forget import main as forget_main
from fairforget.pipelines.forget import COMMIT_STEPS, serve_deletion_request
from fairforget.components.locks import data_lock
from fairforget.pipelines.tracking import project_path
from fairforget.pipelines.main import run_pipeline
from fairforget.pipelines.registry import CHAMPION
from tests.pipelines.test_pipeline import tiny_pipeline

pytestmark = pytest.mark.integration  # whole pipeline runs, kill tests or real servers: `make test-all`

ROOT = Path(__file__).resolve().parents[2]
MODEL = "toy-classifier"


def promote(tmp_path, version) -> int:
    return forget_main(["promote", "--version", str(version), "--model-name", MODEL, "--policy-file",
                        str(tmp_path / "policy.yaml")])


def live_ids(version) -> set[str]:
    state = project_path(mlflow.MlflowClient().get_model_version(MODEL, str(version)).tags["state_dir"])
    plan = pd.read_csv(state / "sisa" / "plan.csv", dtype={"id": str})
    return set(plan.loc[~plan["deleted"].astype(bool), "id"])


@pytest.fixture
def champion(tracking_uri, tmp_path):
    """A finished toy run whose version 1 is champion; returns (tmp_path, its originals still live, and one
    original the loop forgot)."""
    summary = run_pipeline(tiny_pipeline(tmp_path))
    assert summary["registered_version"] == "1" and promote(tmp_path, 1) == 0
    live = live_ids(1)
    originals = set(load_dataset(tmp_path / "data").split("train").ids)
    return tmp_path, sorted(i for i in live if i in originals), sorted(originals - live)


def champion_version() -> str:
    return str(mlflow.MlflowClient().get_model_version_by_alias(MODEL, CHAMPION).version)


def test_requests_mixing_live_and_forgotten_ids_delete_everywhere_and_the_champion_follows(champion):
    tmp_path, live, loop_forgotten = champion
    data_dir = tmp_path / "data"
    first = serve_deletion_request(live[:3] + loop_forgotten[:1], MODEL)
    assert first["gate"] == "passed" and first["already_forgotten"] == 1 and first["forgotten"] == 3
    assert first["served"] == "champion -> version 2" and champion_version() == "2"  # nothing serves version 1
    # version 1 is retired: its model artifacts (pyfunc and ONNX) and SISA state are gone, a tombstone stays
    retired = mlflow.MlflowClient().get_model_version(MODEL, "1")
    assert first["retired_versions"] == ["1"] and retired.tags["retired"] == "true"
    assert not project_path(retired.tags["state_dir"]).exists()
    for uri in (f"models:/{MODEL}/1", retired.tags["onnx_uri"]):
        with pytest.raises(Exception):
            mlflow.pyfunc.load_model(uri)
    mlflow.pyfunc.load_model(f"models:/{MODEL}/2")  # the new version serves
    ledger = pd.read_csv(ledger_path(data_dir), dtype=str)
    assert set(ledger["id"]) == set(live[:3] + loop_forgotten[:1]) and set(ledger["model_version"]) == {"2"}
    assert not set(ledger["id"]) & set(load_dataset(data_dir).ids)  # the data folder was rewritten without them
    client = mlflow.MlflowClient()
    assert client.get_model_version(MODEL, "1").tags["contains_deleted"] == "true"
    assert "contains_deleted" not in client.get_model_version(MODEL, "2").tags
    assert promote(tmp_path, 1) == 2  # the old champion can never be promoted again
    # the new version's data version is the rewritten folder: a re-audit on it keeps the version promotable
    served = client.get_model_version(MODEL, "2").tags
    assert served["data_md5"] == served["audit_data_md5"] == dvc_md5_of_folder(data_dir) != served[
        "data_md5_when_served"]
    from fairforget.pipelines.audit import run as audit_main

    audit_main(["--model-uri", f"models:/{MODEL}/2", "--data-dir", str(data_dir), "--reference-models", "0",
                "--fpr-levels", "0.1", "--num-bootstrap", "20", "--num-threads", "1"])
    reaudited = client.get_model_version(MODEL, "2").tags
    assert reaudited["audit_data_md5"] == dvc_md5_of_folder(data_dir)
    assert check_promotable(reaudited).passed, check_promotable(reaudited).reason  # the record allows promotion

    # a second request is served from the new champion, and the champion follows again
    second = serve_deletion_request(live[3:5], MODEL)
    assert second["registered_version"] == "3" and second["forgotten"] == 2 and champion_version() == "3"
    assert sorted(second["retired_versions"]) == ["1", "2"]  # version 1 stays the tombstone it was
    assert not set(live[:5]) & live_ids(3)
    assert ledger_ids(ledger_path(data_dir)) == set(live[:5] + loop_forgotten[:1])
    assert client.get_model_version(MODEL, "2").tags["contains_deleted"] == "true"
    assert promote(tmp_path, 2) == 2 and promote(tmp_path, 3) == 0

    # a fresh run of the pipeline never trains on a ledger id
    rerun = run_pipeline(tiny_pipeline(tmp_path))
    assert not ledger_ids(ledger_path(data_dir)) & live_ids(rerun["registered_version"])

    # every served request mirrored the ledger in the tracking store: losing it refuses the next request and run
    from fairforget.components.dataset import DataError
    from fairforget.pipelines.ledger_mirror import LEDGER_EXPERIMENT

    assert sorted(mlflow.search_runs(experiment_names=[LEDGER_EXPERIMENT])["tags.ledger_rows"].astype(int)) == [4, 6]
    ledger_path(data_dir).unlink()
    with pytest.raises(DataError, match="forgotten.csv is missing: .* lists 6 records deleted on request"):
        serve_deletion_request(live[5:6], MODEL)
    with pytest.raises(DataError, match="forgotten.csv is missing"):
        run_pipeline(tiny_pipeline(tmp_path))


def test_a_rejected_request_unserves_the_champion_stays_open_and_can_be_retried(champion, capsys):
    tmp_path, live, _ = champion
    data_dir = tmp_path / "data"
    policy = tmp_path / "policy.yaml"
    lax = policy.read_text()
    before = (dvc_md5_of_folder(data_dir), sorted(os.listdir(next((tmp_path / "outputs").glob("*")))))
    # certification required: the toy audit is far too small to certify anything, so the gate must refuse
    strict = {"require_audit_power": False, "require_certification": True}
    policy.write_text(yaml.safe_dump({**strict, "on_failed_deletion": "keep"}))
    kept = serve_deletion_request(live[:2], MODEL)
    assert kept["gate"] == "rejected" and kept["registered_version"] is None and champion_version() == "1"
    assert "nothing changed" in capsys.readouterr().out

    policy.write_text(yaml.safe_dump(strict))  # on_failed_deletion: unserve, the default
    rejected = serve_deletion_request(live[:2], MODEL)
    assert rejected["gate"] == "rejected" and rejected["served"] == "champion removed"
    assert "the request stays open" in capsys.readouterr().out
    after = (dvc_md5_of_folder(data_dir), sorted(os.listdir(next((tmp_path / "outputs").glob("*")))))
    assert after == before and not ledger_path(data_dir).exists()
    client = mlflow.MlflowClient()
    with pytest.raises(mlflow.exceptions.MlflowException):  # nothing that holds the records is served
        champion_version()
    assert client.get_registered_model(MODEL).tags[OPEN_DELETION_TAG].startswith(f"request {rejected['run_id']}")
    assert promote(tmp_path, 1) == 2  # nothing is promoted while the request is open
    policy.write_text(lax)
    retried = serve_deletion_request(live[:2], MODEL)  # served from version 1, the version the request named
    assert retried["gate"] == "passed" and champion_version() == retried["registered_version"] == "2"
    assert OPEN_DELETION_TAG not in client.get_registered_model(MODEL).tags


def test_a_looser_run_parameter_cannot_loosen_the_policy(tracking_uri, tmp_path):
    # the written policy: perfect accuracy and certification (which the toy audit is far too small to give)
    config = tiny_pipeline(tmp_path, min_accuracy=1.0, require_certification=True)
    config = config.replace(gate=config.gate.replace(min_accuracy=0.0, max_auc_excess=0.49))
    from fairforget.pipelines.loop import effective_policy

    policy = effective_policy(config)
    assert policy.min_accuracy == 1.0 and policy.max_auc_excess == 0.03 and policy.require_certification
    summary = run_pipeline(config)
    assert summary["gate"] == "rejected"
    run = mlflow.MlflowClient().get_run(summary["run_id"])
    assert "retained originals" in run.data.tags["gate_reason"] and "too few" in run.data.tags["gate_reason"]


def test_a_second_writer_of_the_same_data_folder_gets_one_line_at_once(tracking_uri, tmp_path, capsys):
    config = tiny_pipeline(tmp_path)
    with exclusive(data_lock(tmp_path / "data"), "the data folder"):
        with pytest.raises(Busy, match="is being written by process"):
            run_pipeline(config)
    assert not (tmp_path / "outputs").exists()  # refused before any work


CRASHING = """
import sys
from pathlib import Path
from tests.pipelines.test_pipeline import tiny_pipeline
from fairforget.pipelines.main import run_pipeline
run_pipeline(tiny_pipeline(Path(sys.argv[1])), resume=True)
"""


def run_until_fault(tmp_path: Path, fault: str) -> int:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "MLFLOW_EXPERIMENT_NAME": "fairforget-test", "FAIRFORGET_FAULT": fault}
    env.pop("MLFLOW_RUN_ID", None)
    return subprocess.run([sys.executable, "-c", CRASHING, str(tmp_path)], env=env, cwd=ROOT, timeout=900,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode


def final_record(summary: dict) -> tuple:
    client = mlflow.MlflowClient()
    metrics = client.get_run(summary["run_id"]).data.metrics
    return (summary["registered_version"], metrics["acc/test"], metrics["final/mia/max_success"],
            len(client.search_model_versions(f"name = '{MODEL}'")))


@pytest.mark.parametrize("fault", ["final_audit", "publish:registered"])
def test_a_run_killed_in_the_final_audit_or_in_publish_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch,
                                                                                          fault):
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    clean.mkdir()
    crashed.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{clean / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fairforget-test")
    uninterrupted = final_record(run_pipeline(tiny_pipeline(clean)))

    assert run_until_fault(crashed, fault) == -signal.SIGKILL
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{crashed / 'mlflow.db'}")
    resumed = run_pipeline(tiny_pipeline(crashed), resume=True)
    assert final_record(resumed) == uninterrupted  # same figures, and one version registered, never two


FORGET_CRASH = """
import sys
from fairforget.pipelines.forget import serve_deletion_request
serve_deletion_request(sys.argv[1].split(","), "toy-classifier")
"""


@pytest.mark.parametrize("fault", ["forget:unlearned", "forget:registered"])
def test_a_request_killed_midway_leaves_the_champion_and_the_ledger_as_they_were(champion, fault):
    tmp_path, live, _ = champion
    data_dir = tmp_path / "data"
    md5 = dvc_md5_of_folder(data_dir)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "FAIRFORGET_FAULT": fault}
    completed = subprocess.run([sys.executable, "-c", FORGET_CRASH, ",".join(live[:2])], env=env, cwd=ROOT,
                               timeout=900, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert completed.returncode == -signal.SIGKILL
    assert dvc_md5_of_folder(data_dir) == md5 and not ledger_path(data_dir).exists()
    assert str(mlflow.MlflowClient().get_model_version_by_alias(MODEL, CHAMPION).version) == "1"
    assert set(live[:2]) <= live_ids(1)
    retried = serve_deletion_request(live[:2], MODEL)  # the same request again
    assert retried["gate"] == "passed" and ledger_ids(ledger_path(data_dir)) == set(live[:2])
    assert json.dumps(retried)  # a plain summary


@pytest.mark.parametrize("fault", [f"commit:{step}" for step in COMMIT_STEPS])
def test_a_request_killed_at_any_commit_step_is_finished_by_the_next_forget_as_if_never_killed(champion, fault):
    """The commit (ledger, data, tags, alias, retirement, purge and report) is journalled: killed right after any
    step, before the journal records it, the next ``forget`` of the same ids finishes it, and the end state is the
    uninterrupted one (test_requests_mixing_...): champion on version 2, version 1 a tombstone, no third version,
    the ledger and its mirror, the data without the ids, a clean report, valid signatures, no journal left."""
    from fairforget.components.approval import gate_key, signature_problem
    from fairforget.pipelines.forget import journal_of
    from fairforget.pipelines.ledger_mirror import LEDGER_EXPERIMENT

    tmp_path, live, _ = champion
    data_dir, ids = tmp_path / "data", live[:2]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "FAIRFORGET_FAULT": fault}
    killed = subprocess.run([sys.executable, "-c", FORGET_CRASH, ",".join(ids)], env=env, cwd=ROOT, timeout=900,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert killed.returncode == -signal.SIGKILL
    journal = journal_of(tmp_path / "outputs", MODEL)
    assert journal.read() is not None  # the commit is open
    assert promote(tmp_path, 1) == 2  # no promotion while it is

    finished = serve_deletion_request(ids, MODEL)
    assert finished["resumed"] and finished["registered_version"] == "2" and finished["deletion_report"] == "clean"
    assert journal.read() is None
    client = mlflow.MlflowClient()
    assert champion_version() == "2" and len(client.search_model_versions(f"name = '{MODEL}'")) == 2
    assert client.get_model_version(MODEL, "1").tags["retired"] == "true"
    assert ledger_ids(ledger_path(data_dir)) == set(ids) and not set(ids) & set(load_dataset(data_dir).ids)
    assert max(mlflow.search_runs(experiment_names=[LEDGER_EXPERIMENT])["tags.ledger_rows"].astype(int)) == 2
    for version in ("1", "2"):
        assert signature_problem(MODEL, version, client.get_model_version(MODEL, version).tags, gate_key()) is None
    assert client.get_model_version(MODEL, "2").tags["deletion_request"] == "served"
    assert mlflow.artifacts.load_dict(f"runs:/{finished['run_id']}/deletion_report.json")["verdict"] == "clean"
    assert client.get_run(finished["run_id"]).info.status == "FINISHED"


def test_a_pipeline_run_after_a_killed_commit_finishes_it_before_reading_the_data(champion):
    from fairforget.pipelines.forget import journal_of

    tmp_path, live, _ = champion
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "FAIRFORGET_FAULT": "commit:ledger"}
    killed = subprocess.run([sys.executable, "-c", FORGET_CRASH, ",".join(live[:2])], env=env, cwd=ROOT,
                            timeout=900, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert killed.returncode == -signal.SIGKILL
    rerun = run_pipeline(tiny_pipeline(tmp_path))
    assert journal_of(tmp_path / "outputs", MODEL).read() is None and champion_version() == "2"
    assert not set(live[:2]) & set(load_dataset(tmp_path / "data").ids)
    assert not set(live[:2]) & live_ids(rerun["registered_version"])  # the run never trained on them


def test_prepare_refuses_a_killed_commit_and_finish_completes_it(champion, capsys):
    """Killed after the data step: ``prepare`` refuses the folder in one line naming ``finish``; ``forget finish``
    ends in the uninterrupted state (champion on version 2, the ids gone, no journal)."""
    from fairforget.pipelines.data_steps import main as data_main
    from fairforget.pipelines.forget import journal_of
    from fairforget.pipelines.forget import main as forget_main

    tmp_path, live, _ = champion
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "FAIRFORGET_FAULT": "commit:data"}
    killed = subprocess.run([sys.executable, "-c", FORGET_CRASH, ",".join(live[:2])], env=env, cwd=ROOT,
                            timeout=900, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert killed.returncode == -signal.SIGKILL
    capsys.readouterr()
    assert data_main(["prepare", "--data-dir", str(tmp_path / "data"), "--outputs-dir",
                      str(tmp_path / "outputs")]) == 2
    assert "-e finish -P model_name=" + MODEL in capsys.readouterr().err
    assert forget_main(["finish", "--model-name", MODEL, "--outputs-dir", str(tmp_path / "outputs")]) == 0
    assert journal_of(tmp_path / "outputs", MODEL).read() is None and champion_version() == "2"
    assert not set(live[:2]) & set(load_dataset(tmp_path / "data").ids)
    assert forget_main(["finish", "--model-name", MODEL, "--outputs-dir", str(tmp_path / "outputs")]) == 0
    assert "no interrupted deletion request" in capsys.readouterr().out


def test_refresh_generator_replaces_with_a_generator_that_never_saw_the_deleted_records(champion):
    tmp_path, live, _ = champion
    client = mlflow.MlflowClient()
    served = serve_deletion_request(live[:2], MODEL, refresh_generator=True)
    tags = client.get_model_version(MODEL, served["registered_version"]).tags
    assert tags["generator_refreshed"] == "true"
    assert tags["generator_run_id"] != client.get_model_version(MODEL, "1").tags["generator_run_id"]
    generator_run = client.get_run(tags["generator_run_id"])
    assert "-without-" in generator_run.data.tags["data_md5"]  # trained on the data less the ledger's records


def test_the_ledger_is_dvc_tracked_and_pushed_like_the_data(tmp_path):
    """The project's own DVC commands on a throwaway project: ``dvc_track`` adds the ledger beside the data and
    ``dvc push`` sends it to the remote."""
    from fairforget.components.ledger import append_to_ledger
    from fairforget.pipelines import data_steps

    project = tmp_path / "project"
    project.mkdir()
    dvc = [sys.executable, "-m", "dvc"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=project, check=True, env=env)
    subprocess.run([*dvc, "remote", "add", "-d", "local", str(tmp_path / "remote")], cwd=project, check=True,
                   env=env)
    ledger = project / "forgotten.csv"
    append_to_ledger(ledger, ["a", "b"], request_id="r1", model_version="2")
    md5 = data_steps.dvc_track(ledger)
    assert yaml.safe_load((project / "forgotten.csv.dvc").read_text())["outs"][0]["md5"] == md5
    pushed = subprocess.run([*dvc, "push"], cwd=project, capture_output=True, text=True, env=env)
    assert pushed.returncode == 0 and "1 file pushed" in pushed.stdout


def test_requests_keep_the_champions_canaries_when_the_data_shrinks_under_the_default_count(tracking_uri, tmp_path,
                                                                                             monkeypatch):
    """The default canary count is 1% of the train split, which every served request shrinks: the second request
    must still audit with (and load) the champion's canaries, not a count recomputed from the smaller data."""
    from fairforget.pipelines.config import PipelineConfig

    config = tiny_pipeline(tmp_path, canaries=2)
    assert run_pipeline(config)["registered_version"] == "1" and promote(tmp_path, 1) == 0
    full_size = len(load_dataset(tmp_path / "data").split("train"))
    # the default rule's effect, exaggerated: one canary fewer as soon as the train split shrinks
    monkeypatch.setattr(PipelineConfig, "canary_count", lambda self, n: 2 if n >= full_size else 1)
    originals = set(load_dataset(tmp_path / "data").split("train").ids)
    live = sorted(i for i in live_ids(1) if i in originals)
    assert serve_deletion_request(live[:2], MODEL)["registered_version"] == "2" and promote(tmp_path, 2) == 0
    second = serve_deletion_request(live[2:4], MODEL)
    assert second["registered_version"] == "3" and not set(live[:4]) & live_ids(3)
    state = project_path(mlflow.MlflowClient().get_model_version(MODEL, "3").tags["state_dir"])
    plan = pd.read_csv(state / "sisa" / "plan.csv", dtype={"id": str})
    assert set(plan.loc[plan["id"].str.startswith("canary-"), "id"]) == {"canary-0", "canary-1"}


def test_a_served_request_purges_every_store_and_its_report_proves_it_by_content(champion):
    """Real DVC with a local remote holding the records, and a stray run state holding them: after the request the
    report has searched every store by the deleted images' SHA-256 and found nothing, because the request removed
    the stray state and garbage-collected DVC's cache and remote; the same search finds a copy logged later."""
    import numpy as np

    from fairforget.components.copies import find_copies, image_digests
    from fairforget.components.dataset import save_dataset
    from fairforget.pipelines.deletion_report import COPIES_FOUND, deletion_report

    tmp_path, live, _ = champion
    data_dir, remote = tmp_path / "data", tmp_path / "remote"
    dvc = [sys.executable, "-m", "dvc"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True, env=env)
    subprocess.run([*dvc, "remote", "add", "-d", "local", str(remote)], cwd=tmp_path, check=True, env=env)
    subprocess.run([*dvc, "add", "-q", "data"], cwd=tmp_path, check=True, env=env)
    subprocess.run([*dvc, "push", "-q"], cwd=tmp_path, check=True, env=env)

    requested = live[:3]
    held = load_dataset(data_dir)
    images = held.images[np.isin(held.ids.astype(str), requested)]
    digests, shape = image_digests(images), images.shape[1:]
    assert find_copies(tmp_path / ".dvc" / "cache", digests, shape).total == 3  # before: in the cache and remote
    assert find_copies(remote, digests, shape).total == 3
    stray = tmp_path / "outputs" / "0000" / "interrupted-run"
    save_dataset(held, stray / "augmented")  # a run that registered nothing left the records in its state
    save_dataset(held, tmp_path / ".data.tmp-killed")  # a prepare killed before its rename

    summary = serve_deletion_request(requested, MODEL)
    assert summary["deletion_report"] == "clean"
    report = mlflow.artifacts.load_dict(f"runs:/{summary['run_id']}/deletion_report.json")
    assert report["verdict"] == "clean" and report["copies"] == 0 and report["images_searched"] == 3
    assert {"data folder", "run state folders", "DVC cache", "DVC remote local"} <= set(report["stores"])
    assert any(name.startswith("artifact store") for name in report["stores"])
    assert all(store["copies"] == 0 and store["arrays_compared"] >= 0 for store in report["stores"].values())
    assert report["stores"]["data folder"]["arrays_compared"] == 1
    assert report["purged"]["state_folders_removed"] == [str(stray), str(tmp_path / ".data.tmp-killed")]
    assert not stray.exists() and not (tmp_path / ".data.tmp-killed").exists()
    assert report["purged"]["dvc_gc"].endswith(": ok")
    assert report["registry"]["versions_holding_ids_servable"] == [] and report["registry"]["aliases"] == {
        "champion": "2", "candidate": "2"}
    for store in (tmp_path / ".dvc" / "cache", remote, tmp_path / "outputs", data_dir):  # checked independently
        assert find_copies(store, digests, shape).total == 0, store
    assert mlflow.MlflowClient().get_model_version(MODEL, "2").tags["deletion_request"] == "served"

    # positive control: a copy logged to the artifact store afterwards is found by the same search
    leaked = tmp_path / "leak"
    leaked.mkdir()
    np.save(leaked / "anything.npy", images[:1])
    with mlflow.start_run():
        mlflow.log_artifact(str(leaked / "anything.npy"))
    again = deletion_report(requested, digests, shape, data_dir=data_dir, outputs_dir=tmp_path / "outputs",
                            model_name=MODEL, holding_versions=summary["retired_versions"], purge={},
                            request_id="check")
    assert again["verdict"] == COPIES_FOUND and again["copies"] == 1
