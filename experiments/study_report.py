"""Write ``docs/results.md`` and its figures from the study's saved results (``docs/results/seed-<s>.json``).

    python -m experiments.study_report            # after ``python -m experiments.study``

Every number is the mean over the seeds with the half-width of its 95% Student-t interval (n - 1 degrees of
freedom); with one seed the interval is not shown. The hand-written parts (how we differ from the paper, the
performance figures of the other benchmarks, CIFAR-10 and CelebA) come from ``docs/results/notes.md`` and are
appended as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parent.parent

RESULTS_DIR = ROOT / "docs" / "results"
PAGE = ROOT / "docs" / "results.md"
STUDY_ITERATIONS, STUDY_FORGET_RATE = 5, 0.2  # the study's loop (experiments.study's defaults)
ATTACK_LABELS = {"mloss": "M-Loss", "mmean": "M-Mean", "moments": "Moments", "rmia": "RMIA"}
METRIC_LABELS = {"success": "success", "auc": "AUC", "tpr_at_1pct_fpr": "TPR@1%FPR"}
MODEL_LABELS = {"biased": "biased S (no unlearning)", "reweighted": "biased S, class re-weighting",
                "oversampled": "biased S, oversampling (repeated real images)",
                "oversampled_in_shards": "biased S, oversampling within each shard",
                "debiased": "S* = S + synthetic (no unlearning)"}


def shown_models(records: list[dict]) -> list[str]:
    """The baselines every seed file holds, in ``MODEL_LABELS`` order (older studies lack the newer baselines)."""
    return [name for name in MODEL_LABELS if all(name in r["baselines"] for r in records)]


def load_records(folder: Path = RESULTS_DIR) -> list[dict]:
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("seed-*.json"))]
    if not records:
        raise FileNotFoundError(f"no results in {folder}: run `python -m experiments.study` first")
    return records


def interval(values) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval); half-width nan for fewer than two finite values."""
    from scipy import stats

    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) < 2:
        return float(values.mean()), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def fmt(values, digits: int = 3) -> str:
    mean, half = interval(values)
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if not np.isfinite(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def superclass_names(record: dict) -> tuple[str, str]:
    """(majority, minority) superclass names of the study's data."""
    data = record["config"]["data"]
    names = sorted(set(record["superclass_of"].values()))
    majority = data.get("majority_superclass") or ("accessories" if "accessories" in names else names[0])
    minority = next(n for n in names if n != majority)
    return majority, minority


def iteration_values(records: list[dict], iteration: int, key: str) -> list[float]:
    out = []
    for record in records:
        rows = [r for r in record["iterations"] if r["iteration"] == iteration]
        out.append(rows[0].get(key) if rows else None)
    return out


def iteration_seconds(row: dict) -> float:
    return sum(v for k, v in row.items() if k.startswith("time/") and k != "time/total_s")


# sections --------------------------------------------------------------------------------------------------
def section_bias(records: list[dict]) -> str:
    before = [r["validate"].get("bias/kl/superclass") for r in records]
    loss_before = [r["validate"].get("bias/loss") for r in records]
    after = [r["final"].get("debiased/bias/kl/superclass") for r in records]
    loss_after = [r["final"].get("debiased/bias/loss") for r in records]
    added = iteration_values(records, 0, "data/size")
    original = [r["baselines"]["biased"]["train_size"] for r in records]
    rows = [["before (S)", fmt(before, 4), fmt(loss_before, 4), fmt(original, 0)],
            ["after Algorithm 1 (S*)", fmt(after, 4), fmt(loss_after, 4), fmt(added, 0)]]
    return "\n".join([
        "## 1. Bias before and after augmentation (paper Figs. 6 and 8)", "",
        table(["training set", "superclass KL(D‖P)", "L̂", "images"], rows), "",
        "![distributions before](results/figures/seed-0/distribution_before.png)",
        "![distributions after](results/figures/seed-0/distribution_after.png)", ""])


def accuracy_rows(records: list[dict], minority: str, majority: str) -> list[list[str]]:
    rows = []
    for name in shown_models(records):
        label = MODEL_LABELS[name]
        metrics = [r["baselines"][name]["metrics"] for r in records]
        rows.append([label] + [fmt([m.get(k) for m in metrics]) for k in
                               ("acc/test", f"acc/{minority}", f"acc/{majority}", "acc/worst_class",
                                "fair/superclass_gap")])
    last = max(r["iteration"] for r in records[0]["iterations"])
    rows.append([f"S* after {last} unlearning iterations (deployed)"] + [
        fmt(iteration_values(records, last, k)) for k in
        ("acc/test", f"acc/{minority}", f"acc/{majority}", "acc/worst_class", "fair/superclass_gap")])
    return rows


def section_fairness(records: list[dict], figures: Path) -> str:
    from fairforget.components.fairness import safe_name

    majority, minority = superclass_names(records[0])
    classes = records[0]["class_names"]
    header = ["model", "test accuracy", f"{minority} (minority)", f"{majority}", "worst class", "superclass gap"]
    last = max(r["iteration"] for r in records[0]["iterations"])
    per_class_header = ["class"] + shown_models(records) + [f"debiased after {last} iterations"]
    per_class_rows = []
    for k, cls in enumerate(classes):
        row = [cls]
        for name in shown_models(records):
            row.append(fmt([np.diag(np.asarray(r["baselines"][name]["confusion"], float))[k] /
                            max(np.asarray(r["baselines"][name]["confusion"], float)[k].sum(), 1) for r in records]))
        row.append(fmt(iteration_values(records, last, f"acc/class/{safe_name(cls)}")))
        per_class_rows.append(row)
    plot_confusions(records[0], figures / "confusions_seed0.png")
    sisa = records[0]["config"]["sisa"]
    return "\n".join([
        "## 2. Debiasing and the minority superclass (paper Figs. 7 and 9)", "",
        f"The same SISA ensemble ({sisa['num_shards']} shards x {sisa['num_slices']} slices, {sisa['classifier']}) "
        "trained from scratch on each training set, tested on the balanced test split. Re-weighting and "
        "oversampling aim at the same class mass as S* (the target of "
        "Algorithm 1); oversampling repeats real minority images where S* has synthetic ones.", "",
        table(header, accuracy_rows(records, minority, majority)), "",
        "Per-class test accuracy:", "", table(per_class_header, per_class_rows), "",
        "![confusion matrices](results/figures/confusions_seed0.png)", ""])


def section_unlearning(records: list[dict], figures: Path) -> str:
    majority, minority = superclass_names(records[0])
    iterations = sorted({row["iteration"] for row in records[0]["iterations"]})
    rows = []
    for it in iterations:
        seconds = []
        for record in records:
            match = [r for r in record["iterations"] if r["iteration"] == it]
            seconds.append(iteration_seconds(match[0]) if match and it > 0 else None)
        originals = iteration_values(records, it, "data/original_fraction")
        forgotten = iteration_values(records, it, "data/forgotten_fraction")
        rows.append([str(it), fmt(forgotten, 2), fmt(originals, 3), fmt(iteration_values(records, it, "acc/retain")),
                     fmt(iteration_values(records, it, "acc/test")),
                     fmt(iteration_values(records, it, f"acc/{minority}")),
                     fmt(iteration_values(records, it, "acc/worst_class")),
                     fmt(seconds, 0) if it > 0 else "–"])
    plot_iterations(records, iterations, minority, figures / "table_I.png")
    return "\n".join([
        "## 3. Accuracy under unlearning (paper Table I)", "",
        f"{len(iterations) - 1} iterations at forget rate {records[0]['config']['loop']['forget_rate']}: each removes "
        "that fraction of the original records (SISA exact unlearning) and adds as many synthetic ones "
        "(replenishment keeps S balanced), in one retraining of the affected shards. Time per iteration: "
        "unlearning + replenishment + evaluation + the per-iteration audit, with the seeds sharing the cores "
        "(see the head of the page).", "",
        table(["iteration", "originals forgotten", "original fraction of S", "retain accuracy", "test accuracy",
               f"{minority}", "worst class", "seconds"], rows), "",
        "![accuracy per iteration](results/figures/table_I.png)", ""])


def section_privacy(records: list[dict], figures: Path) -> str:
    config = records[0]["config"]
    last = max(r["iteration"] for r in records[0]["iterations"])
    attacks = [a for a in ATTACK_LABELS if f"mia/{a}/success" in records[0]["iterations"][0]]
    columns = [(MODEL_LABELS[name], name) for name in shown_models(records)] + [(f"S* after {last} iterations",
                                                                                  None)]
    metric_tables = []
    for metric, label in METRIC_LABELS.items():
        rows = []
        for attack in attacks:
            row = [ATTACK_LABELS[attack]]
            for _, name in columns:
                values = ([r["baselines"][name]["attacks"][attack].get(metric) for r in records] if name else
                          iteration_values(records, last, f"mia/{attack}/{metric}"))
                row.append(fmt(values))
            rows.append(row)
        metric_tables += [f"**{label}**", "", table(["attack"] + [c for c, _ in columns], rows), ""]
    oracle_rows = []
    for attack in attacks:
        row = [ATTACK_LABELS[attack]]
        for name in shown_models(records):
            row.append(f"{fmt([r['baselines'][name]['attacks'][attack]['success'] for r in records])} / "
                       f"{fmt([r['baselines'][name]['attacks'][attack]['oracle_success'] for r in records])}")
        oracle_rows.append(row)
    final = [[label, fmt([r["final"].get(key) for r in records])] for label, key in (
        ("strongest attack success, all originals", "final/mia/max_success"),
        ("chance bound, all originals", "final/mia/chance_success_high"),
        ("strongest attack success, forgotten originals", "final/mia/forgotten/max_success"),
        ("chance bound, forgotten originals", "final/mia/forgotten/chance_success_high"),
        ("member minus non-member accuracy", "final/mia/accuracy_gap"))]
    gaps = [[MODEL_LABELS[name], fmt([r["baselines"][name]["member_accuracy"] - r["baselines"][name][
        "non_member_accuracy"] for r in records])] for name in shown_models(records)]
    plot_privacy(records, attacks, figures / "fig12_attacks.png")
    size = config["loop"]["iteration_audit_size"]
    half = round(size * (1 - config["audit"]["calibration_fraction"])) if size else None
    return "\n".join([
        "## 4. Privacy: membership inference against the fraction forgotten (paper Fig. 12)", "",
        f"Members: every original training record (forgotten ones included); non-members: the held-out audit "
        f"half. Each audit draws {size} members and {size} non-members, fits thresholds on one part and measures "
        f"on the other ({half} + {half}), {augmentation_text(config)}, RMIA with "
        f"{config['audit'].get('reference_models', 1)} reference SISA ensembles trained like the target on the "
        "reference half. "
        "Chance: success 0.5, AUC 0.5, TPR 0.01 at 1% FPR. The baseline models are audited exactly like an "
        "iteration of the loop.", "",
        *metric_tables,
        "![attacks against the fraction forgotten](results/figures/fig12_attacks.png)", "",
        "Success as fairforget reports it (thresholds fitted on the calibration part) / with the paper's oracle "
        "protocol (the best threshold chosen on the evaluation set itself, an optimistic bias):", "",
        table(["attack"] + [MODEL_LABELS[name] for name in shown_models(records)], oracle_rows), "",
        "Train/test gap of each model (accuracy on the un-augmented members minus non-members):", "",
        table(["model", "accuracy gap"], gaps), "",
        f"Final full audit of the deployed model (all {records[0]['baselines']['biased']['train_size']} originals "
        "against as many non-members, half for calibration):", "",
        table(["figure", "value"], final), ""])


def _strongest_auc(row: dict, subset: str) -> float | None:
    prefix = f"mia/{subset}/" if subset else "mia/"
    values = [row.get(f"{prefix}{a}/auc") for a in ATTACK_LABELS]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def subset_values(records: list[dict], iteration: int, getter) -> list[float | None]:
    out = []
    for record in records:
        match = [r for r in record["iterations"] if r["iteration"] == iteration]
        out.append(getter(match[0]) if match else None)
    return out


def section_power(records: list[dict], figures: Path) -> str:
    """The audit's positive control: canaries, and the records still held vs forgotten, per iteration."""
    if not any("mia/canary/power" in row for row in records[0]["iterations"]):
        return ""
    iterations = sorted({row["iteration"] for row in records[0]["iterations"]})
    rows = []
    for it in iterations:
        def get(key):
            return subset_values(records, it, lambda row: row.get(key))
        rows.append([str(it), fmt(get("data/forgotten_fraction"), 2),
                     fmt(get("mia/canary/live_auc")), fmt(get("mia/canary/live_p_value"), 4),
                     fmt(get("mia/canary/forgotten_auc")), fmt(get("mia/canary/forgotten_p_value"), 4),
                     fmt(get("mia/canary/power"), 2),
                     fmt(subset_values(records, it, lambda row: _strongest_auc(row, "retained" if it else ""))),
                     fmt(get("mia/retained/auc_high")),
                     fmt(subset_values(records, it, lambda row: _strongest_auc(row, "forgotten"))),
                     fmt(get("mia/forgotten/auc_high"))])
    shard_rows = []
    for it in iterations:
        def shard_max(row):
            values = [v for k, v in row.items() if k.startswith("mia_shard/") and k.endswith("/max_success")]
            return max(values) if values else None

        def shard_bound(row):
            values = [v for k, v in row.items() if k.startswith("mia_shard/") and k.endswith("/chance_success_high")]
            return min(values) if values else None
        shard_rows.append([str(it), fmt(subset_values(records, it, shard_max)),
                           fmt(subset_values(records, it, shard_bound))])
    fit = subset_values(records, 0, lambda row: row.get("train/shard_fit_accuracy_min"))
    canaries = records[0]["config"].get("canaries")
    plot_power(records, iterations, figures / "fig12_power.png")
    return "\n".join([
        "## 4a. Could the audit have seen a leak? Canaries, retained and forgotten records", "",
        f"Canaries: {'1% of S' if canaries is None else canaries} audit-pool images with a random wrong label "
        "inserted into S (placed and forgotten like originals), against as many matched held-out canaries (same "
        "true class, same wrong label, never trained on). A model can only predict a canary's label by memorising "
        "it, so the live canaries are the audit's positive control: `power` is 1 when the smallest one-sided "
        "Mann-Whitney p-value over the attacks is at most 0.05 / the number of attacks. The retained originals are "
        "the records the model still holds; the forgotten ones test the generator channel. 'AUC upper bound' is "
        "the largest upper end of the attacks' 95% intervals, which certification compares with 0.5 + "
        "max_auc_excess (n/a: not logged by the run that made the record). Every shard model fits its "
        f"own training records: minimum shard accuracy at iteration 0 {fmt(fit)}.", "",
        table(["iteration", "originals forgotten", "live canary AUC", "p", "forgotten canary AUC", "p",
               "power", "retained originals: strongest AUC", "upper bound", "forgotten originals: strongest AUC",
               "upper bound"], rows), "",
        "![canaries, retained and forgotten records](results/figures/fig12_power.png)", "",
        "Per-shard audits (each shard model against its own live originals; strongest success over the shards and "
        "the smallest shard's chance bound):", "",
        table(["iteration", "strongest shard attack success", "chance bound"], shard_rows), ""])


def certificate_cell(row: dict, subset: str) -> str:
    """One held set's certificate at one iteration, as the table shows it: the verdict, the strongest shown attack's
    AUC, the largest upper bounds over every attack (AUC and TPR at 1% FPR) and the records audited."""
    if f"mia/{subset}/certified" not in row:
        return "n/a"
    if row.get(f"mia/{subset}/n_members") == 0:
        return "empty"
    verdict = ("too few" if row.get(f"mia/{subset}/too_few") == 1.0
               else "**certified**" if row[f"mia/{subset}/certified"] == 1.0 else "not certified")
    strongest = _strongest_auc(row, subset)
    if strongest is None and subset == "retained" and not row.get("mia/forgotten/n_members"):
        strongest = _strongest_auc(row, "")  # nothing forgotten yet: the retained originals are the whole member set
    members = row.get(f"mia/{subset}/n_members")
    return (f"{verdict} (AUC "
            + (f"{strongest:.3f}, " if strongest is not None else "")
            + f"<= {row.get(f'mia/{subset}/auc_high', float('nan')):.3f}; "
            f"TPR <= {row.get(f'mia/{subset}/tpr_at_1pct_fpr_high', float('nan')):.3f}"
            + (f"; {members:.0f} audited" if members is not None else "") + ")")


def first_certified_iteration(record: dict) -> int | None:
    """The first iteration whose retained originals (every original at iteration 0) were certified, if any."""
    for row in sorted(record["iterations"], key=lambda r: r["iteration"]):
        if row.get("mia/retained/certified") == 1.0 and row.get("mia/retained/n_members", 1) > 0:
            return row["iteration"]
    return None


def section_certification(records: list[dict]) -> str:
    """Per seed: the retained and forgotten originals' certificates at every iteration (docs/audit.md#certification),
    the iteration at which the retained ones certify (or that they never do), and the gate's outcome."""
    if not any("mia/retained/certified" in row for record in records for row in record["iterations"]):
        return "\n".join([
            "## 4b. Certification per seed", "",
            "Not measured: these per-seed results predate certification (no `mia/<set>/certified` metrics); "
            "re-run the study to fill this section.", ""])
    lines = ["## 4b. Certification per seed", "",
             "A set of originals is certified when, for every attack, the upper end of its AUC's 95% interval is at "
             "most 0.5 + max_auc_excess and the Clopper-Pearson upper bound of its TPR at 1% FPR at most "
             "max_tpr_at_1pct_fpr (registry_policy.yaml); 'too few' when the audit cannot resolve that tolerance; "
             "'empty' when the model holds none. Each cell: the verdict, the strongest of the shown attacks' AUC, "
             "the largest upper bounds over every attack and the members audited (each against class-matched "
             "non-members). The retained originals are the records the model holds (every original at iteration 0); "
             "the forgotten ones test the generator channel.", ""]
    for record in records:
        rows = [[str(row["iteration"]), fmt([row.get("data/forgotten_fraction")], 2),
                 certificate_cell(row, "retained"), certificate_cell(row, "forgotten")]
                for row in sorted(record["iterations"], key=lambda r: r["iteration"])]
        final = record.get("final", {})
        summary = record.get("summary", {})
        first = first_certified_iteration(record)
        outcome = summary.get("gate", "n/a")
        if outcome == "passed":
            outcome = f"registered (version {summary.get('registered_version')})"
        elif outcome == "rejected":
            outcome = f"rejected: {summary.get('gate_reason', 'reason not recorded')}"
        lines += [f"Seed {record['seed']}: the retained originals "
                  + (f"certify at iteration {first}" if first is not None else "never certify while held")
                  + f"; final audit: retained {final_cell(final, 'retained')}, forgotten "
                  + f"{final_cell(final, 'forgotten')}; gate: {outcome}.", "",
                  table(["iteration", "originals forgotten", "retained originals", "forgotten originals"], rows), ""]
    return "\n".join(lines)


# experiments.study's --generator choices, in table order
GENERATOR_MODE_ORDER = ("none", "dp-public-labels", "public-only-public-labels", "dp", "public-only")
MODE_NAMES = {"none": "non-private", "dp": "DP", "dp-public-labels": "DP with the public split's labels",
              "public-only": "public-only (the DP recipe without S)",
              "public-only-public-labels": "public-only with the public split's labels"}


def default_generator_mode() -> str:
    """The generator mode of the pipeline's default recipe (``DEFAULT_PRIVACY``): the study of docs/results.md."""
    from fairforget.components.generator.config import DEFAULT_PRIVACY

    return "dp" if DEFAULT_PRIVACY == "dp" else "none"


def other_generator_modes() -> tuple[str, ...]:
    """The modes whose studies live in ``<results>/privacy-<mode>/`` (every mode but the default)."""
    return tuple(mode for mode in GENERATOR_MODE_ORDER if mode != default_generator_mode())


def mode_folder(results_dir: Path, mode: str) -> Path:
    """Where ``experiments.study --generator mode`` writes: ``results_dir`` for the default mode, else
    ``results_dir/privacy-<mode>/``."""
    return results_dir if mode == default_generator_mode() else results_dir / f"privacy-{mode}"


def generator_mode(config: dict) -> str:
    """``none``, ``dp``, ``dp-public-labels`` (pre-trained on the public split's labels, the DP recipe before its
    public images went unlabelled), ``public-only`` (one DP step on S) or ``public-only-public-labels``:
    experiments.study's --generator."""
    generator = config["generator"]
    if generator.get("privacy", "none") != "dp":
        return "none"
    labelled = "-public-labels" if public_labels_used(config) else ""
    return ("public-only" if generator.get("train_steps") == 1 else "dp") + labelled


def public_labels_used(config: dict) -> bool:
    """Whether a DP study's generator was pre-trained on the public split's labels (every study before the DP
    recipe's public images went unlabelled)."""
    return config["generator"].get("privacy") == "dp" and config["generator"].get("public_labels", True)


def generator_mode_row(record: dict) -> list[str]:
    """One seed of one generator mode: what #32 compares (the final model's forgotten originals, the generator's
    own audit, accuracy, the canaries' empirical epsilon, the gate)."""
    final, generator = record.get("final", {}), record.get("generator", {})
    last = max(record["iterations"], key=lambda row: row["iteration"])
    _, minority = superclass_names(record)
    certified = final.get("final/mia/forgotten/certified")
    members = final.get("final/mia/forgotten/n_members")
    forgotten = ("n/a" if certified is None else
                 f"{'**certified**' if certified == 1.0 else 'not certified'} (AUC <= "
                 f"{final.get('final/mia/forgotten/auc_high', float('nan')):.3f}, TPR <= "
                 f"{final.get('final/mia/forgotten/tpr_at_1pct_fpr_high', float('nan')):.3f}"
                 + (f"; {members:.0f} audited" if members is not None else "") + ")")
    audit = (f"{generator.get('generator/mia/auc', float('nan')):.3f} "
             f"[{generator.get('generator/mia/auc_ci_low', float('nan')):.3f}, "
             f"{generator.get('generator/mia/auc_ci_high', float('nan')):.3f}]")
    epsilon = generator.get("generator/dp_epsilon")
    mode = generator_mode(record["config"])
    label = f"{mode} (epsilon {epsilon:.2f})" if epsilon is not None and mode != "none" else mode
    gate = record.get("summary", {}).get("gate", "n/a")
    return [str(record["seed"]), label, forgotten, audit, fmt([last.get("acc/test")]),
            fmt([last.get(f"acc/{minority}")]), fmt([last.get("acc/worst_class")]),
            fmt([final.get("final/mia/canary/epsilon_lower_bound")], 2),
            fmt([final.get("final/mia/canary/generator_channel_epsilon_lower_bound")], 2), gate]


def section_generator_modes(records: list[dict], folder: Path) -> str:
    """Per seed, the study with the default generator against the same study with each other generator mode
    (``<folder>/privacy-<mode>/``), where those were run."""
    heading = "## 4c. The generator channel: non-private, DP and public-only generators per seed"
    if records and generator_mode(records[0]["config"]) != default_generator_mode():
        return "\n".join([  # a page of another mode's study (privacy-<mode>/): the comparison lives on the main page
            heading, "", f"This is the study with the {MODE_NAMES[generator_mode(records[0]['config'])]} generator; "
            "docs/results.md, section 4c, sets it beside the default recipe's study seed by seed.", ""])
    others = other_generator_modes()
    studies = [records] + [load_records(mode_folder(folder, mode)) for mode in others
                           if any(mode_folder(folder, mode).glob("seed-*.json"))]
    commands = " and ".join(f"`python -m experiments.study --generator {mode}`" for mode in others)
    if len(studies) == 1:
        return "\n".join([heading, "", f"Not measured yet: {commands} fill this section (each as long as this "
                           "study; docs/generator.md has the DP generator measured alone).", ""])
    _, minority = superclass_names(records[0])
    order = GENERATOR_MODE_ORDER
    rows = [generator_mode_row(record) for record in sorted(
        (r for study in studies for r in study), key=lambda r: (r["seed"], order.index(generator_mode(r["config"]))))]
    return "\n".join([
        heading, "",
        "The same study with each generator ({commands}). After Algorithm 2 the final model holds (almost) no "
        "original, so whether it still tells the forgotten originals from records it never saw measures what the "
        "synthetic replacements carry; for the DP generator that is bounded by its (epsilon, delta), the public-only "
        "control shows what the generator knows without S. The canaries' epsilons are empirical lower bounds "
        "(Steinke, Nasr and Jagielski 2023): from the canaries the final model holds (what the classifier itself "
        "holds, not the generator channel), and from the unlearned canaries that trained the generator "
        "(the generator channel's; measured since the DP labeller, n/a in older studies); accuracies are the final "
        "model's. 'audited': the forgotten originals the final audit measured (each against as many "
        "class-matched non-members as the pool allows; a study made before the audit was cross-fitted measured "
        "half of them).".format(commands=commands), "",
        table(["seed", "generator", "forgotten originals, final model", "generator audit AUC [95% CI]",
               "test acc.", f"{minority} acc.", "worst class", "live canaries' epsilon (lower bound)",
               "generator channel's canary epsilon (lower bound)", "gate"], rows),
        ""])


def final_cell(final: dict, subset: str) -> str:
    if f"final/mia/{subset}/certified" not in final:
        return "n/a"
    if final.get(f"final/mia/{subset}/n_members") == 0:
        return "empty (the model holds none)"
    return "certified" if final[f"final/mia/{subset}/certified"] == 1.0 else (
        f"not certified (AUC <= {final.get(f'final/mia/{subset}/auc_high', float('nan')):.3f})")


def plot_power(records, iterations, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [np.mean([v for v in iteration_values(records, it, "data/forgotten_fraction") if v is not None])
         for it in iterations]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    series = [("live canaries", lambda row: row.get("mia/canary/live_auc")),
              ("forgotten canaries", lambda row: row.get("mia/canary/forgotten_auc")),
              ("retained originals", lambda row: _strongest_auc(row, "retained" if row["iteration"] else "")),
              ("forgotten originals", lambda row: _strongest_auc(row, "forgotten"))]
    for label, getter in series:
        values = [[v for v in subset_values(records, it, getter) if v is not None] for it in iterations]
        # a subset of a handful of records (the few originals left after the last iteration) says nothing
        keep = [i for i, v in enumerate(values) if v and not (label == "retained originals" and x[i] > 0.99)]
        if keep:
            _band(ax, [x[i] for i in keep], [values[i] for i in keep], label)
    ax.axhline(0.5, color="black", linewidth=0.6, label="chance")
    ax.set_xlabel("fraction of the original records forgotten")
    ax.set_ylabel("strongest attack AUC")
    ax.set_ylim(0.3, 1.05)
    ax.set_title(f"The audit's positive control (canaries) and the decline under unlearning, {len(records)} seeds",
                 fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def generator_label(config: dict) -> str:
    """How a study's generator is built, from its configuration, e.g. ``latent 64, feature matching 1, 60
    autoencoder epochs, autoencoder 64-128, v-prediction, Min-SNR-5, denoiser dropout 0.1`` (the epochs, the
    objective, the autoencoder's channels, dropout, training precision and guidance interval where the configuration
    records them and they differ from what came before them)."""
    generator = config["generator"]
    weight = generator.get("autoencoder_perceptual_weight", 0.0)
    loss = f"feature matching {weight:g}" if weight else "pixel loss"
    epochs = f", {generator['autoencoder_epochs']} autoencoder epochs" if "autoencoder_epochs" in generator else ""
    objective = ""  # studies from before the option trained epsilon prediction with uniform weights
    if generator.get("prediction_type", "epsilon") != "epsilon" or generator.get("loss_weighting", "uniform") != "uniform":
        prediction = "v-prediction" if generator.get("prediction_type") == "v_prediction" else "epsilon prediction"
        weights = (f"Min-SNR-{generator.get('min_snr_gamma', 5.0):g}" if generator.get("loss_weighting") == "min_snr"
                   else "uniform weights")
        objective = f", {prediction}, {weights}"
    channels = generator.get("autoencoder_channels", [32, 64])  # every study before the option had (32, 64)
    width = f", autoencoder {'-'.join(str(c) for c in channels)}" if list(channels) != [32, 64] else ""
    dropout = f", denoiser dropout {generator['denoiser_dropout']:g}" if generator.get("denoiser_dropout") else ""
    precision = f", precision {generator['precision']}" if generator.get("precision", "fp32") != "fp32" else ""
    lo, hi = generator.get("guidance_interval", (0.0, float("inf")))  # every step, before the option existed
    guided = f", guidance in ({lo:g}, {hi:g}]" if (lo, hi) != (0.0, float("inf")) else ""
    return f"latent {generator['latent_dim']}, {loss}{epochs}{width}{objective}{dropout}{precision}{guided}"


def section_generator(records: list[dict]) -> str:
    keys = [("conditional accuracy (judge: reference classifier)", "generator/conditional_accuracy", 3),
            ("judge's accuracy on real test images", "generator/reference_classifier_test_accuracy", 3),
            ("CAS (trained on synthetic only)", "generator/cas", 3),
            ("same classifier on as many real images", "generator/cas_real_baseline", 3),
            ("CAS ratio", "generator/cas_ratio", 3), ("FID (reference-classifier features)", "generator/fid", 2),
            ("FID real vs real", "generator/fid_real_vs_real", 2), ("KID", "generator/kid", 3),
            ("near-copy fraction (d1/d2 < 1/3)", "generator/near_copy_fraction", 4),
            ("near-copy fraction of real test images", "generator/near_copy_fraction_real_test", 4),
            ("diversity ratio (synthetic / real mean pairwise distance, per class)", "generator/diversity_ratio", 3),
            ("diversity ratio, worst class", "generator/diversity_ratio_min", 3),
            ("training seconds (one core shared with the other seeds)", "generator/train_seconds", 0)]
    private = generator_mode(records[0]["config"]) != "none"
    if private:
        keys += [("DP epsilon (delta in the configuration)", "generator/dp_epsilon", 2)]
    keys += [("membership audit: strongest AUC", "generator/mia/auc", 3),
             ("membership audit: largest AUC upper bound over its attacks", "generator/mia/auc_high", 3),
             ("membership audit: largest TPR@1%FPR upper bound", "generator/mia/tpr_at_1pct_fpr_high", 3),
             ("membership audit certified (1 = yes)", "generator/mia/certified", 2)]
    rows = [[label, fmt([r["generator"].get(key) for r in records], digits)] for label, key, digits in keys
            if any(r["generator"].get(key) is not None for r in records)]
    classes = records[0]["class_names"]
    per_class = [[cls, fmt([r["generator"].get(f"generator/conditional_accuracy/{cls}") for r in records])]
                 for cls in classes]
    return "\n".join([
        "## 5. The generator", "",
        f"Latent diffusion on the CPU (conv autoencoder, {generator_label(records[0]['config'])}; MLP denoiser, "
        "diffusers DDPM/DDIM, classifier-free guidance "
        f"{records[0]['config']['generator']['guidance_scale']:g}), "
        + ("its autoencoder and a pre-training of the denoiser on the public reference split, then the conditional "
           f"denoiser fine-tuned on S with DP-SGD (delta {records[0]['config']['generator'].get('dp_delta')})"
           if private else "trained on the real images of S only")
        + ". See docs/generator.md.", "",
        table(["figure", "value"], rows), "", "Conditional accuracy per class:", "",
        table(["class", "conditional accuracy"], per_class), "",
        "![sample grid](results/figures/seed-0/sample_grid.png)", ""])


def earlier_studies(folder: Path) -> list[tuple[str, list[dict]]]:
    """The studies kept in ``<folder>/generator-*/`` (the same study with an earlier generator), oldest first: the
    folders are numbered in the order they were made (``generator-1-pixel-loss``, ``generator-2-...``)."""
    out = []
    for sub in sorted(folder.glob("generator-*")):
        records = [json.loads(p.read_text()) for p in sorted(sub.glob("seed-*.json"))]
        if records:
            out.append((generator_label(records[0]["config"]), records))
    return out


def section_tradeoff(records: list[dict], earlier: list[tuple[str, list[dict]]]) -> str:
    """The paper's two utility claims against the generator that made S*: one row per study (earlier generators
    first), so that generator cost can be read against S* vs oversampling and accuracy after forgetting."""
    if not earlier:
        return ""
    _, minority = superclass_names(records[0])
    last = max(r["iteration"] for r in records[0]["iterations"])

    def gap(study, name, key):  # S* minus a baseline, per seed; none where the study predates the baseline
        if not all(name in r["baselines"] for r in study):
            return []
        return [r["baselines"]["debiased"]["metrics"][key] - r["baselines"][name]["metrics"][key] for r in study]

    def drop(study):  # test accuracy, iteration 0 minus the last iteration, per seed
        return [iteration_values([r], 0, "acc/test")[0] - iteration_values([r], last, "acc/test")[0] for r in study]

    rows = []
    for label, study in [*earlier, (generator_label(records[0]["config"]) + " (this page)", records)]:
        rows.append([label, fmt([r["generator"].get("generator/train_seconds", float("nan")) / 60 for r in study], 1),
                     fmt([r["generator"].get("generator/cas_ratio") for r in study]),
                     fmt([r["generator"].get("generator/fid") for r in study], 1),
                     fmt(gap(study, "oversampled", f"acc/{minority}")),
                     fmt(gap(study, "oversampled", "acc/worst_class")),
                     fmt(gap(study, "oversampled_in_shards", f"acc/{minority}")),
                     fmt(gap(study, "oversampled_in_shards", "acc/worst_class")),
                     fmt(iteration_values(study, 0, "acc/test")), fmt(iteration_values(study, last, "acc/test")),
                     fmt(drop(study))])
    return "\n".join([
        "## 5a. What a better generator buys: the same study with each generator", "",
        "The paper's claims are that S* beats oversampling on the minority superclass and on the worst class, and "
        "that accuracy holds while the originals are replaced. Positive differences favour S*; the drop is test "
        f"accuracy at iteration 0 minus after {last} iterations (target: at most 0.02). \"In shards\" is oversampling "
        "that keeps each copy in its original's shard, S*'s unlearning cost (studies from before it have no such "
        "baseline: n/a). Generator minutes are those "
        "of the study (one core shared by three seeds; docs/generator.md times them alone). Earlier studies are "
        "kept in `docs/results/generator-*/`.", "",
        table(["generator", "training min", "CAS ratio", "FID", f"S* - oversampled, {minority}",
               "S* - oversampled, worst class", f"S* - in shards, {minority}", "S* - in shards, worst class",
               "test acc., iteration 0", f"after {last}", "drop"], rows), ""])


# figures ---------------------------------------------------------------------------------------------------
def plot_confusions(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = record["class_names"]
    names = shown_models([record])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.4))
    for ax, name in zip(axes, names):
        label = MODEL_LABELS[name]
        confusion = np.asarray(record["baselines"][name]["confusion"], float)
        rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
        ax.set_title(label, fontsize=8)
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
        ax.set_yticks(range(len(classes)), classes, fontsize=6)
        for i in range(len(classes)):
            ax.text(i, i, f"{rates[i, i]:.2f}", ha="center", va="center", fontsize=5,
                    color="white" if rates[i, i] > 0.5 else "black")
    fig.suptitle(f"Test confusion (row-normalised), seed {record['seed']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _band(ax, x, values, label, color=None):
    stats = [interval(v) for v in values]
    mean = np.array([s[0] for s in stats])
    half = np.nan_to_num(np.array([s[1] for s in stats]))
    line, = ax.plot(x, mean, marker="o", markersize=3, label=label, color=color)
    ax.fill_between(x, mean - half, mean + half, alpha=0.2, color=line.get_color())


def plot_iterations(records, iterations, minority, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = [np.mean([v for v in iteration_values(records, it, "data/forgotten_fraction") if v is not None])
         for it in iterations]
    for key, label in (("acc/retain", "retain"), ("acc/test", "test"), (f"acc/{minority}", f"test, {minority}"),
                       ("acc/worst_class", "test, worst class")):
        _band(ax, x, [iteration_values(records, it, key) for it in iterations], label)
    ax.set_xlabel("fraction of the original records forgotten")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Accuracy under unlearning, mean and 95% interval over {len(records)} seeds", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_privacy(records, attacks, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = sorted({row["iteration"] for row in records[0]["iterations"]})
    x = [np.mean([v for v in iteration_values(records, it, "data/forgotten_fraction") if v is not None])
         for it in iterations]
    fig, axes = plt.subplots(1, len(METRIC_LABELS), figsize=(4.3 * len(METRIC_LABELS), 3.6))
    for ax, (metric, label) in zip(axes, METRIC_LABELS.items()):
        for attack in attacks:
            _band(ax, x, [iteration_values(records, it, f"mia/{attack}/{metric}") for it in iterations],
                  ATTACK_LABELS[attack])
        for name, style in (("biased", ":"), ("oversampled", "-.")):
            best = max(interval([r["baselines"][name]["attacks"][a].get(metric) for r in records])[0] for a in attacks)
            ax.axhline(best, linestyle=style, color="grey", label=f"{name} model, strongest")
        ax.axhline(0.01 if metric.startswith("tpr") else 0.5, color="black", linewidth=0.6, label="chance")
        ax.set_xlabel("fraction of the original records forgotten")
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=6)
    fig.suptitle(f"Membership inference against the unlearning loop (x = 0: S*, no unlearning), "
                 f"{len(records)} seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def augmentation_text(config: dict) -> str:
    """How many fixed copies the attacks query: the configured number, or the training recipe's family."""
    count = config["audit"]["num_augmentations"]
    if count is None:
        count = 10 if config["sisa"]["train"]["augment"] else 1
    return f"{count} fixed augmentation{'s' if count != 1 else ''} per image (the classifiers' own training family)" \
        if count != 1 else "each image queried as it is (the classifiers train without augmentation)"


def _relative(folder: Path) -> str:
    try:
        return folder.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(folder)


def study_command(config: dict, folder: Path, seeds: list[int]) -> str:
    """The ``experiments.study`` command line that reproduces a study of ``config`` into ``folder``."""
    from fairforget.components.training import TrainConfig

    default_train = {"epochs": TrainConfig().epochs, "augment": TrainConfig().augment}
    parts = ["python -m experiments.study --seeds " + " ".join(map(str, seeds))]
    data, train, loop = config["data"], config["sisa"]["train"], config["loop"]
    if generator_mode(config) != default_generator_mode():
        parts.append(f"--generator {generator_mode(config)}")
    if data["dataset"] != "fashion_mnist":
        parts.append(f"--dataset {data['dataset']} --source-dir {data['source_dir']}")
    if config["sisa"]["classifier"] != "small_cnn":
        parts.append(f"--classifier {config['sisa']['classifier']}")
    if list(config["balance"]["attributes"]) != ["superclass"]:
        parts.append("--attributes " + ",".join(config["balance"]["attributes"]))
    if train["epochs"] != default_train["epochs"]:
        parts.append(f"--epochs {train['epochs']}")
    if train["augment"] != default_train["augment"]:
        parts.append("--augmentation " + ("on" if train["augment"] else "off"))
    if loop["iterations"] != STUDY_ITERATIONS or loop["forget_rate"] != STUDY_FORGET_RATE:
        parts.append(f"--iterations {loop['iterations']} --forget-rate {loop['forget_rate']}")
    if folder.resolve() != mode_folder(RESULTS_DIR, generator_mode(config)).resolve():
        parts.append(f"--results-dir {_relative(folder)}")
    return " ".join(parts)


def report_command(folder: Path) -> str:
    command = "python -m experiments.study_report"
    return command if folder.resolve() == RESULTS_DIR.resolve() else f"{command} --results-dir {_relative(folder)}"


def recipe(config: dict) -> str:
    """One line: data set, classifier recipe, SISA layout and loop of a study's configuration."""
    train, sisa, loop = config["sisa"]["train"], config["sisa"], config["loop"]
    augmentation = "flip + crop augmentation" if train["augment"] else "no augmentation"
    return (f"{config['data']['dataset']}, S of {config['data']['train_size']} images; {sisa['classifier']} trained "
            f"{train['epochs']} epochs with {augmentation}, {sisa['num_shards']} shards x {sisa['num_slices']} "
            f"slices; {loop['iterations']} iterations at forget rate {loop['forget_rate']}, "
            f"{loop['forget_order']} order")


# the page --------------------------------------------------------------------------------------------------
def default_page(folder: Path) -> Path:
    """Where the page of the study in ``folder`` lives: docs/results.md for docs/results/, else
    ``<folder>/results.md``."""
    return PAGE if folder.resolve() == RESULTS_DIR.resolve() else folder / "results.md"


def write_report(folder: Path = RESULTS_DIR, page: Path = PAGE) -> Path:
    """Write ``page`` (temporary file, then rename) and its figures (``<folder>/figures/``) from the study in
    ``folder``; returns ``page``."""
    text = render_report(folder, page, folder / "figures")
    tmp = page.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(page)
    return page


def render_report(folder: Path, page: Path, figures: Path) -> str:
    """The text of the study page of ``folder`` as it reads at ``page``: its figure links point at
    ``<folder>/figures/`` relative to ``page``, the figures themselves are drawn into ``figures`` (the same folder
    for ``write_report``; elsewhere to check a committed page without touching it)."""
    records = load_records(folder)
    seeds = [r["seed"] for r in records]
    machine = records[0]["machine"]
    hardware = f"GPU {machine['gpu']}" if machine.get("gpu") else f"{machine['cpus']} CPU cores, no GPU"
    minutes = [r["pipeline_seconds"] / 60 for r in records]
    head = "\n".join([
        "# Results", "",
        "fairforget's study of a private, biased training set S: bias before and after the guided diffusion "
        "generator's augmentation, SISA unlearning of the original records, membership-inference audits, and "
        "comparison models. Made by the first command (all seeds, then this page); the second rewrites the page "
        "from the saved per-seed results:", "",
        "```bash", study_command(records[0]["config"], folder, seeds), report_command(folder), "```", "",
        f"- Configuration: {recipe(records[0]['config'])}.",
        f"- Seeds: {', '.join(map(str, seeds))}; every seed of the run (data split, generator, SISA, audit) is the "
        "study seed. Numbers are mean ± half-width of the 95% Student-t interval over the seeds.",
        f"- Machine: {hardware}, torch {machine['torch']}, Python {machine['python']}. The seeds ran in "
        "parallel, one process and one thread each, so wall times are those of one core shared with the other "
        "runs.",
        f"- Wall time of one seed's pipeline call (prepare, validate, generator training and evaluation, "
        f"augmentation, both SISA models, {max(r['iteration'] for r in records[0]['iterations'])} iterations, "
        f"final audit, registry; a resumed run counts from its resume, a reused generator costs nothing): "
        f"{fmt(minutes, 1)} min; the four comparison models: "
        f"{fmt([r['baseline_seconds'] / 60 for r in records], 1)} min more.", ""])
    sections = [head, section_bias(records), section_fairness(records, figures), section_unlearning(records, figures),
                section_privacy(records, figures), section_power(records, figures), section_certification(records),
                section_generator_modes(records, folder), section_generator(records),
                section_tradeoff(records, earlier_studies(folder))]
    notes = folder / "notes.md"
    if notes.is_file():
        sections.append(notes.read_text())
    text = "\n".join(sections).rstrip() + "\n"
    # figure links relative to where the page lives; the per-seed figures of the first seed
    prefix = Path(os.path.relpath(folder / "figures", page.parent)).as_posix()
    text = text.replace("](results/figures/seed-0/", f"]({prefix}/seed-{records[0]['seed']}/")
    return text.replace("](results/figures/", f"]({prefix}/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the seed-<s>.json files are")
    parser.add_argument("--page", type=Path, default=None,
                        help="the page to write (default: docs/results.md, or <results-dir>/results.md)")
    args = parser.parse_args(argv)
    folder = args.results_dir.resolve()
    page = args.page or default_page(folder)
    print(write_report(folder, page))
    return 0


if __name__ == "__main__":
    sys.exit(main())
