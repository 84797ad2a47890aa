"""Algorithm 2 end to end on the toy data set, against a real sqlite MLflow store and registry."""

import dataclasses

import mlflow
import pytest
import yaml

from fairforget.components.augment import AugmentConfig
from fairforget.components.dataset import DataError, load_dataset, make_toy_dataset, read_ids, save_dataset
from fairforget.components.forgetting import LoopConfig, replenish_seed_base
from fairforget.components.gate import GateConfig
from fairforget.components.generator import tiny_config
from fairforget.components.mia import AuditConfig
from fairforget.components.sisa.model import SisaConfig, SisaModel
from fairforget.components.training import TrainConfig
from fairforget.pipelines.config import PipelineConfig
from fairforget.pipelines.forget import main as forget_main
from fairforget.pipelines.forget import serve_deletion_request
from fairforget.pipelines.tracking import project_path
from fairforget.pipelines.main import run_pipeline

pytestmark = pytest.mark.integration  # whole pipeline runs, kill tests or real servers: `make test-all`

ATTACKS = ("mloss", "mmean")


def tiny_pipeline(tmp_path, canaries: int = 0, **policy) -> PipelineConfig:
    """The whole pipeline on toy data in seconds, under a registry policy written for it (``policy``: its
    values; by default a lax one, since a toy model neither learns much nor memorises its canaries)."""
    data_dir = tmp_path / "data"
    if not data_dir.exists():
        save_dataset(make_toy_dataset(per_class_train=(24, 24, 8, 8), per_class_other=16), data_dir)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump({"min_accuracy": 0.0, "require_audit_power": False,
                                           "require_certification": False, **policy}))
    return PipelineConfig(
        generator=tiny_config(),
        augment=AugmentConfig(rho=0.01),
        sisa=SisaConfig(num_shards=2, num_slices=2, train=TrainConfig(epochs=2), executor="serial"),
        # the one-half audit: the toy generator is non-private and memorises S, so a cross-fitted audit detects the
        # records of a 2-id deletion request through its replacements (AUC 0.94, exact p 0.016) and unserves every
        # toy champion; these tests are about the pipeline's and the request's mechanics, the cross-fitting about
        # the audit (tests/components/test_mia.py) and the real default run (docs/benchmarks.md)
        audit=dataclasses.replace(AuditConfig(), attacks=ATTACKS, fpr_levels=(0.1,), num_bootstrap=20,
                                  num_augmentations=2, cross_fit=False),
        loop=LoopConfig(forget_rate=0.25, iterations=2),
        gate=GateConfig(model_name="toy-classifier"), policy_file=str(policy_file),
        canaries=canaries, prepare=False, data_dir=str(data_dir), outputs_dir=str(tmp_path / "outputs"))


def test_any_augmentation_seed_replenishes_without_id_clashes(tracking_uri, tmp_path):
    """Algorithm 1's seeds (augment seed * 1000 + round) once collided with iteration 1's replenishment seeds
    (1000 + shard) when the augmentation seed was 1; every (seed, step) now has its own range."""
    config = tiny_pipeline(tmp_path, min_accuracy=0.0)
    config = dataclasses.replace(config, augment=dataclasses.replace(config.augment, seed=1),
                                 loop=dataclasses.replace(config.loop, iterations=1))
    assert run_pipeline(config)["iterations"] == 1
    bases = {replenish_seed_base(seed, step) for seed in range(3) for step in (*range(1, 11), 10_000, 10_003)}
    assert len(bases) == 3 * 12 and min(bases) > 999 * 1000 + 999  # above every Algorithm-1 seed of seeds < 1000


