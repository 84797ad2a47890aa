"""Entry point ``main``: Algorithm 2 end to end, in one parent MLflow run with a child run per step.

    prepare -> validate -> train or reuse the generator -> augment to balance (Alg. 1)
    -> train SISA shards on the biased S (baseline) and on the balanced S*
    -> iterate: forget originals per shard (SISA unlearning) -> replenish with synthetic samples -> retrain the
       stale shards -> evaluate (accuracy, fairness, bias) -> audit (membership inference)
       until `iterations`, no originals left, or the retained originals certified indistinguishable in an audit
       that detected the canaries (components.forgetting)
    -> register the aggregated classifier through the gate (the final audit certifies retained and forgotten
       originals; pyfunc + ONNX, alias `candidate`) with a model card.

Per-iteration metrics go to the parent run with step = iteration. The state of the loop (SISA plan and
checkpoints, synthetic samples, progress) lives in ``outputs/<config hash>/<run id>/`` and is written after every
iteration, so ``--resume true`` continues a crashed run from its last finished iteration, in the same MLflow run.

Run: ``mlflow run . -P forget_rate=0.1 --env-manager local --experiment-name fairforget-fashion_mnist``
(``make run`` does exactly that), or ``python -m fairforget.pipelines.main --forget-rate 0.1``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from fairforget.components import names
from fairforget.components.atomic import write_json_atomically
from fairforget.components.bias import BiasReport, measure_bias, measure_dependence
from fairforget.components.canaries import CanarySet, with_canaries
from fairforget.components.data import DataConfig
from fairforget.components.dataset import DataError, Dataset, load_dataset, save_dataset
from fairforget.components.forgetting import (
    IterationOutcome,
    check_schedule_capacity,
    evaluate_model,
    shard_fit_accuracies,
)
from fairforget.components.gate import EXACTNESS_UNVERIFIED, FINAL_EXACTNESS_STAGE, exactness_verdict
from fairforget.components.ledger import without_ledger_record
from fairforget.components.locks import data_lock, exclusive
from fairforget.components.run_state import CONFIG_FILE, PROGRESS_FILE, LoopState, commit_iteration, restore_state
from fairforget.components.plots import (
    plot_attack_vs_forgotten,
    plot_certification,
    plot_confusion,
    plot_distributions,
    plot_iterations,
)
from fairforget.components.sisa.model import SisaModel
from fairforget.pipelines.augment import log_dependence, run_augment
from fairforget.pipelines.config import PipelineConfig, build_parser, config_from_args
from fairforget.pipelines.data_steps import ValidationOutcome, run_prepare, run_validate
from fairforget.pipelines.ledger_mirror import checked_ledger_ids, ledger_source
from fairforget.pipelines.faults import fault_point
from fairforget.pipelines.loop import (
    audit_pool,
    build_loop,
    effective_policy,
    final_audit,
    log_metrics_once,
    log_outcome,
    publish,
    verify_exactness,
)
from fairforget.pipelines.tracking import (
    start_process,
    configure_tracking,
    log_data_version,
    log_figure,
    project_path,
    run_cli,
    step_run,
)
from fairforget.pipelines.train_generator import get_or_train_generator

log = logging.getLogger("fairforget")


def latest_unfinished_state(config_dir: Path) -> Path | None:
    """The most recently committed state folder under ``config_dir`` whose run has not finished, if any."""
    candidates = []
    for progress in config_dir.glob(f"*/{PROGRESS_FILE}"):
        state = LoopState.load(progress.parent)
        if state is not None and not state.finished:
            candidates.append((progress.stat().st_mtime, progress.parent))
    return max(candidates)[1] if candidates else None


@dataclass
class Balanced:
    """What Algorithm 1 produced for this run: the balanced data set S*, its bias and the generator."""

    dataset: Dataset
    bias_after: BiasReport
    generator: object
    generator_info: dict
    seconds: float

    @property
    def initial_synthetic(self) -> Dataset:
        train = self.dataset.split("train")
        return train.select(train.manifest["origin"] == "synthetic")


def prepare_and_validate(config: PipelineConfig, data_dir: Path) -> tuple[str, ValidationOutcome, Dataset]:
    """Steps prepare (unless the folder already holds this data set) and validate; returns (md5, outcome, data)."""
    if not config.prepare:
        held = load_dataset(data_dir)  # fails clearly when the folder holds no data set
        deleted = checked_ledger_ids(data_dir, ledger_source(held.config)) & set(held.ids.astype(str))
        if deleted:
            raise DataError(f"{data_dir} holds {len(deleted)} records deleted on request (an older version checked "
                            "out?): run with prepare (the default) to rewrite it without them")
        log.info("prepare: skipped; using the data set in %s as it is", data_dir)
    elif _data_is_current(data_dir, config.data):
        log.info("prepare: %s already holds the data set for this config; reusing it", data_dir)
    else:
        run_prepare(config.data, data_dir)
    data_md5 = log_data_version(data_dir)
    validated = run_validate(config.balance, data_dir, config.data.dataset, seed=config.data.seed)
    return data_md5, validated, load_dataset(data_dir)


def generate_balanced(config: PipelineConfig, dataset: Dataset, data_md5: str, validated: ValidationOutcome,
                      data_dir: Path, state_dir: Path, canaries: CanarySet | None = None) -> Balanced:
    """Steps train_generator (or reuse; half the ``canaries`` train it too) and augment (Algorithm 1), reusing this
    run's augmented set on resume."""
    start = time.perf_counter()
    generator, generator_info = get_or_train_generator(dataset, data_md5, config.generator,
                                                       retrain=config.retrain_generator,
                                                       dataset_name=config.data.dataset, data_dir=data_dir,
                                                       canaries=canaries)
    augmented_dir = state_dir / "augmented"
    if augmented_dir.is_dir():
        augmented = load_dataset(augmented_dir)
        log.info("augment: reusing the balanced data set of this run (%s)", augmented_dir)
        after = measure_bias(augmented.split("train").manifest, validated.target.priors())
    else:
        result = run_augment(dataset, generator, config.balance.attributes, config.augment, augmented_dir,
                             prior=config.balance.prior, structure=config.balance.structure, data_dir=data_dir,
                             data_md5=data_md5, dataset_name=config.data.dataset)
        augmented, after = result.dataset, result.after
    return Balanced(augmented, after, generator, generator_info, time.perf_counter() - start)


