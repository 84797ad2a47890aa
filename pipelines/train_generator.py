"""MLflow step ``train_generator``: train (or reuse), evaluate and log the guided diffusion generator.

A finished ``train_generator`` run of the same experiment with the same data md5 and the same generator config
hash is reused (its ``generator/`` artifact folder is downloaded and loaded; the log says so) unless
``--retrain true``. Otherwise the generator trains on the train split, is evaluated (``generator/*`` metrics,
sample grid) and logged twice: as the artifact folder ``generator/`` (what reuse loads) and as an MLflow pyfunc
model ``generator`` (``predict(conditions DataFrame, params={"seed", "guidance_scale"})`` -> uint8 images).

    python -m fairforget.pipelines.train_generator --data-dir data --seed 0 [--retrain true]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import mlflow
import pandas as pd

import fairforget.components as components_package
from fairforget.components.canaries import CanarySet
from fairforget.components.dataset import Dataset
from fairforget.components.generator import Generator, GeneratorConfig, load_generator, train_generator
from fairforget.components.generator.audit import GeneratorAuditConfig, audit_generator_on_splits
from fairforget.components.packaging import package_tree
from fairforget.components.quality import QualityConfig, evaluate_generator
from fairforget.components.versioning import config_hash, dvc_md5_of_folder
from fairforget.pipelines.cli import (
    OneLineParser,
    add_generator_options,
    generator_config_from_options,
    int_arg,
    str2bool,
)
from fairforget.pipelines.data_steps import load_current_data
from fairforget.pipelines.tracking import configure_tracking, log_json, start_process, run_cli, step_run

STEP = "train_generator"
ARTIFACT = "generator"
# the pyfunc is logged from code (this file is stored with the model), never as a pickled Python object
GENERATOR_PYFUNC_CODE = Path(components_package.__file__).resolve().parent / "generator_pyfunc.py"
log = logging.getLogger("fairforget.train_generator")


def generator_config_hash(config: GeneratorConfig) -> str:
    """The hash that decides reuse: training fields of the resolved config (sampling fields excluded)."""
    return config_hash(config.identity_record())


def canaries_hash(canaries: CanarySet | None) -> str:
    """What identifies the canaries a generator also trained on (``CanarySet.for_generator``): their ids, wrong
    labels and source images' ids; ``none`` without canaries. Part of the reuse key."""
    if canaries is None or not len(canaries.for_generator()):
        return "none"
    probes = canaries.for_generator()
    return config_hash({"ids": list(map(str, probes.ids)), "labels": probes.labels.tolist(),
                        "sources": canaries.generator_source_ids()})


def find_generator_run(data_md5: str, config: GeneratorConfig, canaries: CanarySet | None = None) -> Any | None:
    """The newest finished ``train_generator`` run with this data md5, config hash and canaries (``canaries_hash``)
    in any experiment of the store, or None. (``mlflow run`` without ``--experiment-name`` puts a run's steps in the
    ``Default`` experiment, not ``fairforget-<dataset>``; the same data and config make the same generator wherever
    it was logged.)"""
    configure_tracking()
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=(f"tags.step = '{STEP}' and tags.data_md5 = '{data_md5}' and "
                       f"tags.generator_config_hash = '{generator_config_hash(config)}' and "
                       f"tags.generator_canaries = '{canaries_hash(canaries)}' and "
                       "attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    return runs[0] if runs else None


def load_generator_from_run(run_id: str, device: str | None = None) -> Generator:
    """Download and load the ``generator/`` artifact folder of a run. The download goes to a temporary folder that
    is removed once the weights are in memory (each reuse used to leave ~28 MB behind in the temp dir)."""
    with tempfile.TemporaryDirectory(prefix="fairforget-generator-") as tmp:
        folder = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ARTIFACT, dst_path=tmp)
        return load_generator(folder, device=device)


