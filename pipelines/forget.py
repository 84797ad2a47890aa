"""Entry points ``forget`` (serve a deletion request) and ``promote`` (move alias ``champion``).

``forget``: a file of original record ids (one per line, or a CSV with an ``id`` column) is served against
``models:/<model_name>@champion``, atomically:

1. ids that are not original training records (and were never deleted) are refused before anything changes;
   ids already forgotten (by the loop, or by an earlier request: the deletion ledger) are reported and skipped;
2. the champion's state folder is copied (checkpoints hard-linked: they are immutable) to a new state folder, and
   only the copy changes: the ids, and any earlier request's ids the champion still holds, are unlearned exactly,
   each shard gets as many synthetic samples as it lost, the ensemble is re-audited with the requested ids as their
   own member subset, and a new version goes through the registry gate;
3. only when it passes: the ids join the ledger (``forgotten.csv`` beside the data folder, DVC-tracked), the data
   folder is rewritten without them (a new DVC version; ``dvc gc`` purges the old one from the cache), every
   version that still holds them is tagged ``contains_deleted=true`` (it can never be promoted again), and
   ``champion`` moves to the new version when it meets the policy in force (else it is removed: nothing holding the
   records stays served). A rejection (policy ``on_failed_deletion``: ``unserve``, the default, removes
   ``champion`` and leaves the request open, so nothing is promoted until it is served; ``keep`` leaves the
   champion) or a crash before that leaves the champion's state, the data and the ledger as they were, and the
   same request can be retried (from the version it was served from).

The requested ids get the certification verdict of their own subset in the final audit (``mia.certify``):
``certified``, ``not_certified`` or, for the few records a request usually names, ``too_few``; ``distinguishable``
when some attack's AUC interval on them lies above 0.5 (a version with that verdict is never promoted). The generator
that makes the synthetic replacements was trained on the requested records: the request says what bounds what the
replacements carry of them (``model_card.requested_coverage``: the DP generator's (epsilon, delta), with no
retraining; nothing, for the non-private one), in its log, its run's ``forget_generator_coverage`` tag and its
summary; ``--refresh-generator true`` retrains the generator without them (and without every earlier deletion) for
the replacements this request makes (docs/deletion.md says what each mode guarantees).

    mlflow run . -e forget -P ids=request.txt --env-manager local
    mlflow run . -e promote -P version=3 --env-manager local
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import mlflow
import numpy as np

from fairforget.components.bias import measure_bias
from fairforget.components.canaries import inserted_canary_count, with_canaries
from fairforget.components.atomic import atomic_folder
from fairforget.components.approval import gate_key, signature_problem
from fairforget.components.copies import image_digests
from fairforget.components.dataset import load_dataset, read_ids, save_dataset
from fairforget.components.forgetting import replenish_seed_base
from fairforget.components.gate import (
    CONTAINS_DELETED_TAG,
    POLICY_FILE,
    OPEN_DELETION_FROM_TAG,
    OPEN_DELETION_TAG,
    REQUESTED_VERDICT_TAG,
    UNSERVE,
    load_policy,
    requested_verdict,
)
from fairforget.components.mia.certify import TOO_FEW
from fairforget.components.journal import Journal
from fairforget.components.ledger import append_to_ledger, apply_ledger, ledger_ids, ledger_path
from fairforget.components.locks import data_lock, exclusive
from fairforget.components.model_card import requested_coverage
from fairforget.components.priors import build_target
from fairforget.components.run_state import CONFIG_FILE, PROGRESS_FILE, SNAPSHOT_DIR
from fairforget.components.sisa.model import SisaModel
from fairforget.components.versioning import config_hash, dvc_md5_of_folder
from fairforget.errors import DataError, PromotionRefused
from fairforget.pipelines.cli import OneLineParser, str2bool
from fairforget.pipelines.config import PipelineConfig
from fairforget.pipelines.data_steps import dvc_track
from fairforget.pipelines.deletion_report import CLEAN, deletion_report, purge_copies
from fairforget.pipelines.faults import fault_point
from fairforget.pipelines.ledger_mirror import checked_ledger_ids, ledger_source, mirror_ledger, restore_ledger
from fairforget.pipelines.loop import audit_pool, build_loop, final_audit, log_outcome, publish
from fairforget.pipelines.registry import CHAMPION, promote, registered_by_run, set_signed_tags
from fairforget.pipelines.tracking import (
    start_process,
    configure_tracking,
    log_data_version,
    project_path,
    run_cli,
    step_run,
)
from fairforget.pipelines.train_generator import get_or_train_generator, load_generator_from_run

log = logging.getLogger("fairforget")
FORGET_STEP_OFFSET = 10_000  # request n replenishes with the seeds of loop step 10_000 + n (never a loop step)


COMMITTED_POLICY = POLICY_FILE  # the policy in git: a promotion's policy file may be stricter, never laxer


def champion_of(model_name: str, alias: str):
    """The version a request is served from: the one with ``alias``, or, while an earlier request is open (its new
    version failed and the champion was unserved), the version that request was served from."""
    client = mlflow.MlflowClient()
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except mlflow.exceptions.MlflowException as err:
        try:
            served_from = client.get_registered_model(model_name).tags.get(OPEN_DELETION_FROM_TAG)
        except mlflow.exceptions.MlflowException:
            served_from = None
        if served_from:
            return client.get_model_version(model_name, served_from)
        raise DataError(f"no version of {model_name} has alias {alias!r} ({err.error_code}): promote one first "
                        f"(`mlflow run . -e promote -P version=N`)") from err


def unserve(model_name: str, alias: str, request_run: str, reason: str, served_from: str) -> None:
    """Remove ``alias`` (nothing that holds the requested records is served) and mark the request open: no
    promotion until it is served (``registry.promote``), and a retry is served from ``served_from``."""
    client = mlflow.MlflowClient()
    try:
        client.delete_registered_model_alias(model_name, alias)
    except mlflow.exceptions.MlflowException:
        pass  # no such alias: nothing was served
    client.set_registered_model_tag(model_name, OPEN_DELETION_TAG, f"request {request_run}: {reason}"[:4000])
    client.set_registered_model_tag(model_name, OPEN_DELETION_FROM_TAG, str(served_from))


def close_open_request(model_name: str) -> None:
    client = mlflow.MlflowClient()
    for tag in (OPEN_DELETION_TAG, OPEN_DELETION_FROM_TAG):
        try:
            client.delete_registered_model_tag(model_name, tag)
        except mlflow.exceptions.MlflowException:
            pass


def serve_new_version(model_name: str, alias: str, version: str, policy, request_run: str, served_from: str) -> str:
    """After the request is committed: move ``alias`` (``champion``) to the new ``version`` when it meets the
    policy in force, else unserve. Returns what happened, for the summary."""
    close_open_request(model_name)
    if alias != CHAMPION:
        return f"alias {alias!r} left as it is (only {CHAMPION!r} follows a served request)"
    decision = promote(model_name, version, policy)
    if decision.passed:
        return f"{CHAMPION} -> version {version}"
    unserve(model_name, alias, request_run, f"version {version} is not promotable: {decision.reason}", served_from)
    return f"{CHAMPION} removed: version {version} is not promotable ({decision.reason})"


def copy_state(source: Path, target: Path) -> None:
    """Copy a loop state folder; content-addressed checkpoints (immutable) are hard-linked, the rest copied."""
    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    with atomic_folder(target) as tmp:
        shutil.copytree(source, tmp, copy_function=link_or_copy, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(SNAPSHOT_DIR, "augmented", ".lock", PROGRESS_FILE))
        for name in ("sisa/plan.csv", "sisa/sisa.json"):  # rewritten by the copy's unlearning: not shared with source
            (tmp / name).unlink()
            shutil.copy2(source / name, tmp / name)


def versions_holding(model_name: str, ids: set[str], exclude: str) -> list[str]:
    """Registered versions of ``model_name`` (other than ``exclude``) whose SISA state still holds one of ``ids``."""
    client = mlflow.MlflowClient()
    holding = []
    for version in client.search_model_versions(f"name = '{model_name}'"):
        if str(version.version) == str(exclude):
            continue
        try:
            plan = SisaModel.read_plan(project_path(version.tags.get("state_dir", "")) / "sisa")
        except FileNotFoundError:
            holding.append(str(version.version))  # no state to check: assume it holds them
            continue
        if set(plan.live_ids()) & set(ids):
            holding.append(str(version.version))
    return holding


def serve_deletion_request(ids: list[str], model_name: str = "fairforget-classifier", alias: str = CHAMPION, *,
                           refresh_generator: bool = False) -> dict:
    """Forget ``ids`` from the model behind ``models:/<model_name>@<alias>`` (see the module docstring); return a
    summary dict."""
    configure_tracking()
    version = champion_of(model_name, alias)
    tags = version.tags
    forged = signature_problem(model_name, version.version, tags, gate_key())
    if forged:
        raise PromotionRefused(f"the deletion request is not served from it: {forged}")
    state_dir = project_path(tags.get("state_dir", ""))
    if not (state_dir / CONFIG_FILE).is_file():
        raise DataError(f"{model_name} version {version.version} has no SISA state at {state_dir}: only versions "
                        "registered by this project's pipeline on this machine can serve deletion requests")
    config = PipelineConfig.from_dict(json.loads((state_dir / CONFIG_FILE).read_text()))
    data_dir = project_path(tags.get("data_dir", config.data_dir))
    journal = journal_of(project_path(config.outputs_dir), model_name)
    with exclusive(project_path(config.outputs_dir) / ".locks" / f"{model_name}.lock", f"the model {model_name}"), \
            exclusive(data_lock(data_dir), f"the data folder {data_dir}"):
        finished = finish_open_commit(journal)
        if finished is None:
            return _serve_request(ids, model_name, alias, refresh_generator, version, tags, state_dir, config,
                                  data_dir, journal)
    if set(ids) <= set(finished["ids"]):
        return finished  # the request that was killed was this one: it is served now
    # another request was finished first: the champion has moved, so start again from it
    return serve_deletion_request(ids, model_name, alias, refresh_generator=refresh_generator)


def _serve_request(ids, model_name, alias, refresh_generator, version, tags, state_dir, config, data_dir,
                   journal) -> dict:
    """``serve_deletion_request`` under the model's and the data folder's locks, no commit left open."""
    dataset = load_dataset(data_dir)
    deleted_before = checked_ledger_ids(data_dir, ledger_source(dataset.config))
    deleted_images = dataset.images[np.isin(dataset.ids.astype(str), list(ids))]  # for the deletion report
    known = set(dataset.split("train").ids.astype(str)) | deleted_before
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise DataError(f"{len(unknown)} ids are not original training records, e.g. {unknown[:3]}: check the "
                        "request (only original records can be forgotten; synthetic ones carry no one's data)")
    plan = SisaModel.read_plan(state_dir / "sisa")
    live = set(plan.live_ids())
    already = [i for i in ids if i not in live]
    # what this request forgets: the requested ids the champion still holds, and every id an earlier request
    # deleted that the champion still holds (a request served before the champion was promoted)
    to_forget = [i for i in dict.fromkeys([*ids, *sorted(deleted_before)]) if i in live]
    if already:
        print(f"forget: {len(already)} of the {len(ids)} ids were already forgotten (by the loop or an earlier "
              f"request), e.g. {already[:3]}: skipped")
    with step_run("forget", {"ids": len(ids), "model": f"{model_name}@{alias}", "from_version": version.version,
                             "refresh_generator": refresh_generator}, config.data.dataset, data_dir) as run:
        mlflow.log_metrics({"forget/requested": len(ids), "forget/already_forgotten": len(already),
                            "forget/forgotten_now": len(to_forget)})
        new_state = project_path(config.outputs_dir) / config.state_key() / run.info.run_id
        journal.write({"request_id": run.info.run_id, "ids": list(ids), "model_name": model_name,
                       "alias": alias, "from_version": str(version.version), "data_dir": str(data_dir),
                       "outputs_dir": str(project_path(config.outputs_dir)), "new_state": str(new_state),
                       "policy_file": str(project_path(config.policy_file)),
                       "data_md5_when_served": dvc_md5_of_folder(data_dir),
                       "digests": sorted(image_digests(deleted_images)),
                       "image_shape": list(dataset.images.shape[1:]), "already_forgotten": len(already),
                       "done": []})
        copy_state(state_dir, new_state)
        try:
            summary = _serve(ids, to_forget, config, dataset, data_dir, tags, version, new_state, run,
                             model_name, refresh_generator, deleted_before)
        except BaseException:
            shutil.rmtree(new_state, ignore_errors=True)
            journal.close()
            raise
        policy = load_policy(project_path(config.policy_file))
        if summary["registered_version"] is None:
            journal.close()
            shutil.rmtree(new_state, ignore_errors=True)
            if policy.on_failed_deletion == UNSERVE:
                reason = mlflow.MlflowClient().get_run(run.info.run_id).data.tags.get("gate_reason", "rejected")
                unserve(model_name, alias, run.info.run_id, f"its new version was rejected: {reason}",
                        version.version)
                print(f"forget: the new version was rejected, so '{alias}' was removed (on_failed_deletion="
                      f"{UNSERVE}): no version holding the records is served; the data and the ledger are as "
                      "before and the request stays open: retry it")
                summary["served"] = f"{alias} removed"
            else:
                print("forget: nothing changed (the champion, its state, the data and the ledger are as before); "
                      "the request can be retried")
                summary["served"] = f"{alias} kept (on_failed_deletion={policy.on_failed_deletion})"
            return summary
        fault_point("forget:registered")
        record = journal.read()
        record["new_version"] = summary["registered_version"]
        journal.write(record)
        return {**summary, **complete_commit(journal, record)}


# The served request's commit, in order; each step is idempotent and recorded in the journal once done.
COMMIT_STEPS = ("ledger", "data", "tags", "alias", "retire", "report")


def journal_of(outputs_dir: Path, model_name: str) -> Journal:
    """The commit journal of ``model_name``'s deletion requests (under its outputs folder, beside its lock)."""
    return Journal(Path(outputs_dir) / ".journal" / f"{model_name}.json")


