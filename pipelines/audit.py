"""MLflow step ``audit``: membership-inference audit of a logged or registered classifier.

    python -m fairforget.pipelines.audit --model-uri models:/fairforget-classifier@candidate --data-dir data

The model is loaded with ``mlflow.pyfunc.load_model(uri)``; its ``predict`` takes float32 (N, C, H, W) in [0, 1]
and returns class probabilities (N, K) (the contract of ``components/ensemble_pyfunc.py``). Members: the original
real ``train`` records of the data version; non-members: the non-member half of its ``audit`` split; RMIA's
reference model(s) train on the other half. For a version the pipeline registered, the images its canaries were
made from are set aside first (its ``canaries`` tag), as in the run, so with the run's audit seed the halves are
the run's own. ``--forgotten-ids`` (a text file, one id per line) adds separate reports for the forgotten and the
retained originals.

Logged: metrics ``mia/...`` (``AuditReport.metrics``, at ``--step``), ``audit/mia_table.csv``, ``audit/summary.txt``,
``audit/roc_<subset>.png`` (log-log ROC per attack), ``audit/success_<subset>.png``. A registered model version
(``models:/name/version`` or ``models:/name@alias``) is tagged with ``audit_data_md5``, ``audit_time``,
``audit_run_id``, ``mia_max_success`` and each subset's certificate figures (``mia_<subset>_n``, ``_n_non_members``,
``_auc_high``, ``_tpr_high``; subset ``all`` without ``--forgotten-ids``), which the promotion rule reads.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field

import mlflow

from fairforget.components.canaries import cut_audit_pool
from fairforget.components.dataset import Dataset, load_dataset, read_ids
from fairforget.components.mia import ATTACKS, AuditConfig, AuditReport, audit_membership, float_array_predictor
from fairforget.components.mia.reference import train_reference_models
from fairforget.components.mia.results import ALL_MEMBERS
from fairforget.components.report import plot_attack_success, plot_roc_curves
from fairforget.components.versioning import dvc_md5_of_folder
from fairforget.errors import ConfigError
from fairforget.pipelines.cli import OneLineParser, float_arg, int_arg, str2bool
from fairforget.pipelines.data_steps import load_current_data
from fairforget.pipelines.registry import set_signed_tags
from fairforget.pipelines.tracking import configure_tracking, run_cli, step_run


@dataclass
class AuditStepConfig:
    """The ``audit`` step: which model, which data, and the audit itself (``AuditConfig``)."""

    model_uri: str = "models:/fairforget-classifier@candidate"
    data_dir: str = "data"
    reference_models: int = 1  # RMIA's reference models (0 drops rmia from the attacks)
    reference_epochs: int | None = None  # None: TrainConfig's default
    classifier: str = "small_cnn"  # architecture of the reference models
    forgotten_ids: str | None = None  # text file, one member id per line
    tag_model: bool = True
    step: int | None = None
    audit: AuditConfig = field(default_factory=AuditConfig)


def load_predict(model_uri: str):
    """The pyfunc at ``model_uri`` as a predict callable uint8 (N, H, W, C) -> probabilities (N, K)."""
    model = mlflow.pyfunc.load_model(model_uri)
    return float_array_predictor(model.predict)


def members_and_non_members(dataset: Dataset, seed: int, canaries: int = 0) -> tuple[Dataset, Dataset, Dataset]:
    """(members = real train originals, non-members = non-member half of audit, reference half of audit).
    ``canaries``: how many canaries the model was trained with; their pool is set aside first, as the pipeline's
    run did (``cut_audit_pool``), so no image the model trained on (under a wrong label) counts as a non-member and
    the halves are the run's own."""
    train = dataset.split("train")
    members = train.select(train.manifest["origin"].to_numpy() == "real")
    pool = cut_audit_pool(dataset.split("audit"), canaries=canaries, seed=seed)
    return members, pool.non_members, pool.reference_half


def registered_canaries(model_uri: str) -> int:
    """The canaries a registered version was trained with (its ``canaries`` tag, set by the pipeline's gate); 0 for
    a URI outside the registry or a version without the tag."""
    registered = parse_registered(model_uri)
    if registered is None:
        return 0
    return int(mlflow.MlflowClient().get_model_version(*registered).tags.get("canaries", "0"))


