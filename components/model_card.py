"""The model card (markdown) attached to every registered version and logged with every pipeline run."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from fairforget.components.bias import BiasReport
from fairforget.components.gate import FINAL_EXACTNESS_STAGE, exactness_verdict, generator_audit_verdict


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _bias_rows(report: BiasReport) -> list[str]:
    rows = []
    for item in report.attributes:
        observed = ", ".join(f"{c} {p:.3f}" for c, p in zip(item.categories, item.observed))
        rows.append(f"| {item.attribute} | {observed} | {item.kl:.4f} |")
    return rows


def generator_privacy_lines(metrics: Mapping[str, float]) -> list[str]:
    """What a served deletion request guarantees for the synthetic replacements, from the generator's metrics:
    its privacy mode (DP epsilon and delta), and its membership audit against its chance bound."""
    lines = []
    if "generator/dp_epsilon" in metrics:
        lines += [f"- mode: **differentially private** (DP-SGD, epsilon = {metrics['generator/dp_epsilon']:.2f}, "
                  f"delta = {metrics.get('generator/dp_delta', float('nan')):.2e}, per record of S; Poisson sampling "
                  f"rate {metrics.get('generator/dp_sample_rate', float('nan')):.4f}, noise multiplier "
                  f"{metrics.get('generator/dp_noise_multiplier', float('nan')):.3f}, clipping norm "
                  f"{metrics.get('generator/dp_max_grad_norm', float('nan')):.2f})",
                  "- caveat: the DP recipe's hyper-parameters were chosen on this private data set "
                  "(docs/generator.md); that choice is not accounted for in (epsilon, delta)",
                  "- deletion: every record of S, deleted or not, influenced the replacements only within this "
                  "(epsilon, delta) bound; no generator refresh is needed after a deletion request."]
        if metrics.get("generator/public_pretrain_steps", 0) > 0:
            if metrics.get("generator/public_pretrain_labelled", 1.0):
                used = "images and labels (the labelled-public variant)"
            elif "generator/pseudo_label_epsilon" in metrics:
                used = ("images without their labels, labelled by S's class centroids released with Gaussian noise "
                        f"(epsilon {metrics['generator/pseudo_label_epsilon']:.3g} on its own; "
                        f"{metrics.get('generator/pseudo_labelled_fraction', float('nan')):.0%} of the images "
                        "confident enough to be labelled, composed into the epsilon above)")
            else:
                used = "images without their labels (the classes were learned from S under DP)"
            lines.append("- public data: the autoencoder and the denoiser's pre-training "
                         f"({metrics['generator/public_pretrain_steps']:.0f} steps) learned from the reference split's "
                         f"{used}, which this bound treats as public (it covers S only)")
        else:
            lines.append("- public data: the autoencoder learned from the reference split, which this bound treats "
                         "as public (it covers S only)")
    else:
        lines += ["- mode: **non-private** (the generator learned S directly and is never unlearned)",
                  "- deletion: the replacements carry only what the membership audit below measures; "
                  "`refresh_generator=true` retrains the generator without the deleted records."]
    if "generator/mia/auc" in metrics:
        auc, bound = metrics["generator/mia/auc"], metrics.get("generator/mia/auc_chance_bound", float("nan"))
        verdict = "within its chance bound" if auc <= bound else "**above its chance bound: the generator leaks**"
        lines.append(f"- membership audit of the generator (denoising loss): AUC {auc:.3f} (chance bound "
                     f"{bound:.3f}, {verdict}), TPR at 1% FPR {metrics.get('generator/mia/tpr_at_1pct_fpr', float('nan')):.3f}")
        if "generator/mia/auc_high" in metrics:
            lines.append(f"- its certificate: **{generator_audit_verdict(metrics).replace('_', ' ')}** (largest "
                         f"upper bounds over its attacks: AUC {metrics['generator/mia/auc_high']:.3f}, TPR at 1% FPR "
                         f"{metrics['generator/mia/tpr_at_1pct_fpr_high']:.3f}; "
                         f"{metrics['generator/mia/members']:.0f} training records vs "
                         f"{metrics['generator/mia/non_members']:.0f} unseen; the policy's default tolerances)")
    else:
        lines.append("- membership audit of the generator: not measured")
    return lines


def dp_guarantee(generator_metrics: Mapping[str, float]) -> str:
    """``(epsilon, delta)-DP`` of a DP generator's logged metrics, e.g. ``(9.99, 1.0e-05)-DP``."""
    return (f"({generator_metrics['generator/dp_epsilon']:.3g}, "
            f"{generator_metrics.get('generator/dp_delta', float('nan')):.1e})-DP")


