"""The MLflow side of Algorithm 2, shared by ``main`` and ``forget``: building the loop's audit instruments,
logging each ``IterationOutcome``, the final audit and publishing through the gate. The resumable state folder
itself is ``components.run_state``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow

from fairforget.components import names
from fairforget.components.canaries import AuditPool, CanaryAudit, CanarySet, cut_audit_pool
from fairforget.components.atomic import write_json_atomically
from fairforget.components.dataset import Dataset
from fairforget.components.forgetting import (
    ForgettingLoop,
    IterationOutcome,
    audit_power_verdict,
    certificate_metrics,
    held_certificates,
    natural_members_detected,
)
from fairforget.components.gate import (
    GateDecision,
    RegistryPolicy,
    certificate_tags,
    evaluate_gate,
    exactness_verdict,
    generator_audit_verdict,
    generator_tags,
    load_policy,
)
from fairforget.components.mia.certify import Certificate, Tolerance
from fairforget.components.generator import Generator
from fairforget.components.mia.reference import target_shard_mix, train_reference_ensembles
from fairforget.components.mia.results import AuditReport
from fairforget.components.model_card import coverage_tags, render_model_card
from fairforget.components.priors import TargetDistribution
from fairforget.components.report import plot_roc_curves
from fairforget.components.run_state import LoopState, commit_iteration
from fairforget.components.sisa.model import SisaModel
from fairforget.components.versioning import config_hash
from fairforget.pipelines.config import PipelineConfig
from fairforget.pipelines.faults import fault_point
from fairforget.pipelines.registry import log_classifier, register_if_passed
from fairforget.pipelines.tracking import PROJECT_ROOT, git_commit, log_figure, project_path



def log_metrics_once(metrics: dict[str, float], step: int) -> None:
    """Log ``metrics`` at ``step`` unless this run already has them at that step (a resumed iteration)."""
    run_id = mlflow.active_run().info.run_id
    client = mlflow.MlflowClient()
    probe = next(iter(metrics), None)
    if probe is not None and any(m.step == step for m in client.get_metric_history(run_id, probe)):
        return
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and not
                        (isinstance(v, float) and math.isnan(v))}, step=step)


# ---- building the loop (main and forget) -------------------------------------------------------------------
def audit_pool(dataset: Dataset, config: PipelineConfig, canaries: int | None = None) -> AuditPool:
    """The run's cut of the audit split: canaries, reference half, non-members (``cut_audit_pool``). ``canaries``:
    the count the run's model was trained with (a deletion request passes its champion's, since the default
    count follows the train split's size, which each served request shrinks); None: ``config``'s for ``dataset``."""
    if canaries is None:
        canaries = config.canary_count(int((dataset.manifest["split"] == "train").sum()))
    return cut_audit_pool(dataset.split("audit"), canaries=canaries, seed=config.audit.seed)


def references_dir(config: PipelineConfig, reference_half: Dataset, shard_mix=None) -> Path:
    """``outputs/references/<hash>``: the reference ensembles of one (reference records, SISA config, target shard
    mix), shared by every run and deletion request that audits alike, so they train once."""
    sisa = config.sisa.to_dict()
    for volatile in ("executor", "max_workers", "ray_address", "progress", "audit_exactness"):
        sisa.pop(volatile)
    key = config_hash({"sisa": sisa, "ids": sorted(map(str, reference_half.ids)), "shard_mix": shard_mix})
    return project_path(config.outputs_dir) / "references" / key


REFERENCE_MIX_FILE = "reference_mix.json"


def reference_shard_mix(state_dir: Path, sisa: SisaModel, canaries: CanarySet | None) -> list[dict[int, int]]:
    """The size and class mix of the target's shards that RMIA's references match (``target_shard_mix``, canaries
    not counted), fixed when a run's loop is first built and kept in its state folder (``reference_mix.json``,
    copied to each deletion request's state), so a resumed run and every deletion request audit with the same
    references and train none."""
    path = state_dir / REFERENCE_MIX_FILE
    if path.is_file():
        return [{int(label): int(count) for label, count in shard.items()} for shard in json.loads(path.read_text())]
    mix = target_shard_mix(sisa.plan, leave_out=canaries.inserted.ids if canaries is not None else ())
    write_json_atomically(path, mix)
    return mix


def effective_policy(config: PipelineConfig) -> RegistryPolicy:
    """The written policy (``config.policy_file``) tightened by the run's gate parameters."""
    return load_policy(project_path(config.policy_file)).tightened(config.gate)


