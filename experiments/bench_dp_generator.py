"""The privacy/quality trade-off of the generator: DP-SGD at several epsilons against the non-private generator.

For each target epsilon the DP generator (``privacy="dp"``: autoencoder on the public reference split, denoiser
pre-trained on it, then trained on S with DP-SGD) is trained on the default data, then judged exactly like the
non-private one: conditional accuracy and CAS ratio (``components/quality.py``) and the generator membership audit
(AUC against its chance bound). Conditional accuracy is also measured by an independent judge trained on the audit
split, since the default judge learned from the reference split that the DP generator pre-trains on. Two controls
as variants: DP-SGD from scratch (``dp-scratch``, DPDM without public data) and the public pre-training alone
(``public-only``: one DP step on S, i.e. what the generator knows without S). The non-private generator of the
project's tracking store is the baseline (found by data version and config, as ``make run`` would reuse it; trained
when missing). Each point is written to ``<out>/<variant>-<epsilon>.json`` (``eps-<epsilon>.json`` for ``dp``) as
soon as it exists and is skipped when present, so points can be computed in parallel processes and the table
rebuilt afterwards:

    python -m experiments.bench_dp_generator --epsilons 1 3 10                       # train what is missing
    python -m experiments.bench_dp_generator --variants public-only --epsilons 10    # the public-only control
    python -m experiments.bench_dp_generator --report-only           # table and plot from the saved points
    python -m experiments.bench_dp_generator --epsilons 10 --skip-baseline --out DIR --save-dir DIR/generators \
        --set latent_dim=64 --set num_threads=1   # another DP recipe, its generators kept for bench_tradeoff
    python -m experiments.bench_dp_generator --epsilons 1 10 --variants dp public-only --skip-baseline \
        --out DIR --public-without Trouser           # positive control: a class only S holds

``--public-without CLASS`` is the positive control for "the DP generator learns S": the generators train on the
data with that class's rows removed from the public reference split (the autoencoder and the pre-training never
see it), while the judge, CAS and the audit use the full data. The public-only control then cannot draw the class,
and whatever a DP generator draws of it came from S's records through DP-SGD; the table adds that class's
conditional accuracy.

Prints one row per point and the ratio of each DP figure to the non-private one; writes the table as JSON and the
plot ``dp_tradeoff.png`` into ``--out`` (default ``docs/results``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from contextlib import contextmanager
from pathlib import Path

from fairforget.components.generator.config import DP_PRESET, PUBLIC_ONLY, dp_preset

ROW_METRICS = ("generator/conditional_accuracy", "generator/cas_ratio", "generator/fid", "generator/mia/auc",
               "generator/mia/auc_chance_bound")


INDEPENDENT_JUDGE_KEY = "generator/conditional_accuracy_independent_judge"


def independent_judge(dataset):
    """A second judge, trained like the reference classifier but on the ``audit`` split: no generator ever learns
    from it (the DP generator pre-trains on the public reference split, which the default judge learned from)."""
    from fairforget.components.quality import QualityConfig, train_reference_classifier

    return train_reference_classifier(dataset, QualityConfig(), split="audit")


def _independent_accuracy(generator, dataset, judge) -> float:
    """Conditional accuracy of 200 samples per class under ``judge`` (same conditions and seed as the quality
    evaluation's)."""
    from fairforget.components.generator import CLASS_VARIABLE
    from fairforget.components.generator.denoiser import draw_conditions
    from fairforget.components.quality import QualityConfig, conditional_accuracy

    config = QualityConfig()
    train = dataset.split("train")
    conditions = draw_conditions(generator.space, train.manifest, {c: config.eval_per_class
                                                                   for c in dataset.class_names}, seed=config.seed)
    labels = conditions[CLASS_VARIABLE].map({c: i for i, c in enumerate(dataset.class_names)}).to_numpy()
    return conditional_accuracy(judge, generator.sample(conditions, seed=config.seed), labels)


def _point(generator, dataset, seconds: float, judge) -> dict:
    from fairforget.components.generator.audit import audit_generator_on_splits
    from fairforget.components.quality import QualityConfig, evaluate_generator

    metrics = evaluate_generator(generator, dataset, QualityConfig()).as_metrics()
    metrics[INDEPENDENT_JUDGE_KEY] = _independent_accuracy(generator, dataset, judge)
    metrics.update(audit_generator_on_splits(generator, dataset).metrics())
    summary = {k: v for k, v in generator.training_summary.items() if k != "loss_history"}
    return {"train_seconds": seconds, "summary": summary, "metrics": metrics}


# The DP variants: the default (public pre-training on the reference split, then DP-SGD on S), DP-SGD from scratch
# (DPDM), and the public pre-training alone (one DP step on S: what the public data gives without S).
DP_VARIANTS = {"dp": {}, "dp-scratch": {"public_pretrain_steps": 0}, "public-only": PUBLIC_ONLY}


def without_public_classes(dataset, class_names):
    """``dataset`` without the ``reference`` (public) rows of ``class_names``; every other row unchanged. Raises
    ``ValueError`` for a name that is not a class of the data set."""
    import numpy as np

    unknown = sorted(set(class_names) - set(dataset.class_names))
    if unknown:
        raise ValueError(f"--public-without: {', '.join(unknown)} is not a class of the data set; classes: "
                         f"{', '.join(dataset.class_names)}")
    held_out = np.isin(dataset.labels, [dataset.class_names.index(c) for c in class_names])
    return dataset.select(~(held_out & (dataset.manifest["split"].to_numpy() == "reference")))


def reconstruction_accuracy(generator, dataset, class_names, judge) -> dict:
    """class name -> the fraction of the real ``test`` images of that class that ``judge`` still labels so after a
    round trip through ``generator``'s autoencoder (encode, decode): whether the generator's image space can hold
    the class at all (a positive control's held-out class: the public autoencoder never saw it)."""
    from fairforget.components.generator.sample import to_uint8_images
    from fairforget.components.quality import conditional_accuracy

    test = dataset.split("test")
    out = {}
    for name in class_names:
        rows = test.select(test.labels == dataset.class_names.index(name))
        round_trip = to_uint8_images(generator.decode(generator.to_model_space(rows.to_float_tensor_array())))
        out[f"generator/reconstruction_accuracy/{name}"] = conditional_accuracy(judge, round_trip, rows.labels)
    return out


def held_out_grid(generator_dirs: dict, dataset, class_name: str, out: Path, per_row: int = 12) -> Path:
    """``out/figures/held_out_<class>.png``: real test images of ``class_name``, then one row of that class's samples
    per saved generator (``generator_dirs``: row label -> folder), same seed for all."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from fairforget.components.fairness import safe_name
    from fairforget.components.generator import load_generator
    from fairforget.components.plots import plot_image_grid

    test = dataset.split("test")
    rows = [test.images[test.labels == dataset.class_names.index(class_name)][:per_row]]
    labels = [f"real {class_name}"]
    for label, folder in generator_dirs.items():
        generator = load_generator(folder, device="cpu")
        rows.append(generator.sample(pd.DataFrame({"class_name": [class_name] * per_row}), seed=0))
        labels.append(label)
    figure = plot_image_grid(rows, labels, title=f"{class_name}: samples of generators whose public data lacked it")
    path = out / "figures" / f"held_out_{safe_name(class_name)}.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path


@contextmanager
def pretraining_without(class_names):
    """Within the block, a DP generator's public pre-training skips the public images of ``class_names`` (its
    autoencoder still learns them): the denoiser-only positive control. Under ``privacy="dp"``, ``fit_denoiser``
    is the pre-training's trainer only (DP-SGD has its own), so the filter touches nothing else."""
    import numpy as np
    import torch

    from fairforget.components.generator import CLASS_VARIABLE
    from fairforget.components.generator import train as train_module

    real = train_module.fit_denoiser

    def without(denoiser, data, codes, space, config, progress=True):
        column = space.names.index(CLASS_VARIABLE)
        keep = ~np.isin(codes[:, column], [space.values[column].index(c) for c in class_names])
        return real(denoiser, data[torch.from_numpy(keep)], codes[keep], space, config, progress)

    train_module.fit_denoiser = without
    try:
        yield
    finally:
        train_module.fit_denoiser = real