def run_audit(config: AuditStepConfig, predict=None) -> AuditReport:
    """Audit ``config.model_uri`` (or ``predict`` when given) against ``config.data_dir``; no logging."""
    audit = config.audit
    attacks = tuple(audit.attacks)
    if config.reference_models < 1 and "rmia" in attacks:
        attacks = tuple(a for a in attacks if a != "rmia")
        audit = dataclasses.replace(audit, attacks=attacks)
    for name in attacks:
        if name not in ATTACKS:
            raise ConfigError(f"unknown attack {name!r}; known attacks: {', '.join(sorted(ATTACKS))}")
    dataset = load_current_data(config.data_dir)
    members, non_members, reference_half = members_and_non_members(
        dataset, audit.seed, canaries=registered_canaries(config.model_uri) if predict is None else 0)
    subsets = {}
    if config.forgotten_ids:
        forgotten = set(read_ids(config.forgotten_ids))
        subsets["forgotten"] = sorted(forgotten)
        subsets["retained"] = sorted(set(members.ids) - forgotten)
    if predict is None:
        predict = load_predict(config.model_uri)
    references = []
    if "rmia" in attacks:
        from fairforget.components.training import TrainConfig

        train_config = TrainConfig(num_threads=audit.num_threads)
        if config.reference_epochs is not None:
            train_config = dataclasses.replace(train_config, epochs=config.reference_epochs)
        references = train_reference_models(reference_half, num_models=config.reference_models,
                                            train_config=train_config, model_name=config.classifier, seed=audit.seed)
    return audit_membership(predict, members, non_members, attacks=attacks, config=audit, reference_predicts=references,
                            member_subsets={k: v for k, v in subsets.items() if v})


def log_audit_report(report: AuditReport, step: int | None = None, folder: str = "audit") -> None:
    """Log ``report`` to the active run: metrics at ``step``, the table, the summary and the figures."""
    mlflow.log_metrics(report.metrics(), step=step)
    mlflow.log_text(report.table().to_csv(index=False), f"{folder}/mia_table.csv")
    mlflow.log_text(report.summary() + "\n", f"{folder}/summary.txt")
    for subset, by_attack in report.results.items():
        aucs = {attack: r.estimates["auc"].value for attack, r in by_attack.items()}
        figure = plot_roc_curves(report.roc_curves(subset), title=f"MIA ROC ({subset} members)", aucs=aucs)
        mlflow.log_figure(figure, f"{folder}/roc_{subset}.png")
        successes = {a: (r.estimates["success"].value, r.estimates["success"].ci_low, r.estimates["success"].ci_high)
                     for a, r in by_attack.items()}
        figure = plot_attack_success(successes, report.chance_bound[subset], title=f"Attack success ({subset})")
        mlflow.log_figure(figure, f"{folder}/success_{subset}.png")
    import matplotlib.pyplot as plt

    plt.close("all")


def parse_registered(model_uri: str) -> tuple[str, str] | None:
    """(name, version) of ``models:/name/version`` or ``models:/name@alias`` (alias resolved); None otherwise."""
    if not model_uri.startswith("models:/"):
        return None
    rest = model_uri[len("models:/"):].strip("/")
    client = mlflow.MlflowClient()
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = rest.rpartition("/")
    if not name or not version.isdigit():
        raise ConfigError(f"cannot tag {model_uri!r}: use models:/<name>/<version> or models:/<name>@<alias>")
    return name, version


def tag_model_version(model_uri: str, report: AuditReport, data_md5: str, run_id: str) -> tuple[str, str] | None:
    """Tag the registered version behind ``model_uri`` with the audit's results; None for a non-registry URI."""
    registered = parse_registered(model_uri)
    if registered is None:
        return None
    name, version = registered
    tags = {"audit_data_md5": data_md5, "audit_time": f"{time.time():.3f}", "audit_run_id": run_id,
            "mia_max_success": f"{report.max_success():.4f}"}
    for subset in report.results:
        tags.update(report.certificate(subset).tags(f"mia_{subset}_"))
        if subset != ALL_MEMBERS:
            tags[f"mia_{subset}_max_success"] = f"{report.max_success(subset):.4f}"
    set_signed_tags(name, version, tags)
    return name, version


