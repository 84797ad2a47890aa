"""Steps ``prepare`` and ``validate``: build the biased data set, version it with DVC, measure and validate its bias.

Run alone: ``python -m fairforget.pipelines.data_steps prepare --dataset fashion_mnist`` (or ``validate``), or through MLflow:
``mlflow run . -e prepare --env-manager local``.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow

from fairforget.components.bias import BalanceConfig, BiasReport, measure_bias
from fairforget.components.data import DataConfig, prepare_dataset
from fairforget.components.atomic import atomic_folder
from fairforget.components.dataset import DataError, Dataset, load_dataset, write_dataset_files
from fairforget.components.journal import open_journals_on
from fairforget.components.ledger import apply_ledger, expected_split_sizes
from fairforget.components.locks import data_lock, exclusive
from fairforget.components.plots import plot_distributions
from fairforget.components.priors import TargetDistribution, build_target
from fairforget.components.validation import ValidationResult, validate_dataset, validate_integrity
from fairforget.components.versioning import dvc_md5_of_folder, md5_of_file
from fairforget.errors import ToolError
from fairforget.pipelines.ledger_mirror import checked_ledger_ids, ledger_source
from fairforget.pipelines.cli import OneLineParser, float_arg, int_arg, optional_int_arg
from fairforget.pipelines.tracking import (
    start_process,
    log_data_version,
    log_figure,
    log_json,
    project_path,
    run_cli,
    step_run,
)

log = logging.getLogger("fairforget")


def dvc_track(path: Path) -> str:
    """``dvc add`` the folder (or file, e.g. the deletion ledger) when it sits at the top of a DVC project (the
    project's ``data/``, or the folder a symbolic link ``data`` points to, as in the Docker stack's workspace volume);
    return its DVC md5."""
    path = Path(path).resolve()
    root, dvc_file = path.parent, path.with_name(path.name + ".dvc")
    if (root / ".dvc").is_dir():
        completed = subprocess.run([sys.executable, "-m", "dvc", "add", "--quiet", path.name], cwd=root,
                                   capture_output=True, text=True)
        if completed.returncode != 0:
            message = " ".join((completed.stderr.strip() or completed.stdout.strip()).split())
            raise ToolError(f"`dvc add {path.name}` failed in {root}: {message}; fix DVC (`dvc doctor`) "
                            "and run the step again")
        log.info("dvc: %s tracked by %s", path.name, dvc_file.name)
    return md5_of_file(path) if path.is_file() else dvc_md5_of_folder(path)


def load_current_data(data_dir: str | Path) -> Dataset:
    """The data set in ``data_dir`` without the records of its deletion ledger (``forgotten.csv`` beside it).
    A folder that still holds deleted records (an older DVC version checked out) is used without them, and the log
    says to rewrite it (``prepare``)."""
    dataset = load_dataset(data_dir)
    deleted = checked_ledger_ids(data_dir, ledger_source(dataset.config))
    kept = apply_ledger(dataset, deleted)
    if len(kept) < len(dataset):
        log.warning("%s still holds %d records deleted on request: they are left out; run the prepare step to "
                    "rewrite the folder without them", data_dir, len(dataset) - len(kept))
    return kept


def run_prepare(config: DataConfig, data_dir: str | Path = "data", track: bool = True) -> str:
    """Prepare the data set into ``data_dir`` without the records of the deletion ledger, DVC-track it, log it;
    return its DVC md5.

    The new data set is read, written and checked (the integrity suite, on the files as written) in a temporary
    sibling folder first; only then does it replace ``data_dir`` (a rename), get ``dvc add``-ed and its MLflow run
    open. Any error before that (a ``DataError`` for bad source data) leaves ``data_dir``, its ``.dvc`` file and
    the tracking store exactly as they were.
    """
    config.validate()
    data_dir = Path(data_dir)
    deleted = checked_ledger_ids(data_dir, ledger_source(config.stored_record()))
    dataset = apply_ledger(prepare_dataset(config), deleted)
    with atomic_folder(data_dir) as staged:
        write_dataset_files(dataset, staged)
        checked = validate_integrity(load_dataset(staged), expected_sizes=expected_split_sizes(dataset.config))
        checked.raise_for_integrity(f"Fix the source files; {data_dir} is left as it was")
    with step_run("prepare", {"data": asdict(config), "data_dir": str(data_dir)}, config.dataset):
        md5 = dvc_track(data_dir) if track else dvc_md5_of_folder(data_dir)
        log_data_version(data_dir, context="prepared")
        counts = dataset.manifest.groupby(["split", "superclass"]).size().rename("count").reset_index()
        mlflow.log_table(counts, "split_counts.json")
        mlflow.log_metrics({f"data/size/{s}": int((dataset.manifest["split"] == s).sum())
                            for s in dataset.manifest["split"].unique()})
        print(f"prepare: {len(dataset)} images in {data_dir} (md5 {md5}); "
              + ", ".join(f"{s}={n}" for s, n in dataset.manifest["split"].value_counts().sort_index().items()))
    return md5


def prepare_step(config: DataConfig, data_dir: str | Path = "data", outputs_dir: str | Path = "outputs") -> str:
    """The ``prepare`` entry point: ``run_prepare`` under the data folder's lock, so it cannot replace ``data/``
    under a running pipeline or a deletion request (its ledger read and its rename would race them); a second
    writer gets ``Busy`` at once; refused while a deletion request's commit on the folder is open
    (``refuse_open_commits``). (``main`` calls ``run_prepare`` directly: it finishes open commits and holds the
    lock.)"""
    config.validate()  # a refused config writes nothing, not even the lock file
    refuse_open_commits(Path(data_dir), project_path(outputs_dir))
    with exclusive(data_lock(Path(data_dir)), f"the data folder {data_dir}"):
        return run_prepare(config, data_dir)


def refuse_open_commits(data_dir: Path, outputs_dir: Path) -> None:
    """Raise ``DataError`` when a deletion request's commit on ``data_dir`` was interrupted (an open journal):
    rebuilding the folder under it could bring back a record the request was deleting."""
    journals = open_journals_on(data_dir, outputs_dir)
    if journals:
        model = journals[0].path.stem
        raise DataError(f"a deletion request's commit on {data_dir} was interrupted (journal {journals[0].path}): "
                        f"finish it first with `mlflow run . -e finish -P model_name={model}` (or `python -m "
                        f"fairforget.pipelines.forget finish --model-name {model} --outputs-dir {outputs_dir}`), then "
                        "prepare again")


@dataclass
class ValidationOutcome:
    """What ``run_validate`` found: the target D, the bias of S against it, and the GX results."""

    target: TargetDistribution
    bias: BiasReport
    validation: ValidationResult
    data_md5: str
    extra: dict = field(default_factory=dict)


def run_validate(balance: BalanceConfig, data_dir: str | Path = "data", dataset_name: str | None = None,
                 seed: int = 0) -> ValidationOutcome:
    """Measure the bias of the train split (Definition 2) and run the GX suites; log metrics, figure, Data Docs.

    Balance failing is recorded (tag ``balance=failed``); a broken schema or unreadable image raises ``DataError``.
    """
    balance.validate()
    data_dir = Path(data_dir)
    dataset = load_dataset(data_dir)
    name = dataset_name or dataset.config.get("dataset", "custom")
    with step_run("validate", {"balance": asdict(balance), "data_dir": str(data_dir)}, name, data_dir) as run:
        train = dataset.split("train")
        reference = dataset.split("reference")
        target = build_target(train.manifest, balance.attributes, prior=balance.prior, structure=balance.structure,
                              reference_manifest=reference.manifest if len(reference) else None, seed=seed)
        report = measure_bias(train.manifest, target.priors())
        expected = expected_split_sizes(dataset.config)  # the prepared sizes, less the records deleted on request
        with tempfile.TemporaryDirectory(prefix="fairforget-gx-") as docs_root:  # the Data Docs go to the run
            result = validate_dataset(dataset, target.priors(), rho=balance.rho, expected_sizes=expected,
                                      docs_root=docs_root)
            if result.docs_dir is not None:
                mlflow.log_artifacts(str(result.docs_dir), "validation/data_docs")
        mlflow.log_metrics(report.as_metrics())
        for outcome in result.outcomes:
            if outcome.suite == "balance" and isinstance(outcome.observed, (int, float)):
                mlflow.log_metric(f"bias/gx_kl_observed_vs_prior/{outcome.column}", float(outcome.observed))
        log_figure(plot_distributions(report, "Before augmentation (paper Fig. 6)"), "figures/distributions.png")
        mlflow.log_table(report.table(), "bias_table.json")
        mlflow.log_table(result.table().astype(str), "validation/expectations.json")
        log_json(result.raw, "validation/gx_results.json")
        log_json({"description": target.description, "joint": target.joint.to_dict(orient="records")},
                 "target_distribution.json")
        mlflow.set_tags({"balance": "passed" if result.balanced else "failed",
                         "integrity": "passed" if result.integrity_ok else "failed"})
        kl_text = ", ".join(f"KL({a.attribute})={a.kl:.4f}" for a in report.attributes)
        print(f"validate: integrity {'passed' if result.integrity_ok else 'FAILED'}; balance "
              f"{'passed' if result.balanced else 'failed (a finding: the data is biased)'}; {kl_text}; "
              f"L_hat={report.loss:.5f} (rho={balance.rho})")
        result.raise_for_integrity()
        return ValidationOutcome(target, report, result, dvc_md5_of_folder(data_dir), {"run_id": run.info.run_id})


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DataConfig()
    parser.add_argument("--dataset", default=defaults.dataset)
    parser.add_argument("--source-dir", default=None)
    parser.add_argument("--train-size", type=int_arg, default=defaults.train_size)
    parser.add_argument("--majority-superclass", default=None)
    parser.add_argument("--majority-fraction", type=float_arg, default=defaults.majority_fraction)
    parser.add_argument("--test-size", type=int_arg, default=defaults.test_size)
    parser.add_argument("--audit-size", type=int_arg, default=defaults.audit_size)
    parser.add_argument("--reference-size", type=int_arg, default=defaults.reference_size)
    parser.add_argument("--seed", type=int_arg, default=defaults.seed)
    parser.add_argument("--missing-value", default="",
                        help="dataset folder: the category for empty or NA cells of attributes.csv (default: refuse)")
    parser.add_argument("--image-size", type=optional_int_arg, default=None,
                        help="square side every image is centre-cropped and resized to, 4 to 128 (default: the "
                             "source's own; a folder: 32, or its smallest image's shorter side when smaller)")


def data_config_from_args(args: argparse.Namespace) -> DataConfig:
    return DataConfig(dataset=args.dataset, source_dir=args.source_dir or None, train_size=args.train_size,
                      majority_superclass=args.majority_superclass or None, majority_fraction=args.majority_fraction,
                      test_size=args.test_size, audit_size=args.audit_size, reference_size=args.reference_size,
                      seed=args.seed, missing_value=args.missing_value or None,
                      image_size=args.image_size)


def add_balance_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = BalanceConfig()
    parser.add_argument("--attributes", default=",".join(defaults.attributes))
    parser.add_argument("--prior", default=defaults.prior)
    parser.add_argument("--structure", default=defaults.structure)
    parser.add_argument("--rho", type=float_arg, default=defaults.rho)


def balance_config_from_args(args: argparse.Namespace) -> BalanceConfig:
    return BalanceConfig(tuple(a.strip() for a in args.attributes.split(",") if a.strip()), args.prior,
                         args.structure, args.rho)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__)
    sub = parser.add_subparsers(dest="step", required=True)
    prepare = sub.add_parser("prepare", help="build and DVC-track the data set")
    add_data_arguments(prepare)
    prepare.add_argument("--data-dir", default="data")
    prepare.add_argument("--outputs-dir", default="outputs",
                         help="where deletion requests keep their commit journals (an open one refuses prepare)")
    validate = sub.add_parser("validate", help="measure bias and run the Great Expectations suites")
    add_balance_arguments(validate)
    validate.add_argument("--data-dir", default="data")
    validate.add_argument("--seed", type=int_arg, default=0)
    args = parser.parse_args(argv)
    start_process()
    if args.step == "prepare":
        return run_cli(lambda: prepare_step(data_config_from_args(args), args.data_dir, args.outputs_dir))
    return run_cli(lambda: run_validate(balance_config_from_args(args), args.data_dir, seed=args.seed))


if __name__ == "__main__":
    sys.exit(main())