def measure_dp(epsilon: float, dataset, out: Path, judge, variant: str = "dp", base=None,
               save_dir: Path | None = None, public_without: tuple[str, ...] = (),
               pretrain_without: tuple[str, ...] = ()) -> dict:
    """Train, judge and audit the DP generator ``variant`` at ``epsilon`` (or read its saved point). ``base``: the
    DP generator's ``GeneratorConfig`` (default ``dp_preset()``); ``save_dir``: also save the
    generator to ``<save_dir>/<point name>/`` (for ``bench_tradeoff``); ``public_without``: classes removed from
    the public split the generator learns from (judged and audited on the full ``dataset``); ``pretrain_without``:
    classes only the denoiser's public pre-training skips (``pretraining_without``)."""
    from dataclasses import replace

    from fairforget.components.generator import train_generator

    base = base if base is not None else dp_preset()
    prefix = "eps" if variant == "dp" else variant
    path = out / f"{prefix}-{epsilon:g}.json"
    if path.is_file():
        return json.loads(path.read_text())
    started = time.perf_counter()
    config = replace(base, privacy="dp", dp_epsilon=epsilon, **DP_VARIANTS[variant])
    training_data = without_public_classes(dataset, public_without) if public_without else dataset
    with pretraining_without(pretrain_without) if pretrain_without else contextlib.nullcontext():
        generator = train_generator(training_data, config=config, progress=False)
    if save_dir is not None:
        generator.save(save_dir / path.stem)
    recipe = {field: getattr(config, field) for field in DP_PRESET if field != "privacy"}
    recipe = {key: list(value) if isinstance(value, tuple) else value for key, value in recipe.items()}  # as in JSON
    point = {"mode": variant, "target_epsilon": epsilon, "recipe": recipe, "public_without": list(public_without),
             "pretrain_without": list(pretrain_without),
             **_point(generator, dataset, time.perf_counter() - started, judge)}
    held_out = tuple(dict.fromkeys([*public_without, *pretrain_without]))
    point["metrics"].update(reconstruction_accuracy(generator, dataset, held_out, judge))
    path.write_text(json.dumps(point, indent=1, default=float) + "\n")
    return point