def train_biased_baseline(config: PipelineConfig, train: Dataset, test: Dataset, state_dir: Path, data_dir: Path):
    """The same SISA ensemble trained on the biased S (with the canaries): the "before" of every comparison."""
    with step_run("train_biased_baseline", {"sisa": config.sisa.to_dict()}, config.data.dataset, data_dir):
        baseline = SisaModel.create(train, config.sisa, state_dir / "sisa_biased")
        baseline.train()
        report = evaluate_model(baseline.ensemble().predict_proba, test)
        fit = shard_fit_accuracies(baseline, train)
        mlflow.log_metrics({**report.metrics(), names.SHARD_FIT_MIN: min(fit),
                            names.SHARD_FIT_MEAN: sum(fit) / len(fit)})
    shutil.rmtree(state_dir / "sisa_biased", ignore_errors=True)
    return report


def run_pipeline(config: PipelineConfig, resume: bool = False) -> dict:
    """Run Algorithm 2 end to end (see the module docstring); return a summary dict. One run per data folder at a
    time: a second one gets ``Busy`` at once."""
    config.validate()
    effective_policy(config)  # a missing or malformed policy fails now, not after training
    configure_tracking()
    data_dir = project_path(config.data_dir)
    finish_interrupted_deletion(config, data_dir)
    with exclusive(data_lock(data_dir), f"the data folder {data_dir}"):
        return _run_pipeline(config, resume, data_dir)


def finish_interrupted_deletion(config: PipelineConfig, data_dir: Path) -> None:
    """A deletion request killed in its commit (pipelines/forget.py) is finished, or rolled back, before this run
    reads the data: otherwise it could train on a record the request was deleting."""
    from fairforget.pipelines.forget import finish_open_commit, journal_of

    outputs_dir = project_path(config.outputs_dir)
    journal = journal_of(outputs_dir, config.gate.model_name)
    if journal.read() is None:
        return
    with exclusive(outputs_dir / ".locks" / f"{config.gate.model_name}.lock", f"the model {config.gate.model_name}"), \
            exclusive(data_lock(data_dir), f"the data folder {data_dir}"):
        finish_open_commit(journal)


