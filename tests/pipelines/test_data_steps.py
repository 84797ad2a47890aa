"""The prepare and validate steps, end to end on a small fake Fashion-MNIST, against a real sqlite MLflow store."""

import os
import subprocess
import sys
import tempfile

import mlflow
import pytest

from fairforget.components.bias import BalanceConfig
from fairforget.components.dataset import DataError
from fairforget.components.ledger import ledger_path
from fairforget.components.locks import data_lock
from fairforget.components.versioning import dvc_md5_of_folder
from fairforget.pipelines.data_steps import main, run_prepare, run_validate


def test_prepare_then_validate_records_md5_bias_gx_and_figure(tracking_uri, tmp_path, small_data_config,
                                                              monkeypatch):
    data_dir = tmp_path / "data"
    md5 = run_prepare(small_data_config, data_dir, track=False)
    assert md5 == dvc_md5_of_folder(data_dir)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    outcome = run_validate(BalanceConfig(), data_dir)
    assert not list(scratch.glob("fairforget-gx-*"))  # the GX project and its Data Docs are not left behind
    assert outcome.bias.kl("superclass") == pytest.approx(0.2231, abs=1e-3)
    assert outcome.validation.integrity_ok and not outcome.validation.balanced

    client = mlflow.MlflowClient()
    run = client.get_run(outcome.extra["run_id"])
    assert run.data.tags["data_md5"] == md5
    assert run.data.tags["balance"] == "failed" and run.data.tags["integrity"] == "passed"
    assert run.data.tags["git_commit"]
    assert run.data.metrics["bias/kl/superclass"] == pytest.approx(0.2231, abs=1e-3)
    assert run.data.metrics["bias/loss"] == pytest.approx(0.5 * 0.2231 ** 2, abs=1e-4)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"figures", "validation", "config.json", "bias_table.json"} <= artifacts
    docs = {a.path for a in client.list_artifacts(run.info.run_id, "validation/data_docs")}
    assert "validation/data_docs/index.html" in docs
    assert run.inputs.dataset_inputs[0].dataset.digest == md5[:36]


def test_validate_stops_on_broken_data(tracking_uri, tmp_path, small_data_config):
    data_dir = tmp_path / "data"
    run_prepare(small_data_config, data_dir, track=False)
    manifest = (data_dir / "manifest.csv").read_text().splitlines()
    fields = manifest[1].split(",")
    fields[2] = "42"  # a label outside the class list
    manifest[1] = ",".join(fields)
    (data_dir / "manifest.csv").write_text("\n".join(manifest) + "\n")
    with pytest.raises(DataError, match="integrity"):
        run_validate(BalanceConfig(), data_dir)


def test_prepare_waits_for_no_one_and_touches_nothing_while_another_writer_holds_the_data(
        tracking_uri, tmp_path, small_data_config, capsys):
    from fairforget.components.locks import exclusive
    from fairforget.components.locks import data_lock

    data_dir = tmp_path / "data"
    args = ["prepare", "--data-dir", str(data_dir), "--source-dir", small_data_config.source_dir, "--train-size",
            "100", "--test-size", "50", "--audit-size", "100", "--reference-size", "100"]
    with exclusive(data_lock(data_dir), "the data folder"):  # a running pipeline or deletion request
        assert main(args) == 2
    assert "is being written by" in capsys.readouterr().err and not data_dir.exists()
    assert main(args) == 0 and (data_dir / "manifest.csv").is_file()