def complete_commit(journal: Journal, record: dict) -> dict:
    """Run the commit steps ``record`` has not done yet (``COMMIT_STEPS``), recording each in ``journal``, then
    close it; returns the summary of the commit. Killed at any point, a rerun finishes it with the same end state."""
    ids, model_name, version = record["ids"], record["model_name"], record["new_version"]
    data_dir, request_id = Path(record["data_dir"]), record["request_id"]
    ledger = ledger_path(data_dir)
    for step in COMMIT_STEPS:
        if step in record["done"]:
            continue
        if step == "ledger":
            added = append_to_ledger(ledger, ids, request_id=request_id, model_version=version)
            mirror_ledger(data_dir, ledger_source(load_dataset(data_dir).config), request_id)
            print(f"forget: {added} ids added to the ledger {ledger.name}")
        elif step == "data":
            save_dataset(apply_ledger(load_dataset(data_dir), ledger_ids(ledger)), data_dir)
            dvc_track(data_dir)
            dvc_track(ledger)
            print(f"forget: {data_dir.name}/ rewritten without them")
        elif step == "tags":
            rewritten = dvc_md5_of_folder(data_dir)
            set_signed_tags(model_name, version, {"data_md5_when_served": record["data_md5_when_served"],
                                                  "data_md5": rewritten, "audit_data_md5": rewritten})
            record["holding"] = versions_holding(model_name, set(ids), exclude=version)
            for held in record["holding"]:
                set_signed_tags(model_name, held, {CONTAINS_DELETED_TAG: "true"})
            print(f"forget: versions {record['holding'] or 'none'} tagged {CONTAINS_DELETED_TAG}=true")
        elif step == "alias":
            record["served"] = serve_new_version(model_name, record["alias"], version,
                                                 load_policy(record["policy_file"]), request_id,
                                                 record["from_version"])
            print(f"forget: {record['served']}")
        elif step == "retire":
            for held in record["holding"]:  # after the alias moved: nothing served breaks
                retire_version(model_name, held)
            if record["holding"]:
                print(f"forget: versions {record['holding']} retired (model artifacts and SISA state deleted; "
                      "tombstones kept)")
        elif step == "report":
            record["deletion_report"] = report_deletion(record)
        fault_point(f"commit:{step}")  # the hardest place to die: the step done, the journal not yet told
        record["done"].append(step)
        journal.write(record)
    journal.close()
    return {"served": record["served"], "retired_versions": record["holding"],
            "already_forgotten": record["already_forgotten"], "deletion_report": record["deletion_report"]}