def audit_step(config: AuditStepConfig) -> AuditReport:
    """The whole step: an MLflow run that audits, logs, and tags the model version."""
    configure_tracking()
    dataset_name = load_dataset(config.data_dir).config.get("dataset", "data")
    record = dataclasses.asdict(config)
    with step_run("audit", record, dataset_name, config.data_dir) as run:
        report = run_audit(config)
        log_audit_report(report, step=config.step)
        print(report.summary())
        mlflow.set_tag("model_uri", config.model_uri)
        if config.tag_model:
            tagged = tag_model_version(config.model_uri, report, dvc_md5_of_folder(config.data_dir), run.info.run_id)
            if tagged:
                print(f"audit: tagged {tagged[0]} version {tagged[1]}")
    return report


def parse_args(argv=None) -> AuditStepConfig:
    defaults, audit = AuditStepConfig(), AuditConfig()
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", default=defaults.model_uri, help="models:/name/version, models:/name@alias "
                        "or runs:/<run_id>/<path>")
    parser.add_argument("--data-dir", default=defaults.data_dir)
    parser.add_argument("--attacks", default=",".join(audit.attacks), help=f"comma list of {', '.join(ATTACKS)}")
    parser.add_argument("--num-augmentations", type=int_arg, default=0,
                        help="fixed augmented copies per image; 0: 10 (the flip + crop family)")
    parser.add_argument("--sample-size", type=int_arg, default=0, help="members (= non-members) audited; 0: all")
    parser.add_argument("--calibration-fraction", type=float_arg, default=audit.calibration_fraction)
    parser.add_argument("--num-bootstrap", type=int_arg, default=audit.num_bootstrap)
    parser.add_argument("--fpr-levels", default=",".join(f"{v:g}" for v in audit.fpr_levels),
                        help="FPRs for tpr_at_<x>pct_fpr; each needs >= 1/FPR evaluation non-members")
    parser.add_argument("--reference-models", type=int_arg, default=defaults.reference_models)
    parser.add_argument("--reference-epochs", type=int_arg, default=0, help="0: the training default")
    parser.add_argument("--classifier", default=defaults.classifier)
    parser.add_argument("--forgotten-ids", default="", help="file with one forgotten member id per line")
    parser.add_argument("--step", type=int_arg, default=-1, help="metric step (e.g. the iteration); -1: none")
    parser.add_argument("--tag", type=str2bool, default=True,
                        help="tag the model version with this audit (false: measure only)")
    parser.add_argument("--num-threads", type=int_arg, default=0, help="torch threads for querying and the reference "
                        "models; 0: leave torch's setting")
    parser.add_argument("--seed", type=int_arg, default=audit.seed)
    args = parser.parse_args(argv)
    audit = dataclasses.replace(
        audit, attacks=tuple(a.strip() for a in args.attacks.split(",") if a.strip()),
        num_augmentations=args.num_augmentations or None, sample_size=args.sample_size or None,
        calibration_fraction=args.calibration_fraction, num_bootstrap=args.num_bootstrap, seed=args.seed,
        fpr_levels=tuple(float(v) for v in args.fpr_levels.split(",") if v.strip()),
        num_threads=args.num_threads or None)
    audit.validate()
    return AuditStepConfig(model_uri=args.model_uri, data_dir=args.data_dir, reference_models=args.reference_models,
                           reference_epochs=args.reference_epochs or None, classifier=args.classifier,
                           forgotten_ids=args.forgotten_ids or None, tag_model=args.tag,
                           step=None if args.step < 0 else args.step, audit=audit)


def run(argv=None) -> AuditReport:
    """Parse and validate ``argv``, then audit; returns the report (errors raise)."""
    return audit_step(parse_args(argv))


def main(argv=None) -> int:
    """The command line: a user error is one ``error: ...`` line and exit code 2."""
    return run_cli(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