def privacy_coverage(generator_metrics: Mapping[str, float], verdicts: Mapping[str, str],
                     exactness: str) -> dict[str, str]:
    """What protects each set of original records in this version, one line each: ``forgotten`` (exact unlearning
    of the classifier; the generator's (epsilon, delta) or nothing for what the replacements carry; the audit),
    ``retained`` (the audit only: the classifier still holds them) and ``generator`` (every original the
    generator trained on, forgotten or not). ``verdicts``: the final audit's verdict per set."""
    if "generator/dp_epsilon" in generator_metrics:
        dp = f"{dp_guarantee(generator_metrics)} generator"
        through_generator, generator = f"bounded by the {dp}", f"{dp}: proven for every record it trained on"
    else:
        through_generator = "not bounded: forgotten records may remain recoverable through the synthetic data"
        generator = "none (non-private generator): only its membership audit below measures what it keeps"
    return {"forgotten": f"classifier: exact unlearning ({exactness}); synthetic replacements: {through_generator}; "
                         f"audit: {verdicts.get('forgotten', 'n/a')}",
            "retained": f"audit only (the classifier holds them): {verdicts.get('retained', 'n/a')}",
            "generator": generator}


def requested_coverage(generator_metrics: Mapping[str, float], refreshed: bool) -> str:
    """One sentence for a deletion request: what bounds what the synthetic replacements carry of the requested
    records. ``generator_metrics``: the metrics of the generator that makes the replacements (its run's);
    ``refreshed``: that generator was retrained without the requested records. The classifier's side is exact
    unlearning whatever the generator."""
    if refreshed:
        return ("the replacements come from a generator retrained without the requested records: they carry "
                "nothing of them")
    if "generator/dp_epsilon" in generator_metrics:
        return (f"the generator trained on the requested records under {dp_guarantee(generator_metrics)}: what its "
                "replacements carry of them is bounded by that guarantee, with no retraining")
    return ("the generator trained on the requested records without DP: its replacements may carry them "
            "(refresh_generator=true retrains it without them)")


def coverage_tags(generator_metrics: Mapping[str, float]) -> dict[str, str]:
    """Model-version tags of ``privacy_coverage``: ``coverage_forgotten`` (``exact_unlearning+dp`` or
    ``exact_unlearning_only``) and ``coverage_retained`` (``audit_only``)."""
    dp = "generator/dp_epsilon" in generator_metrics
    return {"coverage_forgotten": "exact_unlearning+dp" if dp else "exact_unlearning_only",
            "coverage_retained": "audit_only"}