def log_generator_model(generator: Generator, folder: Path) -> None:
    """Log the saved generator folder as a pyfunc model named ``generator``, from code (``generator_pyfunc.py``,
    with the ``fairforget`` package as its code path and pinned requirements): nothing is pickled."""
    import diffusers
    import torch

    example = pd.DataFrame({name: [values[0]] for name, values in zip(generator.space.names, generator.space.values)})
    signature = mlflow.models.infer_signature(example, generator.sample(example, seed=0),
                                              params={"seed": 0, "guidance_scale": -1.0})
    with tempfile.TemporaryDirectory(prefix="fairforget-code-") as tmp:
        mlflow.pyfunc.log_model(
            name=ARTIFACT, python_model=str(GENERATOR_PYFUNC_CODE), artifacts={"generator": str(folder)},
            code_paths=[str(package_tree(tmp))], signature=signature, input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"diffusers=={diffusers.__version__}",
                              f"mlflow=={mlflow.__version__}", "numpy", "pandas", "scipy", "tqdm"],
            model_config={"version": generator.version, "data_md5": generator.data_md5},
        )


def run_generator_audit(generator: Generator, dataset: Dataset, config: GeneratorAuditConfig | None = None,
                        run_id: str | None = None, seen_images: Sequence[str] = ()) -> dict[str, float]:
    """Audit ``generator`` for membership (``components/generator/audit.py``): its training records against
    never-seen ``audit``-split records of the same class mix (``seen_images``, audit images it trained on as
    canaries, left out). Logs the ``generator/mia/*`` metrics, the ROC figure and a summary into the active run, or
    into ``run_id`` (a finished generator run being completed); returns the metrics."""
    report = audit_generator_on_splits(generator, dataset, config, seen_images=seen_images)
    metrics = report.metrics()
    figure = report.figure()
    if run_id is None:
        mlflow.log_metrics(metrics)
        mlflow.log_figure(figure, "generator/mia_roc.png")
        mlflow.log_text(report.summary(), "generator/mia_summary.txt")
    else:
        client = mlflow.MlflowClient()
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.log_figure(run_id, figure, "generator/mia_roc.png")
        client.log_text(run_id, report.summary(), "generator/mia_summary.txt")
    import matplotlib.pyplot as plt

    plt.close(figure)
    print(report.summary(), file=sys.stderr)
    return metrics


