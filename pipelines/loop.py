"""One step of Algorithm 2 and the state that makes a run resumable (used by ``main`` and ``forget``).

State folder ``outputs/<config hash>/<run id>/``: ``sisa/`` (plan and content-addressed checkpoints), ``synthetic/`` (every
synthetic sample so far), ``progress.json`` (the commit point: the last finished iteration and its history),
``snapshots/<iteration>/`` (plan and synthetic samples as they were at that commit) and ``pipeline.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import numpy as np

from components.augment import replenish
from components.bias import measure_bias
from components.dataset import Dataset, replace_folder, save_dataset
from components.fairness import evaluate_predictions
from components.gate import evaluate_gate
from components.mia import AuditConfig
from components.mia.protocol import audit_membership
from components.model_card import render_model_card
from components.report import plot_roc_curves
from components.sisa.model import SisaModel
from components.training import accuracy
from pipelines.config import PipelineConfig
from pipelines.registry import log_classifier, register_if_passed
from pipelines.tracking import PROJECT_ROOT, git_commit, log_figure

PROGRESS_FILE = "progress.json"
CONFIG_FILE = "pipeline.json"


def project_path(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else PROJECT_ROOT / path


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=float))
    tmp.replace(path)


def log_metrics_once(metrics: dict[str, float], step: int) -> None:
    """Log ``metrics`` at ``step`` unless this run already has them at that step (a resumed iteration)."""
    run_id = mlflow.active_run().info.run_id
    client = mlflow.MlflowClient()
    probe = next(iter(metrics), None)
    if probe is not None and any(m.step == step for m in client.get_metric_history(run_id, probe)):
        return
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and not
                        (isinstance(v, float) and math.isnan(v))}, step=step)


@dataclass
class LoopState:
    """What is persisted after every iteration: enough to resume exactly."""

    parent_run_id: str
    iteration: int = 0
    history: list[dict] = field(default_factory=list)
    at_chance_streak: int = 0
    finished: bool = False

    def save(self, folder: Path) -> None:
        write_json_atomic(folder / PROGRESS_FILE, asdict(self))

    @classmethod
    def load(cls, folder: Path) -> "LoopState | None":
        path = folder / PROGRESS_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None


SNAPSHOT_DIR = "snapshots"
SNAPSHOT_FILES = ("sisa/plan.csv", "sisa/sisa.json")


def snapshot_state(state_dir: Path, iteration: int) -> Path:
    """Copy the mutable loop state (SISA plan and config, the synthetic samples) to ``snapshots/<iteration>``.

    Written to a temporary folder and renamed, so a snapshot is complete or absent. Checkpoints are content-
    addressed and need no copy: a restored plan finds its own (or retrains them, identically).
    """
    target = state_dir / SNAPSHOT_DIR / f"{iteration:03d}"
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "sisa").mkdir(parents=True)
    for name in SNAPSHOT_FILES:
        shutil.copy2(state_dir / name, tmp / name)
    shutil.copytree(state_dir / "synthetic", tmp / "synthetic")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def restore_state(state_dir: Path, iteration: int) -> None:
    """Put the snapshot of ``iteration`` back in place (undoing a step that died half-way)."""
    source = state_dir / SNAPSHOT_DIR / f"{iteration:03d}"
    if not source.is_dir():
        raise RuntimeError(f"cannot resume: the snapshot {source} is missing; rerun without resume")
    for name in SNAPSHOT_FILES:
        tmp = state_dir / f"{name}.restore-{os.getpid()}"
        shutil.copy2(source / name, tmp)
        tmp.replace(state_dir / name)
    tmp_dir = state_dir / f".synthetic.restore-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    shutil.copytree(source / "synthetic", tmp_dir)
    replace_folder(tmp_dir, state_dir / "synthetic")


def commit_iteration(state: "LoopState", state_dir: Path) -> None:
    """Snapshot, then record progress (the commit point), then drop older snapshots."""
    snapshot_state(state_dir, state.iteration)
    state.save(state_dir)
    for old in (state_dir / SNAPSHOT_DIR).iterdir():
        if old.name != f"{state.iteration:03d}":
            shutil.rmtree(old, ignore_errors=True)


def evaluate_ensemble(ensemble, test: Dataset, retain: Dataset | None = None):
    """Fairness report on ``test`` and accuracy on ``retain`` (the current training set)."""
    predicted = ensemble.predict(test.images)
    report = evaluate_predictions(test.labels, predicted, test.class_names, test.manifest["superclass"].to_numpy())
    retain_acc = accuracy(ensemble.predict_proba(retain.images), retain.labels) if retain is not None else None
    return report, retain_acc


def current_training_set(original_train: Dataset, synthetic: Dataset, sisa: SisaModel) -> Dataset:
    """S now: the originals not yet forgotten plus every synthetic sample, in the plan's live order."""
    everything = original_train.concat(synthetic) if len(synthetic) else original_train
    return everything.by_ids(sisa.plan.live_ids())