def build_loop(config: PipelineConfig, dataset: Dataset, *, sisa: SisaModel, synthetic: Dataset,
               generator: Generator, target: TargetDistribution, instruments: AuditPool,
               state_dir: Path) -> ForgettingLoop:
    """The ``ForgettingLoop`` of a run (``main``) or of a deletion request (``forget``, ``state_dir`` the copy of
    the champion's): the same members, non-members, canaries, reference models (matching the target's shards:
    ``reference_shard_mix``), settings and certification tolerance (the effective policy's), so both audit alike."""
    shard_mix = reference_shard_mix(state_dir, sisa, instruments.canaries)
    references = train_reference_ensembles(instruments.reference_half, sisa_config=config.sisa,
                                           num_models=config.audit.reference_models, shard_mix=shard_mix,
                                           state_dir=references_dir(config, instruments.reference_half, shard_mix))
    return ForgettingLoop(sisa=sisa, original_train=dataset.split("train"), synthetic=synthetic, generator=generator,
                          target=target, test=dataset.split("test"), non_members=instruments.non_members,
                          references=references, canaries=instruments.canaries,
                          generator_canaries=instruments.canaries.for_generator().ids if instruments.canaries else (),
                          config=config.loop,
                          audit_config=config.audit, guidance_scale=config.augment.guidance_scale,
                          augment_seed=config.augment.seed, tolerance=effective_policy(config).tolerance)


# ---- logging -----------------------------------------------------------------------------------------------
def log_outcome(outcome: IterationOutcome, tolerance: Tolerance, extra: dict[str, float] | None = None) -> None:
    """Log one iteration at ``step = iteration`` (once), with its audit table and summary (certificates under
    ``tolerance``), and print its line."""
    log_metrics_once({**outcome.metrics(tolerance), **(extra or {})}, step=outcome.iteration)
    folder = f"iterations/{outcome.iteration:02d}"
    mlflow.log_table(outcome.audit.table(), f"{folder}/audit_table.json")
    mlflow.log_text(outcome.audit.summary(tolerance), f"{folder}/audit_summary.txt")
    print(outcome.summary())


@dataclass
class FinalAudit:
    """The full audit of the deployed ensemble: the report, the canary audit and the certificates of the
    ``retained`` and ``forgotten`` originals (``held_certificates``)."""

    report: AuditReport
    canaries: CanaryAudit | None
    certificates: dict[str, Certificate]


def verify_exactness(loop: ForgettingLoop, state: LoopState, state_dir: Path) -> None:
    """Retrain every shard from scratch and compare (``verify_final_exactness``); log ``unlearn/final_exact``,
    ``unlearn/final_exactness_s`` and commit the row to the loop's history (a resumed run does not redo it)."""
    print(f"exactness: retraining all {loop.sisa.config.num_shards} shards from scratch to compare with the "
          "unlearned ones")
    row = loop.verify_final_exactness()
    mlflow.log_metrics({names.UNLEARN_FINAL_EXACT: row["unlearn_exact"], names.TIME_FINAL_EXACTNESS: row["seconds"]})
    differing = row["shards_differing"]
    print(f"exactness: {'every shard equals its from-scratch retrain bit for bit' if not differing else f'shards {differing} differ from their from-scratch retrain'} ({row['seconds']:.0f} s)")
    state.history.append(row)
    commit_iteration(state, state_dir, loop.synthetic)


def log_final_audit(final: FinalAudit, tolerance: Tolerance, seconds: float) -> None:
    """``final/mia/...`` (with ``final/mia/retained/certified`` and ``final/mia/forgotten/certified``, and
    ``final/mia/canary/...``), the table, the summary and one ROC figure per member subset."""
    prefix = f"{names.FINAL_PREFIX}/mia"
    metrics = {**final.report.metrics(root=prefix, tolerance=tolerance),
               **certificate_metrics(final.certificates, f"{prefix}/", tolerance), names.TIME_FINAL_AUDIT: seconds}
    if final.canaries is not None:
        metrics.update({f"{names.FINAL_PREFIX}/{k}": v for k, v in final.canaries.metrics().items()})
    mlflow.log_metrics(metrics)
    mlflow.log_table(final.report.table(), "audit/final_table.json")
    verdicts = "\n".join(f"{held} originals: {certificate.explain(tolerance)}"
                         for held, certificate in final.certificates.items())
    mlflow.log_text(final.report.summary(tolerance) + "\n" + verdicts, "audit/final_summary.txt")
    for subset in final.report.results:
        log_figure(plot_roc_curves(final.report.roc_curves(subset), f"Membership inference ROC ({subset} members)"),
                   f"figures/roc_{subset}.png")
    print(final.report.summary(tolerance))
    print(verdicts)
    if final.canaries is not None:
        print(f"final audit canaries: {final.canaries.summary()}")