def finish_open_commit(journal: Journal) -> dict | None:
    """Finish (the new version was registered) or roll back (it was not) a commit a killed request left open;
    returns the finished commit's summary, or None when there was none or it was rolled back."""
    record = journal.read()
    if record is None:
        return None
    client = mlflow.MlflowClient()
    version = record.get("new_version") or registered_by_run(record["model_name"], record["request_id"])
    if version is None or client.get_model_version(record["model_name"], version).tags.get("gate") != "passed":
        if version is not None:  # registered, killed before the gate's tags: a bare version nothing may serve
            client.delete_model_version(record["model_name"], version)
        shutil.rmtree(record["new_state"], ignore_errors=True)
        journal.close()
        _terminate(record["request_id"], "FAILED")
        print(f"forget: the interrupted request {record['request_id']} had registered nothing: rolled back (the "
              "champion, the data and the ledger are as they were)")
        return None
    record["new_version"] = str(version)
    print(f"forget: finishing the interrupted request {record['request_id']} (version {version}; done: "
          f"{', '.join(record['done']) or 'nothing yet'})")
    summary = complete_commit(journal, record)
    _terminate(record["request_id"], "FINISHED")
    return {"run_id": record["request_id"], "requested": len(record["ids"]), "ids": record["ids"], "gate": "passed",
            "registered_version": str(version), "resumed": True, **summary}