def get_or_train_generator(dataset: Dataset, data_md5: str, config: GeneratorConfig | None = None,
                           retrain: bool = False, quality: QualityConfig | None = None,
                           dataset_name: str | None = None, data_dir: str | Path | None = None,
                           evaluate: bool = True, log_model: bool = True,
                           canaries: CanarySet | None = None) -> tuple[Generator, dict]:
    """The generator for this data version, config and canaries: reused from MLflow when one exists (unless
    ``retrain``), else trained, evaluated and logged in a ``train_generator`` run (nested under the active run if
    any). ``canaries``: the run's canaries, whose ``for_generator`` half joins the training images (the generator
    channel's probe) and whose source images stay out of the generator audit's non-members.

    Returns ``(generator, info)`` with ``info`` = {run_id, reused, version, config_hash, data_md5, metrics}.
    """
    config = (config or GeneratorConfig()).resolved()
    quality = quality or QualityConfig(seed=config.seed)
    dataset_name = dataset_name or str(dataset.config.get("dataset", "dataset"))
    chash = generator_config_hash(config)
    probes = canaries.for_generator() if canaries is not None else None
    seen = canaries.generator_source_ids() if canaries is not None else []
    if not retrain:
        run = find_generator_run(data_md5, config, canaries)
        if run is not None:
            generator = load_generator_from_run(run.info.run_id, device=config.device)
            generator.config = replace(generator.config, guidance_scale=config.guidance_scale,
                                       guidance_interval=config.guidance_interval,
                                       sampling_steps=config.sampling_steps,
                                       sample_batch_size=config.sample_batch_size)
            message = (f"reusing generator {generator.version} from run {run.info.run_id} (same data md5 "
                       f"{data_md5} and config hash {chash}); pass retrain=true to train a new one")
            log.info(message)
            print(message, file=sys.stderr)
            if mlflow.active_run() is not None:
                mlflow.set_tags({"generator_reused_from": run.info.run_id, "generator_version": generator.version})
            metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("generator/")}
            if evaluate and "generator/mia/auc" not in metrics:  # a generator trained before the audit existed
                metrics.update(run_generator_audit(generator, dataset, run_id=run.info.run_id, seen_images=seen))
            return generator, {"run_id": run.info.run_id, "reused": True, "version": generator.version,
                               "config_hash": chash, "data_md5": data_md5, "metrics": metrics}

    record = {"generator": config.to_dict(), "quality": quality.to_dict(), "retrain": bool(retrain)}
    with step_run(STEP, record, dataset_name, data_dir) as run:
        mlflow.set_tags({"data_md5": data_md5, "generator_config_hash": chash, "generator_privacy": config.privacy,
                         "generator_canaries": canaries_hash(canaries),
                         "generator_canary_count": str(len(probes) if probes is not None else 0)})
        generator = train_generator(dataset, config=config, data_md5=data_md5, extra_training=probes)
        mlflow.set_tags({"generator_version": generator.version, "generator_precision": generator.config.precision})
        summary = generator.training_summary
        for step, value in enumerate(summary.get("loss_history", [])):
            mlflow.log_metric("generator/train_loss", value, step=(step + 1) * 50)
        mlflow.log_metrics({f"generator/{k}": float(v) for k, v in summary.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
        metrics: dict[str, float] = {}
        if evaluate:
            report = evaluate_generator(generator, dataset, quality)
            metrics = report.as_metrics()
            mlflow.log_metrics(metrics)
            mlflow.log_figure(report.figure, "generator/sample_grid.png")
            log_json({"metrics": report.metrics, "per_class_accuracy": report.per_class_accuracy},
                     "generator/quality.json")
            metrics.update(run_generator_audit(generator, dataset, seen_images=seen))
        metrics.update({f"generator/{k}": float(v) for k, v in summary.items()
                        if k.startswith(("dp_", "public_pretrain_", "pseudo_")) and isinstance(v, (int, float))})
        with tempfile.TemporaryDirectory(prefix="fairforget-generator-") as tmp:
            folder = generator.save(Path(tmp) / ARTIFACT)
            mlflow.log_artifacts(str(folder), ARTIFACT)
            if log_model:
                log_generator_model(generator, folder)
        info = {"run_id": run.info.run_id, "reused": False, "version": generator.version, "config_hash": chash,
                "data_md5": data_md5, "metrics": metrics}
    return generator, info


# the generator options of train_generator and augment: {GeneratorConfig field: option}
GENERATOR_OPTIONS = {
    "architecture": "--architecture", "train_steps": "--train-steps", "guidance_scale": "--guidance-scale",
    "guidance_interval": "--guidance-interval", "sampling_steps": "--sampling-steps", "num_threads": "--num-threads",
    "device": "--device", "latent_dim": "--latent-dim", "autoencoder_epochs": "--autoencoder-epochs",
    "autoencoder_channels": "--autoencoder-channels", "autoencoder_perceptual_weight": "--autoencoder-perceptual-weight",
    "public_pretrain_steps": "--public-pretrain-steps", "prediction_type": "--prediction-type",
    "loss_weighting": "--loss-weighting", "denoiser_dropout": "--denoiser-dropout", "precision": "--precision",
    "privacy": "--generator-privacy", "dp_epsilon": "--dp-epsilon", "dp_delta": "--dp-delta",
    "public_labels": "--public-labels", "pseudo_label_epsilon": "--pseudo-label-epsilon",
}


def add_generator_arguments(parser: argparse.ArgumentParser) -> None:
    """The generator options shared by ``train_generator`` and ``augment`` (``GENERATOR_OPTIONS``)."""
    add_generator_options(parser, GENERATOR_OPTIONS)
    parser.add_argument("--retrain", type=str2bool, default=False, help="train even if a matching generator exists")


def generator_config_from_args(args: argparse.Namespace) -> GeneratorConfig:
    return generator_config_from_options(args, GENERATOR_OPTIONS, seed=args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--seed", type=int_arg, default=0)
    parser.add_argument("--eval-per-class", type=int_arg, default=QualityConfig.eval_per_class)
    parser.add_argument("--evaluate", type=str2bool, default=True)
    add_generator_arguments(parser)
    args = parser.parse_args(argv)
    start_process()

    def run() -> dict:
        config = generator_config_from_args(args)
        config.validate()  # every parameter checked before the data is read or anything is trained
        quality = QualityConfig(eval_per_class=args.eval_per_class, seed=args.seed)
        quality.validate()
        dataset = load_current_data(args.data_dir)
        data_md5 = dvc_md5_of_folder(args.data_dir)
        generator, info = get_or_train_generator(dataset, data_md5, config, args.retrain, quality,
                                                 data_dir=args.data_dir, evaluate=args.evaluate)
        print(json.dumps(info, indent=2, default=float))
        return info

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