def measure_non_private(dataset, data_md5: str, out: Path) -> dict:
    """The non-private generator's point: reused from the tracking store (its training time from its run)."""
    path = out / "eps-inf.json"
    if path.is_file():
        return json.loads(path.read_text())
    from fairforget.pipelines.train_generator import get_or_train_generator

    generator, info = get_or_train_generator(dataset, data_md5, dataset_name="fashion_mnist")
    # negative control on the real data: the same generator and attacks, with "members" it never saw (reference
    # records, same class counts) against the audit pool: must stay within the chance bound
    from fairforget.components.generator.audit import audit_generator, matched_non_members

    pool = dataset.split("audit")
    unseen, non_members = matched_non_members(dataset.split("reference"), pool, max_members=2000, seed=0)
    control = audit_generator(generator, unseen, non_members)
    print(f"bench_dp_generator: negative control (non-private generator, records it never saw): {control.summary()}")
    summary = {k: v for k, v in generator.training_summary.items() if k != "loss_history"}
    point = {"mode": "none", "target_epsilon": math.inf, "train_seconds": summary.get("train_seconds", float("nan")),
             "summary": summary, "metrics": dict(info["metrics"]), "negative_control": control.metrics(),
             "run_id": info["run_id"]}
    path.write_text(json.dumps(point, indent=1, default=float) + "\n")
    return point