def _run_pipeline(config: PipelineConfig, resume: bool, data_dir: Path) -> dict:
    config_dir = project_path(config.outputs_dir) / config.state_key()
    state_dir = latest_unfinished_state(config_dir) if resume else None
    state = LoopState.load(state_dir) if state_dir is not None else None
    if resume and state is None:
        log.info("resume: no unfinished run of this config in %s; starting from the beginning", config_dir)

    started = time.perf_counter()
    fresh = state is None
    if state:
        print(f"resume: continuing run {state.parent_run_id} after iteration {state.iteration}")
        os.environ.pop("MLFLOW_RUN_ID", None)
        mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(state.parent_run_id).info.experiment_id)
        parent_cm = mlflow.start_run(run_id=state.parent_run_id)
    else:
        parent_cm = step_run("main", {"pipeline": config.to_dict()}, config.data.dataset, run_name="fairforget")
    with parent_cm as parent:
        if state is None:
            # Each run keeps its own state folder, so a registered version's SISA state is never overwritten.
            state = LoopState(parent.info.run_id)
            state_dir = config_dir / parent.info.run_id
            state_dir.mkdir(parents=True, exist_ok=True)
            mlflow.set_tag("state_key", config.state_key())
        write_json_atomically(state_dir / CONFIG_FILE, config.to_dict())

        data_md5, validated, dataset = prepare_and_validate(config, data_dir)
        original_train, test = dataset.split("train"), dataset.split("test")
        instruments = audit_pool(dataset, config)
        balanced = generate_balanced(config, dataset, data_md5, validated, data_dir, state_dir,
                                     canaries=instruments.canaries)
        canary_count = len(instruments.canaries) if instruments.canaries else 0
        check_schedule_capacity(forget_rate=config.loop.forget_rate, forgettable=len(original_train) + canary_count,
                                total=len(balanced.dataset.split("train")) + canary_count,
                                num_shards=config.sisa.num_shards,
                                max_deletion_fraction=config.sisa.max_deletion_fraction)
        if fresh:
            _log_balance(validated.bias, balanced)
            mlflow.log_metric(names.CANARIES_INSERTED, len(instruments.canaries) if instruments.canaries else 0)
            before = train_biased_baseline(config, with_canaries(original_train, instruments.canaries), test,
                                           state_dir, data_dir)
            log_metrics_once({f"{names.BEFORE_PREFIX}/{k}": v for k, v in before.metrics().items()}, step=0)
            log_figure(plot_confusion(before.confusion, test.class_names, "Trained on the biased data (paper Fig. 7)"),
                       "figures/confusion_biased.png")
            state.history.append({"stage": "biased", **before.metrics()})

        # SISA on S* (with the canaries): trained fresh, or restored from the last committed iteration.
        synthetic_dir, sisa_dir = state_dir / "synthetic", state_dir / "sisa"
        start = time.perf_counter()
        if fresh:
            sisa = SisaModel.create(with_canaries(balanced.dataset.split("train"), instruments.canaries), config.sisa,
                                    sisa_dir)
            sisa.train()
            save_dataset(balanced.initial_synthetic, synthetic_dir)
        else:
            restore_state(state_dir, state.iteration)
            everything = with_canaries(original_train, instruments.canaries).concat(load_dataset(synthetic_dir))
            sisa = SisaModel.load(sisa_dir, everything, executor=config.sisa.executor,
                                  max_workers=config.sisa.max_workers, ray_address=config.sisa.ray_address)
            # Checkpoints the dead step pruned are rebuilt (deterministically: the same weights as before).
            rebuilt = sisa.train()
            if rebuilt.shards_trained:
                log.info("resume: retrained shards %s whose checkpoints the interrupted step had removed",
                         rebuilt.shards_trained)
        train_seconds = time.perf_counter() - start
        loop = build_loop(config, dataset, sisa=sisa, synthetic=load_dataset(synthetic_dir),
                          generator=balanced.generator, target=validated.target, instruments=instruments,
                          state_dir=state_dir)

        outcome: IterationOutcome | None = None
        if fresh:
            outcome = loop.evaluate(0)
            fit = shard_fit_accuracies(sisa, with_canaries(balanced.dataset.split("train"), instruments.canaries))
            log_outcome(outcome, loop.tolerance, {names.TIME_TRAIN: train_seconds, names.TIME_AUGMENT: balanced.seconds,
                                  names.SHARD_FIT_MIN: min(fit), names.SHARD_FIT_MEAN: sum(fit) / len(fit)})
            log_figure(plot_confusion(outcome.fairness.confusion, test.class_names,
                                      "Trained on the debiased data (paper Fig. 9)"), "figures/confusion_debiased.png")
            state.history.append(outcome.history_row(loop.tolerance))
            commit_iteration(state, state_dir, loop.synthetic)

        # Algorithm 2: the loop itself lives in components.forgetting; here each iteration is logged and committed.
        def on_iteration(done: IterationOutcome) -> None:
            log_outcome(done, loop.tolerance)
            state.history.append(done.history_row(loop.tolerance))
            state.iteration, state.converged_streak = done.iteration, done.converged_streak
            commit_iteration(state, state_dir, loop.synthetic)

        result = loop.run(after_iteration=state.iteration, converged_streak=state.converged_streak,
                          on_iteration=on_iteration)
        print(f"Algorithm 2 stopped: {result.stopped_because}")
        outcome = result.outcomes[-1] if result.outcomes else outcome
        if outcome is None:  # resumed after the last iteration had finished: measure the model again
            outcome = loop.evaluate(state.iteration, converged_streak=state.converged_streak)

        if exactness_verdict(state.history) == EXACTNESS_UNVERIFIED and config.sisa.audit_exactness:
            verify_exactness(loop, state, state_dir)
        history = pd.DataFrame([row for row in state.history if row.get("stage") not in ("biased",
                                                                                         FINAL_EXACTNESS_STAGE)])
        mlflow.log_table(history, "iterations/history.json")
        log_figure(plot_iterations(history), "figures/table_I_iterations.png")
        log_figure(plot_attack_vs_forgotten(history, list(config.audit.attacks)), "figures/attack_vs_forgotten.png")
        log_figure(plot_certification(history, loop.tolerance.max_auc_excess, loop.tolerance.max_tpr_at_1pct_fpr),
                   "figures/certification.png")
        final = final_audit(loop, last=outcome)
        decision, version = publish(loop, config, outcome, final, data_md5=data_md5, bias_before=validated.bias,
                                    bias_after=balanced.bias_after, history=state.history,
                                    generator_info=balanced.generator_info, state_dir=state_dir,
                                    run_id=parent.info.run_id)
        fault_point("publish:registered")
        state.finished = True
        state.save(state_dir)
        summary = {"run_id": parent.info.run_id, "data_md5": data_md5, "iterations": state.iteration,
                   names.ACC_TEST: outcome.fairness.accuracy, names.ACC_WORST_CLASS: outcome.fairness.worst_class,
                   names.MIA_MAX_SUCCESS: final.report.max_success(),
                   **{f"{held}_originals": certificate.verdict(loop.tolerance)
                      for held, certificate in final.certificates.items()},
                   "canary_power": final.canaries.power if final.canaries else None,
                   "gate": "passed" if decision.passed else "rejected", "registered_version": version,
                   "gate_reason": decision.reason, "minutes": (time.perf_counter() - started) / 60}
        mlflow.log_metric(names.TIME_TOTAL, time.perf_counter() - started)
        print("summary: " + "; ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in summary.items() if k != "gate_reason"))
        if not decision.passed:
            print(f"gate: {decision.reason}")
        return summary


def _log_balance(bias_before: BiasReport, balanced: Balanced) -> None:
    train = balanced.dataset.split("train").manifest
    real = train[train["origin"] != "synthetic"]
    mlflow.log_metrics({**{f"debiased/{k}": v for k, v in balanced.bias_after.as_metrics().items()},
                        names.TIME_AUGMENT: balanced.seconds, names.SYNTHETIC_INITIAL: len(balanced.initial_synthetic),
                        names.SYNTHETIC_TO_REAL: len(balanced.initial_synthetic) / max(len(real), 1)})
    attributes = [a.attribute for a in bias_before.attributes if a.attribute in train.columns]  # not a joint
    before = measure_dependence(real, attributes)
    log_dependence(before, measure_dependence(train, [a.attribute for a in before.attributes]), "figures")
    log_figure(plot_distributions(bias_before, "Before augmentation (paper Fig. 6)"), "figures/distribution_before.png")
    log_figure(plot_distributions(balanced.bias_after, "After augmentation (paper Fig. 8)"),
               "figures/distribution_after.png")


def _data_is_current(data_dir: Path, config: DataConfig) -> bool:
    """The folder holds the data set of ``config`` and none of the records deleted on request."""
    try:
        dataset = load_dataset(data_dir)
    except DataError:
        return False
    deleted = checked_ledger_ids(data_dir, ledger_source(config.stored_record()))
    return (without_ledger_record(dataset.config) == config.stored_record()
            and not deleted & set(dataset.ids.astype(str)))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start_process()
    return run_cli(lambda: run_pipeline(config_from_args(args), resume=args.resume))


if __name__ == "__main__":
    sys.exit(main())