def _open_commit_of(model_name: str) -> dict | None:
    """The open commit record of ``model_name``'s requests, looked up in the outputs folder of each of its versions'
    configurations (where ``forget`` keeps the journal); None when there is none."""
    folders = set()
    try:
        versions = mlflow.MlflowClient().search_model_versions(f"name = '{model_name}'")
    except mlflow.exceptions.MlflowException:
        return None
    for version in versions:
        config_file = project_path(version.tags.get("state_dir", "")) / CONFIG_FILE
        if version.tags.get("state_dir") and config_file.is_file():
            folders.add(project_path(json.loads(config_file.read_text()).get("outputs_dir", "outputs")))
    for folder in sorted(folders):
        record = journal_of(folder, model_name).read()
        if record is not None:
            return record
    return None


def _terminate(run_id: str, status: str) -> None:
    client = mlflow.MlflowClient()
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status)
    except mlflow.exceptions.MlflowException:
        pass


def report_deletion(record: dict) -> str:
    """Purge what is left, search every store for the deleted images (their digests in the commit ``record``), log
    ``deletion_report.json`` to the request's run and tag the new version with the verdict (``deletion_report``);
    ``deletion_request`` is ``served`` only when the report is clean, else ``incomplete``. Returns the verdict."""
    outputs_dir, data_dir = Path(record["outputs_dir"]), Path(record["data_dir"])
    digests, shape = set(record["digests"]), tuple(record["image_shape"])
    model_name, new_version = record["model_name"], record["new_version"]
    purge = purge_copies(digests, shape, data_dir=data_dir, outputs_dir=outputs_dir, keep=Path(record["new_state"]))
    report = deletion_report(record["ids"], digests, shape, data_dir=data_dir, outputs_dir=outputs_dir,
                             model_name=model_name, holding_versions=record["holding"], purge=purge,
                             request_id=record["request_id"])
    mlflow.MlflowClient().log_dict(record["request_id"], report, "deletion_report.json")
    set_signed_tags(model_name, new_version, {"deletion_report": report["verdict"],
                                              "deletion_request": "served" if report["verdict"] == CLEAN
                                              else "incomplete"})
    searched = ", ".join(f"{name} {store['copies']}" for name, store in report["stores"].items())
    print(f"forget: deletion report {report['verdict']}: {len(digests)} images searched by content hash; copies "
          f"per store: {searched}; servable versions holding the ids: "
          f"{report['registry']['versions_holding_ids_servable'] or 'none'}"
          + (f"; not searched: {'; '.join(report['not_searched'])}" if report["not_searched"] else "")
          + (f"; purged {len(purge['state_folders_removed'])} folders" if purge["state_folders_removed"]
             else "") + f"; {purge['dvc_gc']}")
    return report["verdict"]


