"""Entry points ``forget`` (serve a deletion request) and ``promote`` (move alias ``champion``).

``forget``: a file of original record ids (one per line, or a CSV with an ``id`` column) is served against
``models:/<model_name>@champion``: the SISA state of that version is reopened, the ids are unlearned exactly
(only the shards holding them are retrained, from the checkpoint before the first affected slice), each shard gets
as many new synthetic samples as it lost, the ensemble is re-audited with the requested ids as their own member
subset, and a new version goes through the same registry gate. The audit line for ``requested`` says whether the
forgotten ids are indistinguishable from non-members.

    mlflow run . -e forget -P ids=request.txt --env-manager local
    mlflow run . -e promote -P version=3 --env-manager local
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import mlflow
import pandas as pd

from components.bias import measure_bias
from components.dataset import DataError, load_dataset
from components.mia.protocol import split_audit_pool
from components.mia.reference import train_reference_models
from components.priors import build_target
from components.sisa.model import SisaModel
from pipelines.config import pipeline_config_from_dict
from pipelines.loop import CONFIG_FILE, ForgettingLoop, replenish_seed_base
from pipelines.registry import CHAMPION, promote
from pipelines.tracking import PROJECT_ROOT, configure_tracking, log_data_version, run_cli, step_run
from pipelines.train_generator import load_generator_from_run

log = logging.getLogger("fairforget")


def read_ids(path: str | Path) -> list[str]:
    """Sample ids from a text file (one per line) or a CSV with an ``id`` column; blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"the id file {path} does not exist: give a file with one sample id per line")
    if path.suffix.lower() == ".csv":
        table = pd.read_csv(path, dtype=str)
        if "id" not in table.columns:
            raise DataError(f"{path} has no 'id' column; columns: {list(table.columns)}")
        ids = table["id"].dropna().str.strip().tolist()
    else:
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path} holds no ids: put one sample id per line")
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DataError(f"{path} lists ids more than once, e.g. {duplicates[:3]}: remove the repeats")
    return ids


def serve_deletion_request(ids: list[str], model_name: str = "fairforget-classifier", alias: str = CHAMPION) -> dict:
    """Forget ``ids`` from the model behind ``models:/<model_name>@<alias>``; return a summary dict."""
    configure_tracking()
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except mlflow.exceptions.MlflowException as err:
        raise DataError(f"no version of {model_name} has alias {alias!r} ({err.error_code}): promote one first "
                        f"(`mlflow run . -e promote -P version=N`)") from err
    tags = version.tags
    state_dir = Path(tags.get("state_dir", ""))
    state_dir = state_dir if state_dir.is_absolute() else PROJECT_ROOT / state_dir
    if not (state_dir / CONFIG_FILE).is_file():
        raise DataError(f"{model_name} version {version.version} has no SISA state at {state_dir}: only versions "
                        "registered by this project's pipeline on this machine can serve deletion requests")
    config = pipeline_config_from_dict(json.loads((state_dir / CONFIG_FILE).read_text()))
    data_dir = Path(tags.get("data_dir", config.data_dir))
    data_dir = data_dir if data_dir.is_absolute() else PROJECT_ROOT / data_dir
    dataset = load_dataset(data_dir)
    original_train = dataset.split("train")
    known = set(original_train.ids)
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise DataError(f"{len(unknown)} ids are not original training records, e.g. {unknown[:3]}: only original "
                        "records can be forgotten (synthetic ones carry no one's data)")
    synthetic = load_dataset(state_dir / "synthetic")
    sisa = SisaModel.load(state_dir / "sisa", original_train.concat(synthetic))
    already = [i for i in ids if i not in set(sisa.plan.live_ids())]
    if already:
        raise DataError(f"{len(already)} ids were already forgotten, e.g. {already[:3]}: drop them from the request")

    with step_run("forget", {"ids": len(ids), "model": f"{model_name}@{alias}", "from_version": version.version},
                  config.data.dataset, data_dir) as run:
        data_md5 = log_data_version(data_dir)
        generator = load_generator_from_run(tags["generator_run_id"])
        train = dataset.split("train")
        reference = dataset.split("reference")
        target = build_target(train.manifest, config.balance.attributes, config.balance.prior,
                              config.balance.structure, reference.manifest if len(reference) else None,
                              seed=config.data.seed)
        reference_half, non_members = split_audit_pool(dataset.split("audit"), seed=config.audit.seed)
        references = train_reference_models(reference_half, num_models=1, train_config=config.sisa.train,
                                            model_name=config.sisa.classifier, seed=config.audit.seed)
        loop = ForgettingLoop(config, original_train, dataset.split("test"), non_members, references, target,
                              generator, sisa, synthetic, state_dir / "synthetic")
        step = int(tags.get("forget_requests", "0")) + 1
        info, timings = loop.forget_and_replenish(
            ids, seed_base=replenish_seed_base(config.augment.seed, 10_000 + step), step=step)
        outcome = loop.evaluate_and_audit(0, timings, info)
        report = loop.final_audit({"requested": ids})
        at_chance = report.indistinguishable("requested")
        mlflow.log_metric("forget/requested_indistinguishable", float(at_chance))
        print(f"forget: {len(ids)} ids unlearned exactly (shards retrained: {info['unlearn/shards_retrained']}); "
              f"requested ids {'indistinguishable' if at_chance else 'STILL DISTINGUISHABLE'} from non-members "
              f"(strongest attack {report.max_success('requested'):.4f}, chance bound "
              f"{report.chance_bound['requested']:.4f})")
        before = measure_bias(original_train.manifest, target.priors())
        after = measure_bias(loop.current().manifest, target.priors())
        decision, new_version = loop.publish(
            outcome, report, data_md5, before, after, [], {"run_id": tags["generator_run_id"], "version": generator.version},
            state_dir, run.info.run_id, {"forget_requests": str(step), "served_from_version": str(version.version)})
        return {"run_id": run.info.run_id, "forgotten": len(ids), "requested_at_chance": at_chance,
                "gate": "passed" if decision.passed else "rejected", "registered_version": new_version}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    forget = sub.add_parser("forget", help="serve a deletion request against the champion")
    forget.add_argument("--ids", required=True, help="file with one original record id per line (or CSV with id)")
    forget.add_argument("--model-name", default="fairforget-classifier")
    forget.add_argument("--alias", default=CHAMPION)
    prom = sub.add_parser("promote", help="move alias champion to a gated version")
    prom.add_argument("--version", required=True)
    prom.add_argument("--model-name", default="fairforget-classifier")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "forget":
        return run_cli(lambda: serve_deletion_request(read_ids(args.ids), args.model_name, args.alias))
    return run_cli(lambda: promote_version(args.model_name, args.version))


def promote_version(model_name: str, version: str) -> None:
    """``promote`` for the command line: raises ``ValueError`` with the reason when the rules refuse."""
    configure_tracking()
    decision = promote(model_name, version)
    if not decision.passed:
        raise ValueError(f"promotion refused: {decision.reason}")
    print(f"promote: {model_name} version {version} is now '{CHAMPION}'")


if __name__ == "__main__":
    sys.exit(main())