def replenish_seed_base(augment_seed: int, step: int) -> int:
    """The seed of the replacements generated at loop ``step`` (shard k adds k): 10^9 + augment_seed * 10^8 +
    step * 1000. Disjoint from Algorithm 1's seeds (``augment_seed * 1000 + round``, below 10^9 for any seed below
    10^6) and from the seeds of every other (augment seed, step) for steps below 10^5 and fewer than 1000 shards, so
    synthetic ids (``syn-<generator>-<seed>-<k>``) never clash."""
    return 10**9 + int(augment_seed) * 10**8 + int(step) * 1000


def sampled_audit_config(audit: AuditConfig, size: int | None, available: int) -> AuditConfig:
    """``audit`` on ``size`` members and as many non-members (all when ``size`` is None or >= ``available``),
    keeping only the FPR levels the evaluation half can resolve (0.1% needs >= 1000 evaluation non-members)."""
    if size is None or size >= available:
        return audit
    levels = tuple(level for level in audit.fpr_levels if level * size * (1 - audit.calibration_fraction) >= 1)
    return dataclasses.replace(audit, sample_size=size, fpr_levels=levels or (0.1,))


class ForgettingLoop:
    """The objects one step of Algorithm 2 works on, and the step itself (used by ``main`` and ``forget``).

    ``sisa`` holds the live membership; ``synthetic`` every synthetic sample generated so far (saved to
    ``synthetic_dir`` after each step); members of the audit are all ``original_train`` records.
    """

    def __init__(self, config: PipelineConfig, original_train: Dataset, test: Dataset, non_members: Dataset,
                 references, target, generator, sisa: SisaModel, synthetic: Dataset, synthetic_dir: Path):
        self.config, self.original_train, self.test, self.non_members = config, original_train, test, non_members
        self.references, self.target, self.generator, self.sisa = references, target, generator, sisa
        self.synthetic, self.synthetic_dir = synthetic, synthetic_dir
        self.original_ids = list(original_train.ids)
        self._original_set = set(self.original_ids)

    def live_originals(self) -> list[str]:
        return [i for i in self.sisa.plan.live_ids() if i in self._original_set]

    def current(self) -> Dataset:
        return current_training_set(self.original_train, self.synthetic, self.sisa)

    def forget_and_replenish(self, forget: list[str], seed_base: int, step: int) -> tuple[dict, dict]:
        """Unlearn ``forget`` exactly (SISA) and give each shard as many new synthetic samples as it lost
        (Alg. 2 line 5 / ``replenish``), in one retraining of the affected shards. Returns (unlearning metrics,
        timings).

        Raises ``RuntimeError`` when the exactness audit finds the unlearned shard differs from a retrain.
        """
        if not forget:
            raise ValueError("the deletion request is empty: pass at least one original record id")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        forgotten_rows = self.sisa.plan.rows_of(forget)
        remaining = self.current()
        remaining = remaining.select(~np.isin(remaining.ids, forget))
        new_parts, new_shards = [], []
        for shard, count in forgotten_rows.groupby("shard").size().items():
            new = replenish(remaining, int(count), self.generator, self.target, seed=seed_base + int(shard),
                            guidance_scale=self.config.augment.guidance_scale)
            remaining = remaining.concat(new)
            new_parts.append(new)
            new_shards += [int(shard)] * len(new)
        replacements = new_parts[0]
        for part in new_parts[1:]:
            replacements = replacements.concat(part)
        timings["time/augment_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        unlearned = self.sisa.unlearn(forget, replacements=replacements, replacement_shards=new_shards)
        timings["time/unlearn_s"] = time.perf_counter() - t0
        if unlearned.exact is False:
            raise RuntimeError(f"step {step}: the unlearned shard {unlearned.audited_shard} differs from one retrained "
                               "from scratch: unlearning is not exact, stopping")
        self.synthetic = self.synthetic.concat(replacements)
        save_dataset(self.synthetic, self.synthetic_dir)
        info = {"unlearn/points": unlearned.points,
                "unlearn/exact": float(unlearned.exact) if unlearned.exact is not None else float("nan"),
                "unlearn/shards_retrained": len(unlearned.shards_retrained),
                "unlearn/slices_retrained": unlearned.slices_retrained, "augment/replenished": len(replacements)}
        return info, timings

    def iteration_audit_config(self) -> AuditConfig:
        """The per-iteration audit (``sampled_audit_config``); the final audit uses every record."""
        return sampled_audit_config(self.config.audit, self.config.loop.iteration_audit_size,
                                    min(len(self.original_train), len(self.non_members)))

    def final_audit(self, subsets: dict[str, list[str]] | None = None):
        """The full audit of the deployed ensemble: every original record against as many non-members; logged
        as ``final/mia/...`` with ROC curves (log-log) and the table. Returns the ``AuditReport``."""
        live = set(self.sisa.plan.live_ids())
        forgotten = [i for i in self.original_ids if i not in live]
        retained = [i for i in self.original_ids if i in live]
        subsets = dict(subsets or {})
        if forgotten:
            subsets["forgotten"] = forgotten
            if retained:
                subsets["retained"] = retained
        t0 = time.perf_counter()
        report = audit_membership(self.sisa.ensemble().predict_proba, self.original_train, self.non_members,
                                  config=self.config.audit, reference_predicts=self.references,
                                  member_subsets=subsets)
        mlflow.log_metrics({**report.metrics(root="final/mia"), "time/final_audit_s": time.perf_counter() - t0})
        mlflow.log_table(report.table(), "audit/final_table.json")
        mlflow.log_text(report.summary(), "audit/final_summary.txt")
        for subset in report.results:
            log_figure(plot_roc_curves(report.roc_curves(subset), f"Membership inference ROC ({subset} members)"),
                       f"figures/roc_{subset}.png")
        print(report.summary())
        return report

    def evaluate_and_audit(self, iteration: int, timings: dict[str, float], unlearn_info: dict) -> dict:
        """Accuracy, fairness, bias and the membership-inference audit of the current ensemble; logged at
        ``step = iteration`` (once), with the audit table and summary under ``iterations/<iteration>/``."""
        ensemble = self.sisa.ensemble()
        current = self.current()
        fairness, retain_acc = evaluate_ensemble(ensemble, self.test, current)
        bias_now = measure_bias(current.manifest, self.target.priors())
        live = set(self.sisa.plan.live_ids())
        forgotten = [i for i in self.original_ids if i not in live]
        retained = [i for i in self.original_ids if i in live]
        subsets = {}
        if forgotten:
            subsets["forgotten"] = forgotten
            if retained:
                subsets["retained"] = retained
        t0 = time.perf_counter()
        report = audit_membership(ensemble.predict_proba, self.original_train, self.non_members,
                                  config=self.iteration_audit_config(), reference_predicts=self.references,
                                  member_subsets=subsets)
        timings["time/audit_s"] = time.perf_counter() - t0
        metrics = {**fairness.metrics(), "acc/retain": retain_acc, **bias_now.as_metrics(),
                   "data/original_fraction": len(retained) / max(len(current), 1),
                   "data/forgotten_fraction": len(forgotten) / len(self.original_ids),
                   "data/size": len(current), **timings, **unlearn_info, **report.metrics()}
        log_metrics_once(metrics, step=iteration)
        folder = f"iterations/{iteration:02d}"
        mlflow.log_table(report.table(), f"{folder}/audit_table.json")
        mlflow.log_text(report.summary(), f"{folder}/audit_summary.txt")
        print(f"iteration {iteration}: acc/test {fairness.accuracy:.4f}, acc/retain {retain_acc:.4f}, worst class "
              f"{fairness.worst_class:.4f}, superclass gap {fairness.superclass_gap:.4f}, originals left "
              f"{len(retained)}, mia/max_success {report.max_success():.4f}, {sum(timings.values()):.0f} s")
        return {"iteration": iteration, "report": report, "fairness": fairness, "metrics": metrics}

    def publish(self, outcome: dict, final_report, data_md5: str, bias_before, bias_after, history: list[dict],
                generator_info: dict, state_dir: Path, run_id: str, extra_tags: dict | None = None):
        """Log the ensemble (pyfunc + ONNX, parity checked) and the model card, then apply the registry gate to
        the final audit (``final_report``) and the test accuracy. Returns (gate decision, version or None)."""
        metrics = {**outcome["metrics"], "mia/max_success": final_report.max_success()}
        gate = self.config.gate
        decision = evaluate_gate(metrics["mia/max_success"], metrics["acc/test"], gate.mia_threshold,
                                 gate.min_accuracy)
        logged = log_classifier(self.sisa.ensemble(), self.test.images)
        card = render_model_card(
            model_name=gate.model_name, data_md5=data_md5, code_version=git_commit(), bias_before=bias_before,
            bias_after=bias_after, history=history, final_metrics=metrics, audit_summary=final_report.summary(),
            generator_info=generator_info, decision=decision, parameters=asdict(self.config),
            onnx_max_abs_diff=logged.onnx_max_abs_diff)
        mlflow.log_text(card, "model_card.md")
        now = f"{time.time():.0f}"
        tags = {"data_md5": data_md5, "audit_data_md5": data_md5, "audit_time": now, "data_time": now,
                "git_commit": git_commit(), "run_id": run_id, "mia_max_success": f"{metrics['mia/max_success']:.4f}",
                "acc_test": f"{metrics['acc/test']:.4f}",
                "forgotten_originals": str(len(self.original_ids) - len(self.live_originals())),
                "state_dir": str(state_dir.relative_to(PROJECT_ROOT) if state_dir.is_relative_to(PROJECT_ROOT)
                                 else state_dir),
                "generator_run_id": str(generator_info.get("run_id")), **(extra_tags or {})}
        return decision, register_if_passed(logged, decision, gate.model_name, tags, card)


def history_row(outcome: dict) -> dict:
    metrics = outcome["metrics"]
    row = {"iteration": outcome["iteration"], "acc_retain": metrics["acc/retain"], "acc_test": metrics["acc/test"],
           "acc_worst_class": metrics["acc/worst_class"], "forgotten_fraction": metrics["data/forgotten_fraction"],
           "original_fraction": metrics["data/original_fraction"],
           "seconds": sum(v for k, v in metrics.items() if k.startswith("time/")),
           "max_success": metrics["mia/max_success"]}
    for attack, result in outcome["report"].results["all"].items():
        row[attack] = result.estimates["success"].value
    return row