def test_pipeline_registers_a_candidate_with_metrics_per_iteration(tracking_uri, tmp_path):
    summary = run_pipeline(tiny_pipeline(tmp_path, min_accuracy=0.0))
    assert summary["gate"] == "passed" and summary["registered_version"] == "1"
    client = mlflow.MlflowClient()
    run = client.get_run(summary["run_id"])
    for key in ("acc/retain", "acc/test", "acc/worst_class", "acc/big", "acc/small", "bias/kl/superclass",
                "bias/loss", "data/original_fraction", "unlearn/points", "unlearn/final_exact", "time/unlearn_s",
                "time/train_s", "time/audit_s", "time/augment_s", "mia/mloss/success", "mia/mloss/auc",
                "mia/max_success", "final/mia/max_success", "final/mia/forgotten/max_success"):
        assert key in run.data.metrics, key
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "acc/test")]
    assert steps == [0, 1, 2]
    assert run.data.metrics["unlearn/final_exact"] == 1.0  # every shard retrained from scratch after the last step
    # 25% of the 64 originals per iteration: 16 forgotten each time, all replaced
    history = client.get_metric_history(run.info.run_id, "data/original_fraction")
    assert [round(m.value, 4) for m in sorted(history, key=lambda m: m.step)][-1] < 1.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/confusion_biased.png", "figures/confusion_debiased.png", "figures/distribution_before.png",
            "figures/distribution_after.png", "figures/table_I_iterations.png",
            "figures/attack_vs_forgotten.png", "figures/certification.png", "figures/roc_all.png",
            "figures/roc_forgotten.png"} <= artifacts
    version = client.get_model_version_by_alias("toy-classifier", "candidate")
    assert version.tags["gate"] == "passed" and version.tags["data_md5"].endswith(".dir")
    assert version.tags["unlearning_exactness"] == "verified"
    assert version.tags["generator_privacy"] == "none" and float(version.tags["generator_mia_auc"]) >= 0.0
    # the toy generator's audit is a certificate: too few records at toy size, unless it detects its members
    assert version.tags["generator_audit"] in ("too_few", "not_certified")
    assert float(version.tags["generator_mia_auc_high"]) >= float(version.tags["generator_mia_auc"])
    assert "its certificate: **" in version.description
    assert "## Generator privacy" in version.description
    assert "forgotten records may remain recoverable through the synthetic data" in version.description
    assert version.tags["coverage_forgotten"] == "exact_unlearning_only"
    assert "# Model card" in version.description
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert {"validate", "train_generator", "augment"} <= {c.data.tags.get("step") for c in children}

    # promote, then serve a deletion request against the champion
    assert forget_main(["promote", "--version", "1", "--model-name", "toy-classifier", "--policy-file",
                        str(tmp_path / "policy.yaml")]) == 0
    state = next((tmp_path / "outputs").glob("*/*/sisa"))
    live_before = SisaModel.load(state, load_dataset(tmp_path / "data").concat(
        load_dataset(state.parent / "synthetic"))).plan.live_ids()
    live = [i for i in live_before if i.startswith("toy-train")]
    request = tmp_path / "request.txt"
    request.write_text("\n".join(live[:4]) + "\n")
    served = serve_deletion_request(read_ids(request), "toy-classifier")
    assert served["forgotten"] == 4 and served["registered_version"] == "2" and served["gate"] == "passed"
    assert served["requested_verdict"] == "too_few"  # no canaries here: the audit's power is not shown
    # the toy generator is not private: the request says its replacements may carry the requested records
    assert "without DP" in served["generator_coverage"]
    assert client.get_run(served["run_id"]).data.tags["forget_generator_coverage"] == served["generator_coverage"]
    new_state = project_path(client.get_model_version("toy-classifier", "2").tags["state_dir"]) / "sisa"
    assert new_state != state  # the champion's state is never changed in place
    after = SisaModel.load(new_state, load_dataset(tmp_path / "data").concat(
        load_dataset(new_state.parent / "synthetic")))
    assert not set(live[:4]) & set(after.plan.live_ids())
    assert len(after.plan.live_ids()) == len(live_before)  # replenished: the data set keeps its size
    forget_run = client.get_run(served["run_id"])
    assert "final/mia/requested/max_success" in forget_run.data.metrics
    assert client.get_model_version("toy-classifier", "2").tags["served_from_version"] == "1"
    assert client.get_model_version("toy-classifier", "2").tags["unlearning_exactness"] == "verified"
    # unknown ids and an empty file: clear errors, nothing changed
    with pytest.raises(DataError, match="not original training records"):
        serve_deletion_request(["nobody"], "toy-classifier")
    request.write_text("\n")
    with pytest.raises(DataError, match="holds no ids"):
        read_ids(request)


def test_a_colour_photo_folder_runs_end_to_end_at_an_odd_image_size(tracking_uri, tmp_path):
    """A user's own photos (RGB, non-square, mixed sizes) prepared at 53x53 go through every model: autoencoder,
    denoiser, classifier, judge, SISA, audit, references and the ONNX export checked against the pyfunc."""
    import numpy as np

    from fairforget.components.data import DataConfig, prepare_dataset
    from tests.components.test_data import write_colour_photo_folder

    source = write_colour_photo_folder(tmp_path / "photos", per_class=60)
    data = prepare_dataset(DataConfig(dataset="folder", source_dir=str(source), image_size=53, train_size=48,
                                      majority_superclass="shoes", test_size=16, audit_size=32, reference_size=16))
    assert data.images.shape[1:] == (53, 53, 3)
    save_dataset(data, tmp_path / "data")
    summary = run_pipeline(tiny_pipeline(tmp_path, min_accuracy=0.0))
    assert summary["gate"] == "passed" and summary["registered_version"] == "1"
    run = mlflow.MlflowClient().get_run(summary["run_id"])
    assert run.data.metrics["export/onnx_max_abs_diff"] <= 1e-4
    model = mlflow.pyfunc.load_model("models:/toy-classifier/1")
    probabilities = np.asarray(model.predict(np.random.default_rng(0).random((2, 3, 53, 53), dtype=np.float32)))
    assert probabilities.shape == (2, 4)