def render_model_card(model_name: str, data_md5: str, code_version: str, bias_before: BiasReport,
                      bias_after: BiasReport, history: Sequence[Mapping[str, Any]], final_metrics: Mapping[str, float],
                      audit_summary: str, generator_info: Mapping[str, Any], decision, parameters: Mapping[str, Any],
                      onnx_max_abs_diff: float, final_verdicts: Mapping[str, str] | None = None) -> str:
    """A self-contained markdown card: data, bias, accuracy and fairness, privacy audit, unlearning, generator."""
    biased = next((row for row in history if row.get("stage") == "biased"), {})
    iterations = [row for row in history if "iteration" in row]
    final_check = [row for row in history if row.get("stage") == FINAL_EXACTNESS_STAGE]
    superclasses = sorted(k.split("/", 1)[1] for k in final_metrics
                          if k.startswith("acc/") and k.count("/") == 1 and k.split("/")[1] not in
                          {"test", "retain", "worst_class", "worst_superclass"})
    lines = [
        f"# Model card: {model_name}",
        "",
        "An ensemble of SISA shard classifiers trained on a debiased mix of real and synthetic images, from which the "
        "original records were unlearned step by step (fairforget, Algorithm 2).",
        "",
        "## Versions",
        f"- data (DVC md5): `{data_md5}`",
        f"- code (git commit): `{code_version}`",
        f"- generator: `{generator_info.get('version', 'n/a')}` (run `{generator_info.get('run_id', 'n/a')}`, "
        f"{'reused' if generator_info.get('reused') else 'trained in this run'})",
        f"- registry gate: **{'passed' if decision.passed else 'rejected'}** ({decision.reason})",
        f"- ONNX export: max |onnx - pyfunc| = {onnx_max_abs_diff:.2e} on the test set",
        "",
        "## Bias (KL(D || P), natural log)",
        "| attribute | distribution before | KL before |",
        "|---|---|---|",
        *_bias_rows(bias_before),
        "",
        "| attribute | distribution after augmentation | KL after |",
        "|---|---|---|",
        *_bias_rows(bias_after),
        "",
        "## Accuracy and fairness (test set)",
        "| model | test | worst class | " + " | ".join(superclasses) + " | superclass gap |",
        "|---|---|---|" + "---|" * len(superclasses) + "---|",
    ]
    if biased:
        lines.append("| trained on the biased data | " + " | ".join(
            _fmt(biased.get(k, float("nan"))) for k in ["acc/test", "acc/worst_class"] +
            [f"acc/{s}" for s in superclasses] + ["fair/superclass_gap"]) + " |")
    lines.append("| this model | " + " | ".join(
        _fmt(final_metrics.get(k, float("nan"))) for k in ["acc/test", "acc/worst_class"] +
        [f"acc/{s}" for s in superclasses] + ["fair/superclass_gap"]) + " |")
    lines += [
        "",
        "## Unlearning (per iteration)",
        "| iteration | retain acc | test acc | worst class | forgotten | originals in S | retained: AUC upper bound, "
        "verdict | forgotten: AUC upper bound, verdict | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in iterations:
        held = [f"{row.get(f'auc_high_{s}', float('nan')):.4f}, {row.get(f'verdict_{s}', 'n/a')}"
                for s in ("retained", "forgotten")]
        lines.append(f"| {row['iteration']} | {row['acc_retain']:.4f} | {row['acc_test']:.4f} | "
                     f"{row['acc_worst_class']:.4f} | {row['forgotten_fraction']:.2f} | {row['original_fraction']:.2f} | "
                     f"{held[0]} | {held[1]} | {row['seconds']:.0f} |")
    if final_check:
        differing = final_check[-1].get("shards_differing") or []
        exactness = ("every shard of this model was then retrained from scratch on its final data and compared bit "
                     "for bit: " + ("all equal." if not differing else f"shards {differing} differ."))
    else:
        exact = final_metrics.get("unlearn/exact")
        exactness = ("the runtime exactness audit (one shard retrained from scratch, compared bit for bit) last "
                     f"reported `unlearn/exact = {_fmt(exact) if exact is not None else 'n/a'}`.")
    lines += [
        "",
        "Every unlearning step retrained the affected shards from the checkpoint before the first affected slice; "
        f"{exactness} Exactness verdict: `{exactness_verdict(history)}`.",
        "",
        "## Privacy audit (membership inference, final model)",
        "```",
        audit_summary,
        "```",
        "",
        "## Generator quality",
    ]
    metrics = generator_info.get("metrics") or {}
    lines += [f"- {k}: {_fmt(v)}" for k, v in sorted(metrics.items()) if not k.startswith(("generator/mia/",
                                                                                        "generator/dp_"))] \
        or ["- not measured in this run"]
    lines += ["", "## Generator privacy (the synthetic replacements)", *generator_privacy_lines(metrics)]
    verdicts = {held: (iterations[-1].get(f"verdict_{held}", "n/a") if iterations else "n/a")
                for held in ("forgotten", "retained")}
    coverage = privacy_coverage(metrics, {**verdicts, **(final_verdicts or {})}, exactness_verdict(history))
    lines += ["", "## What protects each set of records", "| records | protected by |", "|---|---|",
              f"| forgotten originals | {coverage['forgotten']} |", f"| retained originals | {coverage['retained']} |",
              f"| every original the generator trained on | {coverage['generator']} |"]
    lines += ["", "## Parameters", "```json", json.dumps(parameters, indent=1, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)
