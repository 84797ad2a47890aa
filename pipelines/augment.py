"""MLflow step ``augment``: Algorithm 1 on a data version with a trained generator.

Reads the data folder, gets the generator (``--generator-run-id``, else the reusable one for this data md5 and
config, else trains one), builds the target D (``components.priors.build_target``), runs Algorithm 1 logging
``bias/loss``, ``bias/kl/<attribute>`` (and ``bias/kl/<a> x <b>``, the joint of several attributes) and counts per
round (step = round), logs the distribution figures before/after (the paper's Fig. 8), the dependence of each
debiased attribute on the class (``bias/mi/<attribute>/before|after``, ``augment/dependence.png`` and
``augment/dependence.json``), ``augment/synthetic_to_real_ratio``, a grid of the synthetic images, and the augmented
data set without a private record (``augmented/synthetic/``: the synthetic samples; ``augmented/digest.json``: the
DVC md5 of the whole set and of its data version; ``log_without_private_records``), and writes the whole set to
``--output-dir`` (atomically, only once everything succeeded); ``--dvc-add true`` then runs ``dvc add`` on it.

    python -m fairforget.pipelines.augment --data-dir data --output-dir augmented --rho 0.01 [--dvc-add true]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import mlflow
import pandas as pd

from fairforget.components import names
from fairforget.components.augment import AugmentConfig, AugmentResult, augment, check_generator_version
from fairforget.components.bias import DependenceReport
from fairforget.components.dataset import Dataset, save_dataset
from fairforget.components.generator import Generator
from fairforget.components.plots import plot_dependence, plot_distributions, plot_image_grid
from fairforget.components.priors import build_target
from fairforget.components.versioning import dvc_md5_of_folder
from fairforget.errors import ConfigError, ToolError
from fairforget.pipelines.cli import OneLineParser, float_arg, int_arg, str2bool
from fairforget.pipelines.data_steps import load_current_data
from fairforget.pipelines.tracking import log_figure, log_json, run_cli, step_run
from fairforget.pipelines.train_generator import (
    ARTIFACT,
    add_generator_arguments,
    generator_config_from_args,
    get_or_train_generator,
    load_generator_from_run,
)

STEP = "augment"


def synthetic_grid(result: AugmentResult, per_class: int = 8):
    """One row per class that received synthetic images (up to ``per_class`` each)."""
    synthetic = result.synthetic
    rows, labels = [], []
    for index, name in enumerate(synthetic.class_names):
        images = synthetic.images[synthetic.labels == index][:per_class]
        if len(images):
            rows.append(images)
            labels.append(name)
    return plot_image_grid(rows, labels, title="synthetic images added by Algorithm 1") if rows else None


def log_dependence(before: DependenceReport, after: DependenceReport, folder: str) -> None:
    """Log ``bias/mi/<attribute>/before|after``, the figure ``<folder>/dependence.png`` and the conditional tables
    ``<folder>/dependence.json`` (one row per attribute, superclass, value and moment) in the active run."""
    metrics = {**before.as_metrics("before"), **after.as_metrics("after")}
    if metrics:
        mlflow.log_metrics(metrics)
    log_figure(plot_dependence(before, after), f"{folder}/dependence.png")
    table = pd.concat([before.table().assign(when="before"), after.table().assign(when="after")], ignore_index=True)
    if len(table):
        mlflow.log_table(table, f"{folder}/dependence.json")


def run_augment(dataset: Dataset, generator: Generator, attributes: Sequence[str], config: AugmentConfig,
                output_dir: str | Path, prior: str = "uniform", structure: str = "mimic",
                data_dir: str | Path | None = None, data_md5: str | None = None, force: bool = False,
                dvc_add: bool = False, dataset_name: str | None = None) -> AugmentResult:
    """Algorithm 1 inside an ``augment`` MLflow run; writes the augmented data set to ``output_dir``.

    Everything is validated (rho, guidance, target vs generator, data version) before any sample is generated;
    ``output_dir`` is written only after Algorithm 1 succeeded, by a temporary folder renamed into place.
    """
    config.validate()
    check_generator_version(generator, data_md5, force)
    train = dataset.split("train")
    reference = dataset.split("reference")
    target = build_target(train.manifest, list(attributes), prior=prior, structure=structure,
                          reference_manifest=reference.manifest if len(reference) else None, seed=config.seed)
    dataset_name = dataset_name or str(dataset.config.get("dataset", "dataset"))
    record = {"augment": asdict(config), "attributes": list(attributes), "prior": prior, "structure": structure,
              "generator_version": generator.version, "output_dir": str(output_dir), "force": force}
    with step_run(STEP, record, dataset_name, data_dir):
        mlflow.set_tags({"generator_version": generator.version, "generator_data_md5": generator.data_md5,
                         "target": target.description})
        if data_md5:
            mlflow.set_tag("data_md5", data_md5)

        def on_round(round_index: int, report, info: dict) -> None:
            metrics = report.as_metrics()
            metrics.update({"augment/size": info["size"], "augment/synthetic_total": info["synthetic_total"],
                            "augment/added": info["added"]})
            mlflow.log_metrics(metrics, step=round_index)

        # the data version was checked above (before the run opened); not again, to warn once
        result = augment(dataset, target, generator, config=config, on_round=on_round)
        mlflow.log_figure(plot_distributions(result.before, "before augmentation"), "augment/distribution_before.png")
        mlflow.log_figure(plot_distributions(result.after, "after augmentation (Fig. 8)"),
                          "augment/distribution_after.png")
        grid = synthetic_grid(result)
        if grid is not None:
            mlflow.log_figure(grid, "augment/synthetic_grid.png")
        log_json(result.rounds, "augment/rounds.json")
        mlflow.log_text(result.cells.to_csv(index=False), "augment/cells.csv")
        mlflow.log_metrics({"augment/rounds": len(result.rounds) - 1,
                            "augment/synthetic_added": len(result.synthetic),
                            names.SYNTHETIC_TO_REAL: result.synthetic_to_real,
                            "augment/balanced": float(result.after.is_balanced(config.rho))})
        log_dependence(result.dependence_before, result.dependence_after, "augment")
        folder = save_dataset(result.dataset, output_dir)
        log_without_private_records(result, folder, data_md5)
        if dvc_add:
            dvc_add_folder(folder)
    return result


def log_without_private_records(result, folder: Path, data_md5: str | None) -> None:
    """Log the augmented set without a private pixel or id: its synthetic samples (``augmented/synthetic/``, a data
    set folder) and ``augmented/digest.json`` (the DVC md5 of the whole folder, of the data version it was made
    from, the sha256 of its manifest, the counts). The real records are the data version's (DVC), so the run names
    the whole set exactly and stores no copy of S; the tag ``augmented_md5`` is the folder's DVC md5."""
    import hashlib

    augmented_md5 = dvc_md5_of_folder(folder)
    with tempfile.TemporaryDirectory(prefix="fairforget-augmented-") as tmp:
        synthetic = save_dataset(result.synthetic, Path(tmp) / "synthetic")
        mlflow.log_artifacts(str(synthetic), "augmented/synthetic")
    log_json({"augmented_md5": augmented_md5, "data_md5": data_md5,
              "manifest_sha256": hashlib.sha256((folder / "manifest.csv").read_bytes()).hexdigest(),
              "records": len(result.dataset), "synthetic_records": len(result.synthetic)}, "augmented/digest.json")
    mlflow.set_tag("augmented_md5", augmented_md5)


