"""Entry point ``main``: Algorithm 2 end to end, in one parent MLflow run with a child run per step.

    prepare -> validate -> train or reuse the generator -> augment to balance (Alg. 1)
    -> train SISA shards on the biased S (baseline) and on the balanced S*
    -> iterate: forget originals per shard (SISA unlearning) -> replenish with synthetic samples -> retrain the
       stale shards -> evaluate (accuracy, fairness, bias) -> audit (membership inference)
       until `iterations`, no originals left, or every attack at chance for two iterations in a row
    -> register the aggregated classifier through the gate (pyfunc + ONNX, alias `candidate`) with a model card.

Per-iteration metrics go to the parent run with step = iteration. The state of the loop (SISA plan and
checkpoints, synthetic samples, progress) lives in ``outputs/<config hash>/`` and is written after every
iteration, so ``--resume true`` continues a crashed run from its last finished iteration, in the same MLflow run.

Run: ``mlflow run . -P forget_rate=0.1 --env-manager local --experiment-name fairforget-fashion_mnist``
(``make run`` does exactly that), or ``python -m pipelines.main --forget-rate 0.1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
from tqdm.auto import tqdm

from components.augment import AugmentConfig, replenish
from components.data import DataConfig
from components.dataset import DataError, Dataset, load_dataset, save_dataset
from components.fairness import evaluate_predictions
from components.gate import evaluate_gate
from components.generator.config import GeneratorConfig
from components.mia import AuditConfig
from components.mia.protocol import audit_membership, split_audit_pool
from components.mia.reference import train_reference_models
from components.model_card import render_model_card
from components.report import plot_roc_curves
from components.bias import measure_bias
from components.plots import plot_attack_vs_forgotten, plot_confusion, plot_distributions, plot_iterations
from components.sisa.model import SisaConfig, SisaModel
from components.sisa.unlearn import FORGET_ORDERS
from components.training import accuracy
from components.versioning import config_hash
from pipelines.augment import run_augment
from pipelines.data_steps import (BalanceConfig, _add_balance_args, _add_data_args, balance_config_from_args,
                                  data_config_from_args, int_arg, run_prepare, run_validate)
from pipelines.registry import log_classifier, register_if_passed
from pipelines.tracking import (PROJECT_ROOT, configure_tracking, git_commit, log_data_version, log_figure,
                                step_run)
from pipelines.train_generator import get_or_train_generator, str2bool

log = logging.getLogger("fairforget")
PROGRESS_FILE = "progress.json"
CONFIG_FILE = "pipeline.json"


@dataclass(frozen=True)
class LoopConfig:
    """Algorithm 2's own knobs."""

    forget_rate: float = 0.1  # fraction of the ORIGINAL records forgotten per iteration (all shards together)
    iterations: int = 10
    forget_order: str = "random"  # or last_slice_first (cheaper for SISA)
    iteration_audit_size: int | None = 1000  # members (and as many non-members) per iteration; final audit: all
    convergence_patience: int = 2  # stop after this many iterations in a row with every attack at chance

    def validate(self) -> None:
        if not 0.0 < self.forget_rate <= 1.0:
            raise ValueError(f"forget_rate must lie in (0, 1], got {self.forget_rate}: it is the fraction of the "
                             "original records forgotten per iteration")
        if self.iteration_audit_size is not None and self.iteration_audit_size < 2:
            raise ValueError(f"iteration_audit_size must be >= 2 (or 0 for all), got {self.iteration_audit_size}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.forget_order not in FORGET_ORDERS:
            raise ValueError(f"unknown forget_order {self.forget_order!r}; known: {', '.join(FORGET_ORDERS)}")


@dataclass(frozen=True)
class GateConfig:
    model_name: str = "fairforget-classifier"
    mia_threshold: float = 0.55
    min_accuracy: float = 0.7


@dataclass(frozen=True)
class PipelineConfig:
    """Every parameter of the ``main`` entry point, resolved; logged with the parent run."""

    data: DataConfig = field(default_factory=DataConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sisa: SisaConfig = field(default_factory=SisaConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    retrain_generator: bool = False
    prepare: bool = True  # False: use the data set already in data_dir as it is (e.g. one pulled with DVC)
    data_dir: str = "data"
    outputs_dir: str = "outputs"

    def validate(self) -> None:
        self.data.validate()
        self.balance.validate()
        self.generator.validate()
        self.augment.validate()
        self.sisa.validate()
        self.audit.validate()
        self.loop.validate()

    def state_key(self) -> str:
        """The hash naming this run's state folder: everything that changes results (not executors or paths)."""
        record = asdict(self)
        for volatile in ("retrain_generator", "data_dir", "outputs_dir", "prepare"):
            record.pop(volatile)
        for volatile in ("executor", "max_workers", "ray_address", "progress"):
            record["sisa"].pop(volatile)
        record["gate"].pop("model_name")
        return config_hash(record)


def _path(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else PROJECT_ROOT / path


def _write_json_atomic(path: Path, obj) -> None:
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
        _write_json_atomic(folder / PROGRESS_FILE, asdict(self))

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
    from components.dataset import replace_folder

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
        """Unlearn ``forget`` exactly (SISA), give each shard as many new synthetic samples as it lost
        (Alg. 2 line 5 / ``replenish``), retrain the stale shards. Returns (unlearning metrics, timings).

        Raises ``RuntimeError`` when the exactness audit finds the unlearned shard differs from a retrain.
        """
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        unlearned = self.sisa.unlearn(forget)
        timings["time/unlearn_s"] = time.perf_counter() - t0
        if unlearned.exact is False:
            raise RuntimeError(f"step {step}: the unlearned shard {unlearned.audited_shard} differs from one retrained "
                               "from scratch: unlearning is not exact, stopping")
        t0 = time.perf_counter()
        forgotten_rows = self.sisa.plan.rows_of(forget, allow_deleted=True)
        added = 0
        for shard, count in forgotten_rows.groupby("shard").size().items():
            new = replenish(self.current(), int(count), self.generator, self.target, seed=seed_base + int(shard),
                            guidance_scale=self.config.augment.guidance_scale)
            self.sisa.add(new, shard_of=[int(shard)] * len(new))
            self.synthetic = self.synthetic.concat(new)
            added += len(new)
        timings["time/augment_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.sisa.train()
        timings["time/train_s"] = time.perf_counter() - t0
        save_dataset(self.synthetic, self.synthetic_dir)
        info = {"unlearn/points": unlearned.points,
                "unlearn/exact": float(unlearned.exact) if unlearned.exact is not None else float("nan"),
                "unlearn/shards_retrained": len(unlearned.shards_retrained),
                "unlearn/slices_retrained": unlearned.slices_retrained, "augment/replenished": added}
        return info, timings

    def iteration_audit_config(self) -> AuditConfig:
        """The per-iteration audit: ``iteration_audit_size`` members and non-members, TPR at 1% FPR only (0.1%
        needs >= 1000 evaluation non-members); the final audit uses every record and the full config."""
        size = self.config.loop.iteration_audit_size
        if size is None or size >= min(len(self.original_train), len(self.non_members)):
            return self.config.audit
        levels = tuple(level for level in self.config.audit.fpr_levels
                       if level * size * (1 - self.config.audit.calibration_fraction) >= 1)
        return dataclasses.replace(self.config.audit, sample_size=size, fpr_levels=levels or (0.1,))

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


def run_pipeline(config: PipelineConfig, resume: bool = False) -> dict:
    """Run Algorithm 2 end to end (see the module docstring); return a summary dict."""
    config.validate()
    configure_tracking()
    data_dir = _path(config.data_dir)
    state_dir = _path(config.outputs_dir) / config.state_key()
    state = LoopState.load(state_dir) if resume else None
    if resume and state is None:
        log.info("resume: no saved state for this config in %s; starting from the beginning", state_dir)
    if state is None and state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(state_dir / CONFIG_FILE, asdict(config))
    if state is not None and state.finished:
        print(f"resume: the run {state.parent_run_id} for this config already finished; nothing to do")
        return {"run_id": state.parent_run_id, "resumed": True, "finished": True}

    started = time.perf_counter()
    fresh = state is None
    run_kwargs = {"run_id": state.parent_run_id} if state else {}
    if state:
        print(f"resume: continuing run {state.parent_run_id} after iteration {state.iteration}")
        os.environ.pop("MLFLOW_RUN_ID", None)
        mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(state.parent_run_id).info.experiment_id)
        parent_cm = mlflow.start_run(**run_kwargs)
    else:
        parent_cm = step_run("main", {"pipeline": asdict(config)}, config.data.dataset, run_name="fairforget")
    with parent_cm as parent:
        if state is None:
            state = LoopState(parent.info.run_id)
            mlflow.set_tag("state_key", config.state_key())

        # ---- prepare, validate ------------------------------------------------------------------------------
        if not config.prepare:
            load_dataset(data_dir)  # fails clearly when the folder holds no data set
            log.info("prepare: skipped; using the data set in %s as it is", data_dir)
        elif _data_is_current(data_dir, config.data):
            log.info("prepare: %s already holds the data set for this config; reusing it", data_dir)
        else:
            run_prepare(config.data, data_dir)
        data_md5 = log_data_version(data_dir)
        validated = run_validate(config.balance, data_dir, config.data.dataset, seed=config.data.seed)
        dataset = load_dataset(data_dir)
        original_train, test = dataset.split("train"), dataset.split("test")
        reference_half, non_members = split_audit_pool(dataset.split("audit"), seed=config.audit.seed)

        # ---- generator and Algorithm 1 ----------------------------------------------------------------------
        t0 = time.perf_counter()
        generator, generator_info = get_or_train_generator(dataset, data_md5, config.generator,
                                                           retrain=config.retrain_generator,
                                                           dataset_name=config.data.dataset, data_dir=data_dir)
        target = validated.target
        augmented_dir = state_dir / "augmented"
        if augmented_dir.is_dir():
            augmented = load_dataset(augmented_dir)
            log.info("augment: reusing the balanced data set of this run (%s)", augmented_dir)
            after = measure_bias(augmented.split("train").manifest, target.priors())
        else:
            result = run_augment(dataset, generator, config.balance.attributes, config.augment, augmented_dir,
                                 prior=config.balance.prior, structure=config.balance.structure, data_dir=data_dir,
                                 data_md5=data_md5, dataset_name=config.data.dataset)
            augmented, after = result.dataset, result.after
        augment_seconds = time.perf_counter() - t0
        initial_synthetic = augmented.split("train").select(augmented.split("train").manifest["origin"] == "synthetic")
        if fresh:
            mlflow.log_metrics({**{f"debiased/{k}": v for k, v in after.as_metrics().items()},
                                "time/augment_s": augment_seconds, "data/synthetic_initial": len(initial_synthetic)})
            log_figure(plot_distributions(validated.bias, "Before augmentation (paper Fig. 6)"),
                              "figures/distribution_before.png")
            log_figure(plot_distributions(after, "After augmentation (paper Fig. 8)"),
                              "figures/distribution_after.png")

        # ---- SISA: the biased baseline and the debiased model ----------------------------------------------
        sisa_config = config.sisa
        if fresh:
            with step_run("train_biased_baseline", {"sisa": sisa_config.as_dict()}, config.data.dataset, data_dir):
                baseline = SisaModel.create(original_train, sisa_config, state_dir / "sisa_biased")
                baseline.train()
                before_report, before_retain = evaluate_ensemble(baseline.ensemble(), test, original_train)
                mlflow.log_metrics({**before_report.metrics(), "acc/retain": before_retain})
            shutil.rmtree(state_dir / "sisa_biased", ignore_errors=True)
            log_metrics_once({f"before/{k}": v for k, v in before_report.metrics().items()}, step=0)
            log_figure(plot_confusion(before_report.confusion, test.class_names,
                                             "Trained on the biased data (paper Fig. 7)"),
                              "figures/confusion_biased.png")
            state.history.append({"stage": "biased", **before_report.metrics()})

        synthetic_dir = state_dir / "synthetic"
        sisa_dir = state_dir / "sisa"
        if fresh:
            t0 = time.perf_counter()
            sisa = SisaModel.create(augmented.split("train"), sisa_config, sisa_dir)
            sisa.train()
            save_dataset(initial_synthetic, synthetic_dir)
            train_seconds = time.perf_counter() - t0
        else:
            restore_state(state_dir, state.iteration)
            synthetic = load_dataset(synthetic_dir)
            sisa = SisaModel.load(sisa_dir, original_train.concat(synthetic), executor=sisa_config.executor,
                                  max_workers=sisa_config.max_workers, ray_address=sisa_config.ray_address)
            # Checkpoints the dead step pruned are rebuilt (deterministically: the same weights as before).
            rebuilt = sisa.train()
            if rebuilt.shards_trained:
                log.info("resume: retrained shards %s whose checkpoints the interrupted step had removed",
                         rebuilt.shards_trained)
            train_seconds = 0.0
        synthetic = load_dataset(synthetic_dir)
        references = train_reference_models(reference_half, num_models=1, train_config=sisa_config.train,
                                            model_name=sisa_config.classifier, seed=config.audit.seed)
        loop = ForgettingLoop(config, original_train, test, non_members, references, target, generator, sisa,
                              synthetic, synthetic_dir)
        original_ids = loop.original_ids

        if fresh:
            outcome = loop.evaluate_and_audit(0, {"time/train_s": train_seconds, "time/augment_s": augment_seconds},
                                              {"unlearn/points": 0})
            log_figure(plot_confusion(outcome["fairness"].confusion, test.class_names,
                                             "Trained on the debiased data (paper Fig. 9)"),
                              "figures/confusion_debiased.png")
            state.history.append(_history_row(outcome))
            commit_iteration(state, state_dir)
        else:
            outcome = None

        # ---- Algorithm 2 ------------------------------------------------------------------------------------
        per_shard = max(1, round(config.loop.forget_rate * len(original_ids) / sisa_config.num_shards))
        iterations = range(state.iteration + 1, config.loop.iterations + 1)
        for iteration in tqdm(iterations, desc="Algorithm 2", disable=not sys.stderr.isatty()):
            live_originals = loop.live_originals()
            if not live_originals:
                print("converged: no original records left")
                break
            forget = sisa.sample_forget_set(live_originals, per_shard, config.loop.forget_order, seed=iteration)
            unlearn_info, timings = loop.forget_and_replenish(forget, seed_base=iteration * 1000, step=iteration)
            outcome = loop.evaluate_and_audit(iteration, timings, unlearn_info)
            state.history.append(_history_row(outcome))
            at_chance = outcome["report"].indistinguishable("all")
            state.at_chance_streak = state.at_chance_streak + 1 if at_chance else 0
            state.iteration = iteration
            commit_iteration(state, state_dir)
            if state.at_chance_streak >= config.loop.convergence_patience:
                print(f"converged: every attack at chance for {state.at_chance_streak} iterations in a row")
                break

        # ---- final audit, figures, registry gate -----------------------------------------------------------
        if outcome is None:  # resumed after the last iteration had finished: recompute the final audit
            outcome = loop.evaluate_and_audit(state.iteration, {}, {})
        history = pd.DataFrame([row for row in state.history if row.get("stage") != "biased"])
        mlflow.log_table(history, "iterations/history.json")
        log_figure(plot_iterations(history), "figures/table_I_iterations.png")
        log_figure(plot_attack_vs_forgotten(history, list(config.audit.attacks)),
                          "figures/attack_vs_forgotten.png")
        final_report = loop.final_audit()
        final_metrics = {**outcome["metrics"], "mia/max_success": final_report.max_success()}
        decision, version = loop.publish(outcome, final_report, data_md5, validated.bias, after, state.history, generator_info,
                                         state_dir, parent.info.run_id)
        state.finished = True
        state.save(state_dir)
        summary = {"run_id": parent.info.run_id, "data_md5": data_md5, "iterations": state.iteration,
                   "acc/test": final_metrics["acc/test"], "acc/worst_class": final_metrics["acc/worst_class"],
                   "mia/max_success": final_metrics["mia/max_success"], "gate": "passed" if decision.passed else
                   "rejected", "registered_version": version, "minutes": (time.perf_counter() - started) / 60}
        mlflow.log_metric("time/total_s", time.perf_counter() - started)
        print("summary: " + "; ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in summary.items()))
        return summary


def pipeline_config_from_dict(record: dict) -> PipelineConfig:
    """Rebuild a ``PipelineConfig`` from ``asdict(config)`` (as stored in ``pipeline.json``)."""
    return _from_dict(PipelineConfig, record)


def _from_dict(cls, record):
    import typing

    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in record:
            continue
        value, hint = record[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            value = _from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


def _history_row(outcome: dict) -> dict:
    metrics = outcome["metrics"]
    row = {"iteration": outcome["iteration"], "acc_retain": metrics["acc/retain"], "acc_test": metrics["acc/test"],
           "acc_worst_class": metrics["acc/worst_class"], "forgotten_fraction": metrics["data/forgotten_fraction"],
           "original_fraction": metrics["data/original_fraction"],
           "seconds": sum(v for k, v in metrics.items() if k.startswith("time/")),
           "max_success": metrics["mia/max_success"]}
    for attack, result in outcome["report"].results["all"].items():
        row[attack] = result.estimates["success"].value
    return row


def _data_is_current(data_dir: Path, config: DataConfig) -> bool:
    try:
        return load_dataset(data_dir).config == config.as_record()
    except DataError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    loop, gate, sisa, audit, gen = LoopConfig(), GateConfig(), SisaConfig(), AuditConfig(), GeneratorConfig()
    parser.add_argument("--forget-rate", type=float, default=loop.forget_rate)
    parser.add_argument("--iterations", type=int_arg, default=loop.iterations)
    parser.add_argument("--forget-order", default=loop.forget_order, choices=list(FORGET_ORDERS))
    parser.add_argument("--shards", type=int_arg, default=sisa.num_shards)
    parser.add_argument("--slices", type=int_arg, default=sisa.num_slices)
    parser.add_argument("--classifier", default=sisa.classifier)
    parser.add_argument("--classifier-weights", default="")
    parser.add_argument("--epochs", type=int_arg, default=sisa.train.epochs)
    parser.add_argument("--aggregation", default=sisa.aggregation)
    parser.add_argument("--max-deletion-fraction", type=float, default=sisa.max_deletion_fraction)
    parser.add_argument("--executor", default=sisa.executor)
    parser.add_argument("--ray-address", default="")
    parser.add_argument("--attacks", default=",".join(audit.attacks))
    parser.add_argument("--iteration-audit-size", type=int_arg, default=loop.iteration_audit_size,
                        help="members audited per iteration (0: all); the final audit always uses all")
    parser.add_argument("--mia-threshold", type=float, default=gate.mia_threshold)
    parser.add_argument("--min-accuracy", type=float, default=gate.min_accuracy)
    parser.add_argument("--model-name", default=gate.model_name)
    parser.add_argument("--guidance-scale", type=float, default=gen.guidance_scale)
    parser.add_argument("--generator-steps", type=int_arg, default=gen.train_steps)
    parser.add_argument("--retrain-generator", type=str2bool, default=False)
    parser.add_argument("--resume", type=str2bool, default=False)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--outputs-dir", default="outputs")
    _add_data_args(parser)
    _add_balance_args(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    base = SisaConfig()
    sisa = dataclasses.replace(
        base, num_shards=args.shards, num_slices=args.slices, classifier=args.classifier,
        weights_path=args.classifier_weights or None, train=dataclasses.replace(base.train, epochs=args.epochs),
        aggregation=args.aggregation, max_deletion_fraction=args.max_deletion_fraction, executor=args.executor,
        ray_address=args.ray_address or None, seed=args.seed)
    balance = balance_config_from_args(args)
    return PipelineConfig(
        data=data_config_from_args(args), balance=balance,
        generator=dataclasses.replace(GeneratorConfig(), guidance_scale=args.guidance_scale,
                                      train_steps=args.generator_steps, seed=args.seed),
        augment=AugmentConfig(rho=balance.rho, guidance_scale=args.guidance_scale, seed=args.seed),
        sisa=sisa,
        audit=dataclasses.replace(AuditConfig(), attacks=tuple(a.strip() for a in args.attacks.split(",")
                                                               if a.strip()), seed=args.seed),
        loop=LoopConfig(forget_rate=args.forget_rate, iterations=args.iterations, forget_order=args.forget_order,
                        iteration_audit_size=args.iteration_audit_size or None),
        gate=GateConfig(args.model_name, args.mia_threshold, args.min_accuracy),
        retrain_generator=args.retrain_generator, data_dir=args.data_dir, outputs_dir=args.outputs_dir)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "alembic", "urllib3", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        run_pipeline(config_from_args(args), resume=args.resume)
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