def report(points: list[dict], out: Path) -> list[dict]:
    """Print the table with ratios to the non-private point; write it as JSON and plot it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    baseline = next((p for p in points if p["mode"] == "none"), None)
    held_out = sorted({c for p in points for c in [*p.get("public_without", []), *p.get("pretrain_without", [])]})
    rows = []
    if baseline is not None and "negative_control" in baseline:
        control = baseline["negative_control"]
        print(f"bench_dp_generator: negative control AUC {control['generator/mia/auc']:.3f} "
              f"(bound {control['generator/mia/auc_chance_bound']:.3f}) on records the generator never saw")
    print("bench_dp_generator:        mode epsilon | achieved | cond. acc | CAS ratio | FID | MIA AUC (bound) | train min")
    for p in sorted(points, key=lambda p: (MODE_ORDER.index(p["mode"]), p["target_epsilon"])):
        m = p["metrics"]
        row = {"target_epsilon": p["target_epsilon"], "achieved_epsilon": p["summary"].get("dp_epsilon", math.inf),
               "train_minutes": p["train_seconds"] / 60, **{k: m.get(k, float("nan")) for k in ROW_METRICS}}
        row["mode"] = p["mode"]
        row[INDEPENDENT_JUDGE_KEY] = m.get(INDEPENDENT_JUDGE_KEY, float("nan"))
        row["public_without"] = p.get("public_without", [])
        for name in held_out:
            for key in (f"generator/conditional_accuracy/{name}", f"generator/cas/{name}",
                        f"generator/reconstruction_accuracy/{name}"):
                row[key] = m.get(key, float("nan"))
        rows.append(row)
        ratio = ""
        if baseline is not None and p is not baseline:
            b = baseline["metrics"]
            ratio = (f"  (x{m['generator/conditional_accuracy'] / b['generator/conditional_accuracy']:.2f} accuracy, "
                     f"x{m['generator/cas_ratio'] / b['generator/cas_ratio']:.2f} CAS of non-private)")
        print(f"bench_dp_generator: {p['mode']:>11} {row['target_epsilon']:>5g} | {row['achieved_epsilon']:8.2f} | "
              f"{row['generator/conditional_accuracy']:9.3f} | {row['generator/cas_ratio']:9.3f} | "
              f"{row['generator/fid']:6.1f} | {row['generator/mia/auc']:.3f} ({row['generator/mia/auc_chance_bound']:.3f})"
              f" | {row['train_minutes']:5.1f}{ratio}")
        for name in held_out:
            print(f"bench_dp_generator: {'':>11} {name} (public split without it: {name in row['public_without']}):"
                  f" conditional accuracy {row[f'generator/conditional_accuracy/{name}']:.3f}, CAS on its real test "
                  f"images {row[f'generator/cas/{name}']:.3f}, its real test images judged after the autoencoder's "
                  f"round trip {row[f'generator/reconstruction_accuracy/{name}']:.3f}")
    (out / "dp_tradeoff.json").write_text(json.dumps(rows, indent=1, default=float) + "\n")
    print(markdown_table(rows, baseline, held_out))

    dp_rows = [r for r in rows if r["mode"] == "dp"]
    scratch_rows = [r for r in rows if r["mode"] == "dp-scratch"]
    if not dp_rows:
        return rows
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for key, label in (("generator/conditional_accuracy", "conditional accuracy"), ("generator/cas_ratio", "CAS ratio")):
        axes[0].plot([r["achieved_epsilon"] for r in dp_rows], [r[key] for r in dp_rows], "o-", label=f"DP: {label}")
        if scratch_rows:
            axes[0].plot([r["achieved_epsilon"] for r in scratch_rows], [r[key] for r in scratch_rows], "x:",
                         color=axes[0].lines[-1].get_color(), label=f"DP from scratch: {label}")
        if baseline is not None:
            axes[0].axhline(baseline["metrics"][key], ls="--", lw=0.8, color=axes[0].lines[-1].get_color(),
                            label=f"non-private: {label}")
    axes[0].set(xscale="log", xlabel="epsilon (achieved)", ylabel="quality", title="Quality", ylim=(0, 1.05))
    axes[0].legend(fontsize=7)
    axes[1].plot([r["achieved_epsilon"] for r in dp_rows], [r["generator/mia/auc"] for r in dp_rows], "o-",
                 label="DP generator")
    if scratch_rows:
        axes[1].plot([r["achieved_epsilon"] for r in scratch_rows], [r["generator/mia/auc"] for r in scratch_rows],
                     "x:", color="C0", label="DP from scratch")
    axes[1].plot([r["achieved_epsilon"] for r in dp_rows], [r["generator/mia/auc_chance_bound"] for r in dp_rows],
                 "k:", label="chance bound")
    if baseline is not None:
        axes[1].axhline(baseline["metrics"]["generator/mia/auc"], ls="--", color="C3", label="non-private")
    axes[1].set(xscale="log", xlabel="epsilon (achieved)", ylabel="membership AUC", title="Leakage", ylim=(0.45, 1))
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "figures" / "dp_tradeoff.png", dpi=120)
    return rows


MODE_ORDER = ("dp", "dp-scratch", "public-only", "none")
MODE_NAMES = {"dp": "DP, public pre-training, target {epsilon:g}", "dp-scratch": "DP from scratch, target {epsilon:g}",
              "public-only": "public pre-training only (1 DP step)", "none": "non-private"}


def markdown_table(rows: list[dict], baseline: dict | None, held_out: list[str] = ()) -> str:
    """The table of docs/generator.md: one row per point; with ``held_out`` classes (``--public-without``) one
    more column each: that class's conditional accuracy / CAS on its real images (its real images judged after
    the generator's autoencoder)."""
    extra = "".join(f" {name}: conditional accuracy / CAS (real images after the autoencoder) |" for name in held_out)
    lines = ["| generator | epsilon (achieved) | training (min) | conditional accuracy (independent judge) | "
             f"CAS ratio | FID | membership AUC (chance bound) |{extra}", "|---|---|---|---|---|---|---|"
             + "---|" * len(held_out)]
    for r in rows:
        name = MODE_NAMES[r["mode"]].format(epsilon=r["target_epsilon"])
        eps = "-" if not math.isfinite(r["achieved_epsilon"]) else f"{r['achieved_epsilon']:.2f}"
        independent = r.get(INDEPENDENT_JUDGE_KEY, float("nan"))
        independent = f" ({independent:.3f})" if math.isfinite(independent) else ""
        lines.append(f"| {name} | {eps} | {r['train_minutes']:.1f} | {r['generator/conditional_accuracy']:.3f}"
                     f"{independent} | {r['generator/cas_ratio']:.3f} | {r['generator/fid']:.1f} | "
                     f"{r['generator/mia/auc']:.3f} ({r['generator/mia/auc_chance_bound']:.3f}) |"
                     + "".join(f" {r[f'generator/conditional_accuracy/{name}']:.3f} / "
                               f"{r.get(f'generator/cas/{name}', float('nan')):.3f}"
                               f" ({r.get(f'generator/reconstruction_accuracy/{name}', float('nan')):.3f}) |"
                               for name in held_out))
    if baseline is not None and "negative_control" in baseline:
        control = baseline["negative_control"]
        lines.append(f"| non-private, on records it never saw (negative control) | - | - | - | - | - | "
                     f"{control['generator/mia/auc']:.3f} ({control['generator/mia/auc_chance_bound']:.3f}) |"
                     + " - |" * len(held_out))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epsilons", type=float, nargs="*", default=[1.0, 3.0, 10.0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--variants", nargs="*", default=["dp"], choices=sorted(DP_VARIANTS),
                        help="dp: public pre-training then DP-SGD (the default config); dp-scratch: DP-SGD from "
                             "scratch; public-only: the pre-training alone")
    parser.add_argument("--skip-baseline", action="store_true", help="do not measure the non-private generator")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the table from saved points")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a field of the DP generators' preset, e.g. autoencoder_epochs=24 "
                             "(repeatable; use a separate --out, saved points are reused by name)")
    parser.add_argument("--save-dir", default="", help="also save each trained DP generator to SAVE_DIR/<point>/")
    parser.add_argument("--public-without", action="append", default=[], metavar="CLASS",
                        help="positive control: remove CLASS from the public split the DP generators learn from "
                             "(repeatable; use a separate --out)")
    parser.add_argument("--pretrain-without", action="append", default=[], metavar="CLASS",
                        help="denoiser-only positive control: the public pre-training skips CLASS, the autoencoder "
                             "still learns it (repeatable; use a separate --out)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        from fairforget.components.versioning import dvc_md5_of_folder
        from fairforget.pipelines.data_steps import load_current_data
        from fairforget.pipelines.tracking import configure_tracking

        configure_tracking()
        dataset = load_current_data(args.data_dir)
        if not args.skip_baseline:
            measure_non_private(dataset, dvc_md5_of_folder(args.data_dir), out)
        from experiments.bench_generator import config_with_overrides

        base = config_with_overrides(args.set, base=dp_preset())
        judge = independent_judge(dataset)
        for variant in args.variants:
            for epsilon in args.epsilons:
                measure_dp(epsilon, dataset, out, judge, variant, base,
                           save_dir=Path(args.save_dir) if args.save_dir else None,
                           public_without=tuple(args.public_without),
                           pretrain_without=tuple(args.pretrain_without))
    points = [json.loads(p.read_text()) for pattern in ("eps-*.json", "dp-scratch-*.json", "public-only-*.json")
              for p in sorted(out.glob(pattern))]
    if args.public_without and args.save_dir:
        saved = {p.name: p for p in sorted(Path(args.save_dir).iterdir()) if (p / "generator.json").is_file()}
        for name in args.public_without:
            print(f"bench_dp_generator: sample grid {held_out_grid(saved, dataset, name, out)}")
    return report(points, out)


if __name__ == "__main__":
    main()