def dvc_add_folder(folder: Path) -> Path:
    """``dvc add <folder>`` (DVC finds the repository from the folder's parent, whatever the working directory);
    returns the ``.dvc`` file written next to it. A failure raises with DVC's message."""
    folder = Path(folder).resolve()
    completed = subprocess.run([sys.executable, "-m", "dvc", "add", "--quiet", folder.name], cwd=folder.parent,
                               capture_output=True, text=True)
    if completed.returncode != 0:
        message = " ".join((completed.stderr.strip() or completed.stdout.strip()).split())
        raise ToolError(f"`dvc add {folder}` failed: {message} (is this a DVC repository? is a parent folder "
                        "already tracked?)")
    return folder.with_name(folder.name + ".dvc")


def check_output_dir(output_dir: str | Path, data_dir: str | Path) -> None:
    """Refuse an ``output_dir`` that is the data folder, inside it, or holds it: writing there would replace the
    data without its lock and without the deletion ledger's checks."""
    out, data = Path(output_dir).resolve(), Path(data_dir).resolve()
    if out == data or data in out.parents or out in data.parents:
        raise ConfigError(f"output_dir {output_dir} would overwrite the data folder {data_dir}: write the augmented "
                          "set to a folder of its own, e.g. augmented")


def check_dvc_repository(folder: Path) -> None:
    """Refuse ``--dvc-add true`` before any work when ``folder`` is not inside a DVC repository."""
    completed = subprocess.run([sys.executable, "-m", "dvc", "root"], cwd=folder, capture_output=True, text=True)
    if completed.returncode != 0:
        raise ConfigError(f"dvc_add=true needs output_dir inside a DVC repository, and {folder} is in none: run "
                          "`dvc init` there, or leave dvc_add false")


