"""Entry point ``main``: Algorithm 2 end to end, in one parent MLflow run with a child run per step.

    prepare -> validate -> train or reuse the generator -> augment to balance (Alg. 1)
    -> train SISA shards on the biased S (baseline) and on the balanced S*
    -> iterate: forget originals per shard (SISA unlearning) -> replenish with synthetic samples -> retrain the
       stale shards -> evaluate (accuracy, fairness, bias) -> audit (membership inference)
       until `iterations`, no originals left, or every attack at chance for two iterations in a row
    -> register the aggregated classifier through the gate (pyfunc + ONNX, alias `candidate`) with a model card.

Per-iteration metrics go to the parent run with step = iteration. The state of the loop (SISA plan and
checkpoints, synthetic samples, progress) lives in ``outputs/<config hash>/<run id>/`` and is written after every
iteration, so ``--resume true`` continues a crashed run from its last finished iteration, in the same MLflow run.

Run: ``mlflow run . -P forget_rate=0.1 --env-manager local --experiment-name fairforget-fashion_mnist``
(``make run`` does exactly that), or ``python -m pipelines.main --forget-rate 0.1``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import mlflow
import pandas as pd
from tqdm.auto import tqdm

from components.bias import measure_bias
from components.data import DataConfig
from components.dataset import DataError, load_dataset, save_dataset
from components.mia.protocol import split_audit_pool
from components.mia.reference import train_reference_models
from components.plots import plot_attack_vs_forgotten, plot_confusion, plot_distributions, plot_iterations
from components.sisa.model import SisaModel
from pipelines.augment import run_augment
from pipelines.config import PipelineConfig, build_parser, config_from_args
from pipelines.data_steps import run_prepare, run_validate
from pipelines.loop import (CONFIG_FILE, PROGRESS_FILE, ForgettingLoop, LoopState, commit_iteration,
                            evaluate_ensemble, history_row, log_metrics_once, project_path, replenish_seed_base,
                            restore_state, write_json_atomic)
from pipelines.tracking import configure_tracking, log_data_version, log_figure, run_cli, step_run
from pipelines.train_generator import get_or_train_generator

log = logging.getLogger("fairforget")


def latest_unfinished_state(config_dir: Path) -> Path | None:
    """The most recently committed state folder under ``config_dir`` whose run has not finished, if any."""
    candidates = []
    for progress in config_dir.glob(f"*/{PROGRESS_FILE}"):
        state = LoopState.load(progress.parent)
        if state is not None and not state.finished:
            candidates.append((progress.stat().st_mtime, progress.parent))
    return max(candidates)[1] if candidates else None


def run_pipeline(config: PipelineConfig, resume: bool = False) -> dict:
    """Run Algorithm 2 end to end (see the module docstring); return a summary dict."""
    config.validate()
    configure_tracking()
    data_dir = project_path(config.data_dir)
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
        parent_cm = step_run("main", {"pipeline": asdict(config)}, config.data.dataset, run_name="fairforget")
    with parent_cm as parent:
        if state is None:
            # Each run keeps its own state folder, so a registered version's SISA state is never overwritten.
            state = LoopState(parent.info.run_id)
            state_dir = config_dir / parent.info.run_id
            state_dir.mkdir(parents=True, exist_ok=True)
            mlflow.set_tag("state_key", config.state_key())
        write_json_atomic(state_dir / CONFIG_FILE, asdict(config))

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
            state.history.append(history_row(outcome))
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
            unlearn_info, timings = loop.forget_and_replenish(
                forget, seed_base=replenish_seed_base(config.augment.seed, iteration), step=iteration)
            outcome = loop.evaluate_and_audit(iteration, timings, unlearn_info)
            state.history.append(history_row(outcome))
            at_chance = outcome["report"].indistinguishable("all")
            state.at_chance_streak = state.at_chance_streak + 1 if at_chance else 0
            state.iteration = iteration
            commit_iteration(state, state_dir)
            if config.loop.convergence_patience and state.at_chance_streak >= config.loop.convergence_patience:
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


def _data_is_current(data_dir: Path, config: DataConfig) -> bool:
    try:
        return load_dataset(data_dir).config == config.as_record()
    except DataError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "alembic", "urllib3", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run_cli(lambda: run_pipeline(config_from_args(args), resume=args.resume))


if __name__ == "__main__":
    sys.exit(main())
