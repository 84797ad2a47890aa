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

from fairforget.components.bias import measure_bias
from fairforget.components.canaries import with_canaries
from fairforget.components.dataset import load_dataset, read_ids, save_dataset
from fairforget.components.forgetting import replenish_seed_base
from fairforget.components.priors import build_target
from fairforget.components.sisa.model import SisaModel
from fairforget.errors import DataError, PromotionRefused
from fairforget.pipelines.config import PipelineConfig
from fairforget.pipelines.loop import (
    CONFIG_FILE,
    audit_pool,
    build_loop,
    final_audit,
    log_outcome,
    publish,
)
from fairforget.pipelines.registry import CHAMPION, promote
from fairforget.pipelines.tracking import PROJECT_ROOT, configure_tracking, log_data_version, run_cli, step_run
from fairforget.pipelines.train_generator import load_generator_from_run

log = logging.getLogger("fairforget")
FORGET_STEP_OFFSET = 10_000  # request n replenishes with the seeds of loop step 10_000 + n (never a loop step)


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
    config = PipelineConfig.from_dict(json.loads((state_dir / CONFIG_FILE).read_text()))
    data_dir = Path(tags.get("data_dir", config.data_dir))
    data_dir = data_dir if data_dir.is_absolute() else PROJECT_ROOT / data_dir
    dataset = load_dataset(data_dir)
    original_train = dataset.split("train")
    known = set(original_train.ids)
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise DataError(f"{len(unknown)} ids are not original training records, e.g. {unknown[:3]}: only original "
                        "records can be forgotten (synthetic ones carry no one's data)")
    instruments = audit_pool(dataset, config)
    synthetic = load_dataset(state_dir / "synthetic")
    sisa = SisaModel.load(state_dir / "sisa", with_canaries(original_train, instruments.canaries).concat(synthetic))
    already = [i for i in ids if i not in set(sisa.plan.live_ids())]
    if already:
        raise DataError(f"{len(already)} ids were already forgotten, e.g. {already[:3]}: drop them from the request")

    with step_run("forget", {"ids": len(ids), "model": f"{model_name}@{alias}", "from_version": version.version},
                  config.data.dataset, data_dir) as run:
        data_md5 = log_data_version(data_dir)
        generator = load_generator_from_run(tags["generator_run_id"])
        reference = dataset.split("reference")
        target = build_target(original_train.manifest, config.balance.attributes, prior=config.balance.prior,
                              structure=config.balance.structure,
                              reference_manifest=reference.manifest if len(reference) else None, seed=config.data.seed)
        loop = build_loop(config, dataset, sisa=sisa, synthetic=synthetic, generator=generator, target=target,
                          instruments=instruments)
        request = int(tags.get("forget_requests", "0")) + 1
        step = loop.forget_and_replenish(ids, seed_base=replenish_seed_base(config.augment.seed,
                                                                            FORGET_STEP_OFFSET + request))
        outcome = loop.evaluate(0, step=step)
        log_outcome(outcome)
        final = final_audit(loop, {"requested": ids})
        at_chance = final.report.indistinguishable("requested")
        mlflow.log_metric("forget/requested_indistinguishable", float(at_chance))
        print(f"forget: {len(ids)} ids unlearned exactly (shards retrained: {len(step.unlearn.shards_retrained)}); "
              f"requested ids {'indistinguishable' if at_chance else 'STILL DISTINGUISHABLE'} from non-members "
              f"(strongest attack {final.report.max_success('requested'):.4f}, chance bound "
              f"{final.report.chance_bound['requested']:.4f})")
        save_dataset(loop.synthetic, state_dir / "synthetic")
        before = measure_bias(original_train.manifest, target.priors())
        after = measure_bias(loop.current().manifest, target.priors())
        decision, new_version = publish(
            loop, config, outcome, final, data_md5=data_md5, bias_before=before, bias_after=after,
            history=[outcome.history_row()], generator_info={"run_id": tags["generator_run_id"],
                                                             "version": generator.version},
            state_dir=state_dir, run_id=run.info.run_id,
            extra_tags={"forget_requests": str(request), "served_from_version": str(version.version)})
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
    """``promote`` for the command line: raises ``PromotionRefused`` with the reason when the rules refuse."""
    configure_tracking()
    decision = promote(model_name, version)
    if not decision.passed:
        raise PromotionRefused(f"promotion refused: {decision.reason}")
    print(f"promote: {model_name} version {version} is now '{CHAMPION}'")


if __name__ == "__main__":
    sys.exit(main())