def test_canaries_are_audited_every_iteration_and_the_gate_names_the_canary_check(tracking_uri, tmp_path):
    """The toy model is too weak to memorise its canaries: every iteration logs the canary audit, the audit has no
    demonstrated power, and the gate refuses its 'at chance' verdict, saying why."""
    summary = run_pipeline(tiny_pipeline(tmp_path, canaries=4, min_accuracy=0.0,
                                         require_audit_power=True))
    client = mlflow.MlflowClient()
    run = client.get_run(summary["run_id"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "mia/canary/live_auc")] == [0, 1, 2]
    assert run.data.metrics["data/canaries"] == 4
    for key in ("mia/canary/power", "mia/canary/live_p_value", "final/mia/canary/power",
                "mia/canary/forgotten_within_bound"):
        assert key in run.data.metrics, key
    assert summary["gate"] == "rejected" and summary["registered_version"] is None
    assert "could not detect canaries" in run.data.tags["gate_reason"]
    assert run.data.tags["audit_power"] == "not_shown"


def test_impossible_gate_registers_nothing(tracking_uri, tmp_path):
    """A toy audit pool is far too small to certify anything: under a policy that requires certification the
    gate rejects, saying so with the numbers."""
    summary = run_pipeline(tiny_pipeline(tmp_path, min_accuracy=0.0, require_certification=True))
    assert summary["gate"] == "rejected" and summary["registered_version"] is None
    tags = mlflow.MlflowClient().get_run(summary["run_id"]).data.tags
    assert tags["gate"] == "rejected" and "too few records to certify" in tags["gate_reason"]


CRASHING_RUN = """
from pathlib import Path
from tests.pipelines.test_pipeline import tiny_pipeline
from fairforget.pipelines.main import run_pipeline
run_pipeline(tiny_pipeline(Path({tmp!r}), min_accuracy=0.0), resume=True)
"""


def _final_state(summary, outputs):
    client = mlflow.MlflowClient()
    run = client.get_run(summary["run_id"])
    histories = {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
                 for key in ("acc/test", "acc/retain", "unlearn/points", "data/original_fraction")}
    plan = next(outputs.glob("*/*/sisa/plan.csv")).read_text()
    return histories, plan


def test_resume_after_kill_gives_the_same_result_as_an_uninterrupted_run(tmp_path, monkeypatch):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    crashed.mkdir()
    clean.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{crashed / 'mlflow.db'}",
           "MLFLOW_EXPERIMENT_NAME": "fairforget-test"}
    env.pop("MLFLOW_RUN_ID", None)
    process = subprocess.Popen([sys.executable, "-c", CRASHING_RUN.format(tmp=str(crashed))], env=env, cwd=root,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    progress = None
    while time.time() < deadline and process.poll() is None:
        found = list((crashed / "outputs").glob("*/*/progress.json"))
        if found and '"iteration": 1' in found[0].read_text():
            progress = found[0]
            break
        time.sleep(0.2)
    assert progress is not None, "the run never finished its first iteration"
    plan = progress.parent / "sisa" / "plan.csv"
    # kill it in the middle of iteration 2: after its unlearning changed the SISA plan, before it committed
    while process.poll() is None and plan.stat().st_mtime <= progress.stat().st_mtime:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert '"iteration": 1' in progress.read_text(), "the kill came too late: iteration 2 had already committed"
    assert plan.stat().st_mtime > progress.stat().st_mtime

    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fairforget-test")
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    resumed = run_pipeline(tiny_pipeline(crashed, min_accuracy=0.0), resume=True)
    resumed_state = _final_state(resumed, crashed / "outputs")

    clean_uri = f"sqlite:///{clean / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", clean_uri)
    mlflow.set_tracking_uri(clean_uri)
    uninterrupted = run_pipeline(tiny_pipeline(clean, min_accuracy=0.0))
    clean_state = _final_state(uninterrupted, clean / "outputs")

    # same run continued, every iteration logged exactly once, identical numbers and identical SISA membership
    assert resumed["run_id"] == progress.parent.joinpath("progress.json").read_text().split('"parent_run_id": "')[1][:32]
    assert [s for s, _ in resumed_state[0]["acc/test"]] == [0, 1, 2]
    assert resumed_state == clean_state