def test_prepare_refuses_a_data_folder_under_an_interrupted_deletion_commit(tracking_uri, tmp_path, capsys,
                                                                           small_data_config):
    """A deletion request killed in its commit leaves a journal naming the data folder: prepare must not rebuild the
    folder under it (it could bring back a record the request was deleting) and says how to finish it."""
    from fairforget.components.journal import Journal

    data_dir, outputs = tmp_path / "data", tmp_path / "outputs"
    Journal(outputs / ".journal" / "my-model.json").write({"data_dir": str(data_dir), "ids": ["a"]})
    Journal(outputs / ".journal" / "other.json").write({"data_dir": str(tmp_path / "elsewhere"), "ids": ["b"]})
    args = ["prepare", "--data-dir", str(data_dir), "--outputs-dir", str(outputs), "--source-dir",
            small_data_config.source_dir, "--train-size", "100", "--test-size", "50", "--audit-size", "100",
            "--reference-size", "100"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "was interrupted" in err and "-e finish -P model_name=my-model" in err and not data_dir.exists()
    (outputs / ".journal" / "my-model.json").unlink()  # finished: the other model's journal is another folder's
    assert main(args) == 0 and (data_dir / "manifest.csv").is_file()


def test_command_line_errors_are_one_line_and_non_zero(tracking_uri, tmp_path, capsys):
    assert main(["prepare", "--dataset", "nope", "--data-dir", str(tmp_path / "d")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "unknown dataset 'nope'" in err[0]
    assert not (tmp_path / "d").exists()
    assert main(["validate", "--data-dir", str(tmp_path / "d"), "--rho", "0"]) == 2
    assert "rho must be positive" in capsys.readouterr().err
    assert main(["validate", "--data-dir", str(tmp_path / "missing")]) == 2
    assert "prepare the data first" in capsys.readouterr().err


def test_prepare_leaves_out_the_records_of_the_deletion_ledger_and_validation_expects_it(tracking_uri, tmp_path,
                                                                                        small_data_config):
    from fairforget.components.dataset import load_dataset
    from fairforget.components.ledger import append_to_ledger, ledger_path
    from fairforget.pipelines.data_steps import load_current_data

    data_dir = tmp_path / "data"
    run_prepare(small_data_config, data_dir, track=False)
    deleted = list(load_dataset(data_dir).split("train").ids[:3])
    append_to_ledger(ledger_path(data_dir), deleted, request_id="r1", model_version="2")
    assert set(deleted) <= set(load_dataset(data_dir).ids)  # the old version is still there
    assert not set(deleted) & set(load_current_data(data_dir).ids)  # but every load leaves them out
    run_prepare(small_data_config, data_dir, track=False)  # a new preparation never brings them back
    prepared = load_dataset(data_dir)
    assert not set(deleted) & set(prepared.ids) and len(prepared.split("train")) == 97
    assert prepared.config["ledger"] == {"train": 3}
    assert run_validate(BalanceConfig(), data_dir).validation.integrity_ok  # 97 train records are expected now


def test_a_lost_or_rolled_back_ledger_is_refused_against_the_tracking_stores_mirror(tracking_uri, tmp_path,
                                                                                    small_data_config, capsys):
    """Losing forgotten.csv, or checking out an older one, must not bring deleted records back: the ledger is
    mirrored in the tracking store, and prepare, main and every data load refuse a local ledger behind it."""
    import mlflow

    from fairforget.components.dataset import load_dataset
    from fairforget.components.ledger import append_to_ledger, ledger_ids, ledger_path
    from fairforget.pipelines.data_steps import load_current_data
    from fairforget.pipelines.forget import main as forget_main
    from fairforget.pipelines.ledger_mirror import LEDGER_EXPERIMENT

    data_dir = tmp_path / "data"
    run_prepare(small_data_config, data_dir, track=False)
    deleted = list(load_dataset(data_dir).split("train").ids[:3])
    ledger = ledger_path(data_dir)
    append_to_ledger(ledger, deleted[:2], request_id="r1", model_version="2")
    assert not set(deleted[:2]) & set(load_current_data(data_dir).ids)  # a local ledger ahead: the mirror catches up
    append_to_ledger(ledger, deleted[2:], request_id="r2", model_version="3")
    run_prepare(small_data_config, data_dir, track=False)
    mirrors = mlflow.search_runs(experiment_names=[LEDGER_EXPERIMENT])
    assert sorted(mirrors["tags.ledger_rows"].astype(int)) == [2, 3]
    assert set(mirrors["tags.ledger_source"]) == {"fashion_mnist:" + small_data_config.source_dir.split("/")[-1]}

    full = ledger.read_text()
    ledger.unlink()  # lost
    with pytest.raises(DataError, match=r"forgotten.csv is missing: the tracking store's mirror .* lists 3 records "
                                        r"deleted on request.*dvc pull forgotten.csv.dvc.*restore-ledger"):
        run_prepare(small_data_config, data_dir, track=False)
    ledger.write_text("\n".join(full.splitlines()[:-1]) + "\n")  # an older version: the last request's row gone
    with pytest.raises(DataError, match="lacks 1 of them"):
        load_current_data(data_dir)
    assert forget_main(["restore-ledger", "--data-dir", str(data_dir)]) == 0
    assert "1 records of 'fashion_mnist:" in capsys.readouterr().out
    assert ledger_ids(ledger) == set(deleted)
    run_prepare(small_data_config, data_dir, track=False)
    assert not set(deleted) & set(load_dataset(data_dir).ids)


def test_a_data_folder_reached_through_a_link_is_written_tracked_and_locked_where_the_link_points(
        tracking_uri, tmp_path, small_data_config):
    """The Docker stack's layout: ``data`` in the project is a link to ``workspace/data`` on a volume, and the
    volume is its own DVC project, so the data, its DVC file, the ledger and the lock all live on the volume."""
    workspace, link = tmp_path / "workspace", tmp_path / "project" / "data"
    workspace.mkdir()
    link.parent.mkdir()
    link.symlink_to(workspace / "data", target_is_directory=True)  # dangling until the first prepare
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=workspace, check=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})

    md5 = run_prepare(small_data_config, link)
    run_prepare(small_data_config, link)  # a second preparation replaces the folder, not the link

    assert link.is_symlink() and (workspace / "data").is_dir() and not (workspace / "data").is_symlink()
    assert md5 == dvc_md5_of_folder(workspace / "data") and (workspace / "data.dvc").is_file()
    assert ledger_path(link) == workspace / "forgotten.csv" and data_lock(link).parent == workspace
    assert sorted(p.name for p in link.parent.iterdir()) == ["data"]  # nothing was written beside the link