def check_generator_run(run_id: str) -> None:
    """Refuse a ``generator_run_id`` that names no run of the tracking store, or a run without a generator."""
    from mlflow.exceptions import MlflowException

    try:
        artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    except MlflowException as err:
        raise ConfigError(f"generator_run_id {run_id!r} names no run of the tracking store "
                          f"{mlflow.get_tracking_uri()}: give the run id of a train_generator run") from err
    if ARTIFACT not in artifacts:
        raise ConfigError(f"run {run_id} holds no {ARTIFACT}/ artifact: give the run id of a train_generator run")


def run(argv: Sequence[str] | None = None) -> dict:
    """Parse and validate ``argv``, then run Algorithm 1; returns the summary (errors raise)."""
    parser = OneLineParser(description=__doc__.splitlines()[0])
    defaults = AugmentConfig()
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--output-dir", default="augmented")
    parser.add_argument("--attributes", default="superclass", help="comma-separated debiased attributes")
    parser.add_argument("--prior", default="uniform")
    parser.add_argument("--structure", default="mimic")
    parser.add_argument("--rho", type=float_arg, default=defaults.rho)
    parser.add_argument("--step-size", type=float_arg, default=defaults.step_size)
    parser.add_argument("--round-size", type=int_arg, default=defaults.round_size)
    parser.add_argument("--max-rounds", type=int_arg, default=defaults.max_rounds)
    parser.add_argument("--seed", type=int_arg, default=0)
    parser.add_argument("--generator-run-id", default="", help="use this run's generator (default: reuse or train)")
    parser.add_argument("--dvc-add", type=str2bool, default=False)
    parser.add_argument("--force", type=str2bool, default=False, help="accept a generator of another data version")
    add_generator_arguments(parser)
    args = parser.parse_args(argv)
    generator_config = generator_config_from_args(args)
    generator_config.validate()  # before any expensive work
    config = AugmentConfig(rho=args.rho, step_size=args.step_size, round_size=args.round_size,
                           max_rounds=args.max_rounds, guidance_scale=generator_config.guidance_scale, seed=args.seed)
    config.validate()
    check_output_dir(args.output_dir, args.data_dir)
    if args.dvc_add:
        check_dvc_repository(Path(args.output_dir).resolve().parent)
    attributes = [a.strip() for a in args.attributes.split(",") if a.strip()]
    dataset = load_current_data(args.data_dir)
    reference = dataset.split("reference")
    build_target(dataset.split("train").manifest, attributes, prior=args.prior, structure=args.structure,
                 reference_manifest=reference.manifest if len(reference) else None, seed=config.seed)  # refuses now
    data_md5 = dvc_md5_of_folder(args.data_dir)
    if args.generator_run_id:
        check_generator_run(args.generator_run_id)
        generator = load_generator_from_run(args.generator_run_id)
        generator.config = replace(generator.config, guidance_interval=generator_config.guidance_interval)
    else:
        generator, _ = get_or_train_generator(dataset, data_md5, generator_config, args.retrain,
                                              data_dir=args.data_dir)
    result = run_augment(dataset, generator, attributes, config, args.output_dir, prior=args.prior,
                         structure=args.structure, data_dir=args.data_dir, data_md5=data_md5, force=args.force,
                         dvc_add=args.dvc_add)
    summary = {"rounds": result.rounds[-1]["round"], "synthetic_added": len(result.synthetic),
               "synthetic_to_real": result.synthetic_to_real,
               "before": result.before.as_metrics(), "after": result.after.as_metrics(),
               "output_dir": str(args.output_dir)}
    print(json.dumps(summary, indent=2, default=float))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: a user error is one ``error: ...`` line and exit code 2."""
    return run_cli(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