def final_audit(loop: ForgettingLoop, extra_subsets: dict[str, list[str]] | None = None,
                last: IterationOutcome | None = None) -> FinalAudit:
    """Audit every original record (and the canaries) of the current ensemble and log it (``log_final_audit``).
    ``last``: the outcome of the iteration that left the ensemble as it is now; when its audit was a full one
    (``iteration_audit_size`` None) and no ``extra_subsets`` are asked for, it is that same audit (same model,
    records, subsets and seed: the same numbers) and is reused instead of recomputed."""
    start = time.perf_counter()
    if last is not None and not extra_subsets and loop.config.iteration_audit_size is None:
        report, canaries = last.audit, last.canaries
        fault_point("final_audit")
    else:
        report = loop.audit(extra_subsets=extra_subsets)
        fault_point("final_audit")
        canaries = loop.audit_canaries()
    certificates = held_certificates(report, len(loop.forgotten_originals()), len(loop.live_originals()))
    final = FinalAudit(report, canaries, certificates)
    log_final_audit(final, loop.tolerance, time.perf_counter() - start)
    return final


def publish(loop: ForgettingLoop, config: PipelineConfig, outcome: IterationOutcome, final: FinalAudit, *,
            data_md5: str, bias_before, bias_after, history: list[dict], generator_info: dict, state_dir: Path,
            run_id: str, extra_tags: dict | None = None,
            natural_detected: bool | None = None) -> tuple[GateDecision, str | None]:
    """Log the ensemble (pyfunc + ONNX, parity checked) and the model card, then apply the registry gate to the
    final audit's certificates, the audit's power (canaries, and ``natural_detected``: the iteration-0 audit
    detected the natural members; None reads it from ``history``), unlearning exactness and the test accuracy.
    Returns (gate decision, registered version or None)."""
    policy = effective_policy(config)
    metrics = {**outcome.metrics(policy.tolerance), names.MIA_MAX_SUCCESS: final.report.max_success()}
    natural = natural_members_detected(history) if natural_detected is None else natural_detected
    power = audit_power_verdict(final.canaries, history)
    exactness = exactness_verdict(history)
    generator_metrics = generator_info.get("metrics") or {}
    generator_audit = generator_audit_verdict(generator_metrics, policy.tolerance)
    decision = evaluate_gate(certificates=final.certificates, test_accuracy=metrics[names.ACC_TEST], policy=policy,
                             audit_power=power, generator_audit=generator_audit, exactness=exactness,
                             natural_detected=natural)
    logged = log_classifier(loop.sisa.ensemble(), loop.test.images)
    audit_text = (final.report.summary(policy.tolerance) + "\n\n"
                  + "\n".join(f"- {held} originals: {certificate.explain(policy.tolerance)}"
                              for held, certificate in final.certificates.items())
                  + (f"\n\nCanaries: {final.canaries.summary()}" if final.canaries else ""))
    card = render_model_card(
        model_name=config.gate.model_name, data_md5=data_md5, code_version=git_commit(), bias_before=bias_before,
        bias_after=bias_after, history=history, final_metrics=metrics, audit_summary=audit_text,
        generator_info=generator_info, decision=decision, parameters=config.to_dict(),
        onnx_max_abs_diff=logged.onnx_max_abs_diff,
        final_verdicts={held: c.verdict(policy.tolerance) for held, c in final.certificates.items()})
    mlflow.log_text(card, "model_card.md")
    mlflow.set_tag("audit_power", power)
    now = f"{time.time():.0f}"
    tags = {"data_md5": data_md5, "audit_data_md5": data_md5, "audit_time": now, "data_time": now,
            "git_commit": git_commit(), "run_id": run_id, "mia_max_success": f"{metrics[names.MIA_MAX_SUCCESS]:.4f}",
            "acc_test": f"{metrics[names.ACC_TEST]:.4f}", "audit_power": power, "unlearning_exactness": exactness,
            "natural_members_detected": str(natural).lower(), **certificate_tags(final.certificates),
            "canaries": str(len(loop.canaries) if loop.canaries is not None else 0),
            "forgotten_originals": str(len(loop.forgotten_originals())),
            "state_dir": str(state_dir.relative_to(PROJECT_ROOT) if state_dir.is_relative_to(PROJECT_ROOT)
                             else state_dir),
            "generator_run_id": str(generator_info.get("run_id")), "generator_audit": generator_audit,
            **generator_tags(generator_metrics), **coverage_tags(generator_metrics), **policy.tags(),
            **(extra_tags or {})}
    if final.canaries is not None and final.canaries.epsilon_lower_bound is not None:
        tags["mia_canary_epsilon_lower_bound"] = f"{final.canaries.epsilon_lower_bound:.4f}"
    return decision, register_if_passed(logged, decision, config.gate.model_name, tags, card)
