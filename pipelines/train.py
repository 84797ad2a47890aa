"""Step ``train``: SISA shard models on a data version's train split (the paper's Sec. III-C, Fig. 4).

Run alone: ``python -m fairforget.pipelines.train --data-dir data`` or ``mlflow run . -e train --env-manager local``.
Logs per-shard sizes (``shard/<i>/size``), per-shard and aggregate test accuracy (``acc/shard/<i>/test``,
``acc/test``, ``acc/<superclass>``, ``acc/class/<class>``: the names the loop uses), ``train/shard_fit_accuracy_min``,
``time/train_s``, the stages trained, and the ensemble folder
as the artifact ``ensemble``. The SISA state (plan + content-addressed checkpoints) stays in ``--state-dir`` for
later unlearning; checkpoints already there for the same data and config are reused, not retrained.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow

from fairforget.components import names
from fairforget.components.dataset import Dataset
from fairforget.components.forgetting import evaluate_model, shard_fit_accuracies
from fairforget.components.sisa import SisaConfig, SisaModel
from fairforget.components.training import TrainConfig, accuracy
from fairforget.pipelines.cli import OneLineParser, float_arg, int_arg
from fairforget.pipelines.data_steps import load_current_data
from fairforget.pipelines.tracking import log_json, run_cli, step_run

DEFAULT_STATE_DIR = "artifacts/sisa"


@dataclass
class TrainOutcome:
    model: SisaModel
    metrics: dict[str, float]
    run_id: str


def evaluate_ensemble(model: SisaModel, test: Dataset) -> dict[str, float]:
    """The ensemble's accuracy and fairness on ``test`` (the loop's own names: ``acc/test``, ``acc/<superclass>``,
    ``acc/class/<class>``, ...) and each shard model's test accuracy (``acc/shard/<i>/test``)."""
    ensemble = model.ensemble()
    metrics = evaluate_model(ensemble.predict_proba, test).metrics()
    for shard, proba in enumerate(ensemble.shard_proba(test.images)):
        metrics[f"acc/shard/{shard}/test"] = accuracy(proba, test.labels)
    return metrics


def run_train(config: SisaConfig, data_dir: str | Path = "data", state_dir: str | Path = DEFAULT_STATE_DIR,
              dataset_name: str | None = None) -> TrainOutcome:
    """Train (or bring up to date) the SISA shards on ``data_dir``'s train split inside an MLflow step run."""
    config.validate()
    dataset = load_current_data(data_dir)
    name = dataset_name or dataset.config.get("dataset", "custom")
    step_config = {"sisa": config.to_dict(), "data_dir": str(data_dir), "state_dir": str(state_dir)}
    with step_run("train", step_config, name, data_dir) as run:
        model = SisaModel.create(dataset.split("train"), config, state_dir)
        report = model.train()
        keep = {key for s in range(config.num_shards) for key in model.shard_task_keys(s)}
        model.store.prune(keep)
        metrics = {"time/train_s": report.seconds, "train/shards_trained": float(len(report.shards_trained)),
                   "train/stages_trained": float(report.stages_trained),
                   "train/epochs_per_slice": float(config.stage_epochs())}
        metrics.update({f"shard/{i}/size": float(n) for i, n in enumerate(model.shard_sizes())})
        test = dataset.split("test")
        if len(test):
            metrics.update(evaluate_ensemble(model, test))
        fit = shard_fit_accuracies(model, dataset.split("train"))
        metrics.update({names.SHARD_FIT_MIN: min(fit), names.SHARD_FIT_MEAN: sum(fit) / len(fit)})
        mlflow.log_metrics(metrics)
        mlflow.set_tag("sisa_state_dir", str(Path(state_dir).resolve()))
        log_json({"shard_sizes": model.shard_sizes(), "final_keys": model.final_keys(),
                  "shards": [dataclasses.asdict(r) for r in report.results]}, "sisa/train_report.json")
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifacts(str(model.ensemble().save(Path(tmp) / "ensemble")), "ensemble")
        print(f"train: {config.num_shards} shards x {config.num_slices} slices, sizes {model.shard_sizes()}, "
              f"{report.stages_trained} stages trained in {report.seconds:.1f}s"
              + (f", test accuracy {metrics[names.ACC_TEST]:.4f}" if names.ACC_TEST in metrics else ""))
        return TrainOutcome(model, metrics, run.info.run_id)


def build_parser() -> argparse.ArgumentParser:
    sisa, train = SisaConfig(), TrainConfig()
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    parser.add_argument("--seed", type=int_arg, default=sisa.seed)
    parser.add_argument("--num-shards", type=int_arg, default=sisa.num_shards)
    parser.add_argument("--num-slices", type=int_arg, default=sisa.num_slices)
    parser.add_argument("--classifier", default=sisa.classifier)
    parser.add_argument("--weights-path", default="", help="local state_dict file to start from (optional)")
    parser.add_argument("--epochs", type=int_arg, default=train.epochs)
    parser.add_argument("--batch-size", type=int_arg, default=train.batch_size)
    parser.add_argument("--lr", type=float_arg, default=train.lr)
    parser.add_argument("--optimizer", default=train.optimizer)
    parser.add_argument("--augment", type=int_arg, choices=(0, 1), default=int(train.augment))
    parser.add_argument("--aggregation", default=sisa.aggregation)
    parser.add_argument("--max-deletion-fraction", type=float_arg, default=sisa.max_deletion_fraction)
    parser.add_argument("--executor", default=sisa.executor)
    parser.add_argument("--max-workers", type=int_arg, default=0, help="0 = all cores")
    parser.add_argument("--ray-address", default="", help="existing Ray cluster (empty = local Ray)")
    parser.add_argument("--progress", type=int_arg, choices=(0, 1), default=1)
    return parser


def config_from_args(args: argparse.Namespace) -> SisaConfig:
    train = dataclasses.replace(TrainConfig(), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                optimizer=args.optimizer, augment=bool(args.augment))
    return SisaConfig(num_shards=args.num_shards, num_slices=args.num_slices, seed=args.seed,
                      classifier=args.classifier, weights_path=args.weights_path or None, train=train,
                      aggregation=args.aggregation, max_deletion_fraction=args.max_deletion_fraction,
                      executor=args.executor, max_workers=args.max_workers or None,
                      ray_address=args.ray_address or None, progress=bool(args.progress))


def run(argv: list[str] | None = None) -> TrainOutcome:
    """Parse ``argv``, validate every parameter, then train; returns the outcome (errors raise)."""
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    config.validate()
    return run_train(config, args.data_dir, args.state_dir)


def main(argv: list[str] | None = None) -> int:
    """The command line: a user error is one ``error: ...`` line and exit code 2."""
    return run_cli(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