def _serve(ids, to_forget, config, dataset, data_dir, tags, version, state_dir, run, model_name, refresh_generator,
           deleted_before) -> dict:
    data_md5 = log_data_version(data_dir)
    original_train = dataset.split("train")
    reference = dataset.split("reference")
    target = build_target(original_train.manifest, config.balance.attributes, prior=config.balance.prior,
                          structure=config.balance.structure,
                          reference_manifest=reference.manifest if len(reference) else None, seed=config.data.seed)
    # the champion's canaries, counted in its plan: the data's train split is smaller after each served request
    plan_ids = SisaModel.read_plan(state_dir / "sisa").table["id"]
    instruments = audit_pool(dataset, config, canaries=inserted_canary_count(plan_ids))
    synthetic = load_dataset(state_dir / "synthetic")
    sisa = SisaModel.load(state_dir / "sisa", with_canaries(original_train, instruments.canaries).concat(synthetic),
                          forgetting=to_forget)
    if refresh_generator:
        deleted = deleted_before | set(ids)
        remaining = apply_ledger(dataset, deleted)
        # cached by the data version and the deleted ids: a retry, or a later request with the same ledger, reuses it
        version_key = f"{data_md5}-without-{config_hash(sorted(deleted))}"
        generator, generator_info = get_or_train_generator(remaining, version_key, config.generator,
                                                           dataset_name=config.data.dataset,
                                                           canaries=instruments.canaries)
        print(f"forget: replacements come from a generator retrained without the deleted records "
              f"(run {generator_info['run_id']})")
    else:
        generator = load_generator_from_run(tags["generator_run_id"])
        generator_metrics = mlflow.MlflowClient().get_run(tags["generator_run_id"]).data.metrics
        generator_info = {"run_id": tags["generator_run_id"], "version": generator.version, "reused": True,
                          "metrics": {k: v for k, v in generator_metrics.items() if k.startswith("generator/")}}
    generator_coverage = requested_coverage(generator_info.get("metrics", {}), refresh_generator)
    print(f"forget: classifier: exact unlearning of the requested records; synthetic replacements: "
          f"{generator_coverage}")
    mlflow.log_metric("forget/generator_refreshed", float(refresh_generator))
    mlflow.set_tag("forget_generator_coverage", generator_coverage)
    loop = build_loop(config, dataset, sisa=sisa, synthetic=synthetic, generator=generator, target=target,
                      instruments=instruments, state_dir=state_dir)
    request = int(tags.get("forget_requests", "0")) + 1
    step = None
    if to_forget:
        # a request is one step: its own exactness audit (one shard retrained from scratch) covers it
        step = loop.forget_and_replenish(to_forget, seed_base=replenish_seed_base(config.augment.seed,
                                                                                  FORGET_STEP_OFFSET + request),
                                         audit=True)
    fault_point("forget:unlearned")
    outcome = loop.evaluate(0, step=step)
    log_outcome(outcome, loop.tolerance)
    present = [i for i in ids if i in set(original_train.ids.astype(str))]
    final = final_audit(loop, {"requested": present} if present else None)
    verdict = requested_verdict(final.report, loop.tolerance) if present else TOO_FEW
    mlflow.log_metric("forget/requested_certified", float(verdict == "certified"))
    mlflow.set_tag(REQUESTED_VERDICT_TAG, verdict)
    if present and "requested" in final.report.results:
        print(f"forget: {len(to_forget)} ids unlearned exactly; requested ids: "
              f"{final.report.certificate('requested').explain(loop.tolerance)}")
    save_dataset(loop.synthetic, state_dir / "synthetic")
    before = measure_bias(original_train.manifest, target.priors())
    after = measure_bias(loop.current().manifest, target.priors())
    decision, new_version = publish(
        loop, config, outcome, final, data_md5=data_md5, bias_before=before, bias_after=after,
        history=[outcome.history_row(loop.tolerance)], generator_info=generator_info, state_dir=state_dir,
        run_id=run.info.run_id,
        extra_tags={"forget_requests": str(request), "served_from_version": str(version.version),
                    REQUESTED_VERDICT_TAG: verdict, "generator_refreshed": str(refresh_generator).lower()},
        natural_detected={"true": True, "false": False}.get(tags.get("natural_members_detected")))
    return {"run_id": run.info.run_id, "requested": len(ids), "forgotten": len(to_forget),
            "requested_verdict": verdict, "generator_coverage": generator_coverage,
            "gate": "passed" if decision.passed else "rejected", "registered_version": new_version}


def model_id_of(uri_or_id: str) -> str | None:
    """The logged-model id in ``models:/m-...`` (or a bare ``m-...``); None for anything else."""
    tail = str(uri_or_id).removeprefix("models:/").split("/")[0]
    return tail if tail.startswith("m-") else None


def retire_version(model_name: str, version: str) -> list[str]:
    """Make a version that holds deleted records unservable and drop its copies: the artifacts of its logged models
    (the pyfunc and the ONNX export, in whatever artifact store holds them) are deleted and the logged models
    marked deleted, its SISA state folder (checkpoints that saw the records) is removed, and the version stays in
    the registry as a tombstone (tags ``retired=true`` and ``contains_deleted=true``, description saying so).
    Returns what was deleted."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = mlflow.MlflowClient()
    held = client.get_model_version(model_name, version)
    if held.tags.get("retired") == "true":
        return []  # a tombstone already: nothing of it is left to delete
    deleted = []
    for model_id in {model_id_of(held.model_id or held.source), model_id_of(held.tags.get("onnx_uri", ""))} - {None}:
        try:
            location = client.get_logged_model(model_id).artifact_location
        except mlflow.exceptions.MlflowException:
            continue  # already gone
        get_artifact_repository(location).delete_artifacts()
        client.delete_logged_model(model_id)
        deleted.append(location)
    state = held.tags.get("state_dir")
    if state and project_path(state).is_dir():
        shutil.rmtree(project_path(state))
        deleted.append(str(project_path(state)))
    set_signed_tags(model_name, version, {"retired": "true", CONTAINS_DELETED_TAG: "true"})
    client.update_model_version(model_name, version, description=(
        "Retired: this version held records deleted on request. Its model artifacts and its SISA state were deleted; "
        "it cannot be served or promoted. Its tags remain as the record of what it was."))
    return deleted


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    forget = sub.add_parser("forget", help="serve a deletion request against the champion")
    forget.add_argument("--ids", required=True, help="file with one original record id per line (or CSV with id)")
    forget.add_argument("--model-name", default="fairforget-classifier")
    forget.add_argument("--alias", default=CHAMPION)
    forget.add_argument("--refresh-generator", type=str2bool, default=False,
                        help="retrain the generator without the deleted records for the replacements")
    prom = sub.add_parser("promote", help="move alias champion to a gated version")
    prom.add_argument("--version", required=True)
    prom.add_argument("--model-name", default="fairforget-classifier")
    prom.add_argument("--policy-file", default=POLICY_FILE, help="the registry policy in force")
    restore = sub.add_parser("restore-ledger", help="write the tracking store's mirror of the deletion ledger back")
    restore.add_argument("--data-dir", default="data", help="the data folder whose ledger (beside it) is restored")
    restore.add_argument("--dataset", default="", help="the source's data set (default: the data folder's own)")
    restore.add_argument("--source-dir", default="", help="the source folder of dataset folder or celeba")
    finish = sub.add_parser("finish", help="finish (or roll back) a deletion request's interrupted commit")
    finish.add_argument("--model-name", default="fairforget-classifier")
    finish.add_argument("--outputs-dir", default="outputs", help="where the request's journal is kept")
    args = parser.parse_args(argv)
    start_process()
    if args.command == "finish":
        return run_cli(lambda: finish_step(args.model_name, args.outputs_dir))
    if args.command == "forget":
        return run_cli(lambda: serve_deletion_request(read_ids(args.ids), args.model_name, args.alias,
                                                      refresh_generator=args.refresh_generator))
    if args.command == "restore-ledger":
        return run_cli(lambda: restore_ledger_step(args.data_dir, args.dataset or None, args.source_dir or None))
    return run_cli(lambda: promote_version(args.model_name, args.version, args.policy_file))


def finish_step(model_name: str, outputs_dir: str = "outputs") -> dict | None:
    """``finish``: the interrupted commit of ``model_name``'s last request finished (or rolled back), under the
    model's and the data folder's locks; prints what happened (nothing when no commit is open)."""
    configure_tracking()
    outputs = project_path(outputs_dir)
    journal = journal_of(outputs, model_name)
    record = journal.read()
    if record is None:
        print(f"finish: no interrupted deletion request of {model_name} in {outputs}")
        return None
    data_dir = Path(record["data_dir"])
    with exclusive(outputs / ".locks" / f"{model_name}.lock", f"the model {model_name}"), \
            exclusive(data_lock(data_dir), f"the data folder {data_dir}"):
        return finish_open_commit(journal)


def restore_ledger_step(data_dir: str, dataset: str | None = None, source_dir: str | None = None) -> None:
    """``restore-ledger``: the mirror's rows written back into the ledger beside ``data_dir`` (under the data
    folder's lock, DVC-tracked when it is the project's); the source is ``dataset``/``source_dir``, else the one
    the data folder was prepared from, else the default data set."""
    from fairforget.components.data import DataConfig
    from fairforget.components.ledger import ledger_path

    configure_tracking()
    folder = project_path(data_dir)
    if dataset:
        record = {"dataset": dataset, "source_dir": source_dir}
    else:
        try:
            record = load_dataset(folder).config
        except DataError:
            record = DataConfig().stored_record()
    source = ledger_source(record)
    with exclusive(data_lock(folder), f"the data folder {folder}"):
        restored = restore_ledger(folder, source)
        dvc_track(ledger_path(folder))
    print(f"restore-ledger: {restored} records of {source!r} written back into {ledger_path(folder)}")


def promote_version(model_name: str, version: str, policy_file: str = POLICY_FILE) -> None:
    """``promote`` for the command line: checks the version against the policy in force now; raises
    ``PromotionRefused`` with the reasons when the rules refuse."""
    configure_tracking()
    policy = load_policy(project_path(policy_file))
    committed = project_path(COMMITTED_POLICY)
    if committed.is_file() and project_path(policy_file).resolve() != committed.resolve():
        looser = policy.looser_than(load_policy(committed))
        if looser:
            raise PromotionRefused(f"promotion refused: {policy_file} is laxer than the committed {COMMITTED_POLICY} "
                                   f"({'; '.join(looser)}): promote under the committed policy, or a stricter one")
    open_commit = _open_commit_of(model_name)
    if open_commit is not None:
        raise PromotionRefused(f"promotion refused: the commit of deletion request {open_commit['request_id']} was "
                               f"interrupted; finish it first: `mlflow run . -e finish -P model_name={model_name} "
                               f"-P outputs_dir={open_commit.get('outputs_dir', 'outputs')}`")
    decision = promote(model_name, version, policy)
    if not decision.passed:
        raise PromotionRefused(f"promotion refused: {decision.reason}")
    print(f"promote: {model_name} version {version} is now '{CHAMPION}'")


if __name__ == "__main__":
    sys.exit(main())
