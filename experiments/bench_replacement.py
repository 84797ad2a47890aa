"""What synthetic images are worth when they stand in for the originals: the pipeline's classifier trained on them.

The CAS ratio judges a generator with a small classifier trained for a few epochs; the paper's claims are about
the pipeline's own SISA ensemble. This benchmark trains that ensemble (the default ``SisaConfig``, one seed) on the
training sets the pipeline builds and tests each on the held-out test split:

- ``oversampled``: S* 's class counts filled with repeated real images (the study's baseline; no generator). The
  SISA plan deals the copies like any record, so a record's copies land in most shards: each shard sees about
  3.7 times as many distinct minority originals as under S*, and forgetting one original retrains every shard
  holding a copy;
- ``oversampled in shards``: the same images, each copy in its original's shard (``SisaModel.create(groups=...)``):
  every shard repeats its own originals, sees as many distinct originals as under S*, and forgetting a record
  retrains one shard. This is the oversampling that keeps SISA's unlearning cost, the like-for-like baseline;
- ``public-filled``: S* 's class counts filled with real images of the public ``reference`` split (what a user
  with public data could do without any generator: the bar for a generator that learns from public data too);
- ``augmented g``: S plus synthetic images sampled at guidance g up to S* 's class counts (Algorithm 1's S*, the
  loop's iteration 0);
- ``synthetic g xr``: synthetic images only, r times S* 's class counts, at guidance g (the end of Algorithm 2 once
  every original is replaced; r > 1 asks whether more samples of the same generator buy accuracy back).

    python -m experiments.bench_replacement --generator-dir DIR [--scales 1.5 3] [--multiples 1 2] [--output F]
    python -m experiments.bench_replacement --generator-dir DIR --scales 3 --multiples 1 --seeds 0 1 2 \
        --sets oversampled "oversampled in shards" "augmented g3" "synthetic g3 x1"

It prints test accuracy, minority-superclass accuracy and worst-class accuracy per training set, each with its
difference to ``oversampled`` measured in the same run, and the mean number of distinct real records each shard
learns from (``originals_per_shard``; a copy counts as its original). With several ``--seeds`` (each seed: the
sampling of Algorithm 1 and the SISA seed; the generator stays the one given) it also prints each figure's mean and
standard deviation over the seeds and their differences to ``oversampled``, seed by seed. Canaries are left out
(this measures utility, not privacy), so the figures sit next to, not on, the study's. One seed: differences under about 0.02 are within
the seed-to-seed spread of docs/results.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

FIGURES = ("acc/test", "acc/minority", "acc/worst_class")


def training_sets(dataset, generator, scales, multiples, seed: int = 0) -> dict:
    """name -> training Dataset (module docstring), all with S* 's class counts (times r for ``synthetic g xr``).
    S* is Algorithm 1 with the pipeline's default balance and augment settings at each guidance scale."""
    import numpy as np

    from fairforget.components.baselines import oversampled_training_set
    from fairforget.components.augment import AugmentConfig, augment, synthesize
    from fairforget.components.bias import BalanceConfig
    from fairforget.components.generator.denoiser import draw_conditions
    from fairforget.components.priors import build_target

    balance = BalanceConfig()
    train, reference = dataset.split("train"), dataset.split("reference")
    target = build_target(train.manifest, list(balance.attributes), prior=balance.prior, structure=balance.structure,
                          reference_manifest=reference.manifest if len(reference) else None, seed=seed)
    sets = {}
    for scale in scales:
        result = augment(dataset, target, generator, config=AugmentConfig(rho=balance.rho, guidance_scale=scale,
                                                                          seed=seed))
        augmented = result.dataset.split("train")
        counts = np.bincount(augmented.labels, minlength=dataset.num_classes)
        if "oversampled" not in sets:
            sets["oversampled"] = oversampled_training_set(train, counts)
            sets["oversampled in shards"] = sets["oversampled"]  # trained with each copy in its original's shard
            if len(reference):
                sets["public-filled"] = public_filled_training_set(train, reference, counts, seed)
        sets[f"augmented g{scale:g}"] = augmented
        for multiple in multiples:
            class_counts = {name: int(round(multiple * count)) for name, count in zip(dataset.class_names, counts)}
            conditions = draw_conditions(generator.space, train.manifest, class_counts, seed=seed + 11)
            sets[f"synthetic g{scale:g} x{multiple:g}"] = synthesize(generator, conditions, seed=seed + 11,
                                                                    like=train, guidance_scale=scale)
    return sets


def public_filled_training_set(train, public, target_counts, seed: int = 0):
    """``train`` with each class filled up to ``target_counts[k]`` rows by real images of that class drawn without
    replacement from ``public`` (a class with too few public images gets all it has)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    picks = []
    for label, target in enumerate(target_counts):
        missing = int(target) - int(np.sum(train.labels == label))
        candidates = np.flatnonzero(public.labels == label)
        if missing > 0 and len(candidates):
            picks.append(rng.choice(candidates, size=min(missing, len(candidates)), replace=False))
    if not picks:
        return train
    chosen = np.sort(np.concatenate(picks))
    extra = public.select(np.isin(np.arange(len(public)), chosen))
    return train.concat(dataclasses.replace(extra, manifest=extra.manifest.assign(split="train")))


SHARD_LOCAL_SETS = ("oversampled in shards",)


def set_groups(name: str, train_set):
    """The ``groups`` a set is trained with: each copy with its original for ``SHARD_LOCAL_SETS``, else None."""
    from fairforget.components.baselines import copy_groups

    return copy_groups(train_set.ids) if name in SHARD_LOCAL_SETS else None


def train_and_test(train_set, test, sisa_config, folder: Path, minority: str, groups=None) -> dict:
    """Train a SISA ensemble on ``train_set`` in ``folder`` (removed afterwards; ``groups`` as in
    ``SisaModel.create``); its test figures (``acc/minority``: the accuracy on superclass ``minority``), the mean
    accuracy of its shards on their own records, the mean number of distinct real records (a copy counts as its
    original) each shard learns from, and seconds."""
    from fairforget.components.baselines import copy_source
    from fairforget.components.forgetting import evaluate_model, shard_fit_accuracies
    from fairforget.components.sisa.model import SisaModel

    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    model = SisaModel.create(train_set, sisa_config, folder, groups=groups)
    real = set(train_set.ids[(train_set.manifest["origin"] == "real").to_numpy()])
    plan = model.plan.table
    originals_per_shard = plan[plan["id"].isin(real)].assign(source=lambda t: t["id"].map(copy_source)).groupby(
        "shard")["source"].nunique().reindex(range(sisa_config.num_shards), fill_value=0).mean()
    model.train()
    fairness = evaluate_model(model.ensemble().predict_proba, test)
    metrics = fairness.metrics()
    row = {"acc/test": metrics["acc/test"], "acc/worst_class": metrics["acc/worst_class"],
           "acc/minority": fairness.per_superclass[minority],
           "per_superclass": fairness.per_superclass, "per_class": fairness.per_class,
           "shard_fit_accuracy": float(sum(shard_fit_accuracies(model, train_set)) / sisa_config.num_shards),
           "originals_per_shard": float(originals_per_shard), "train_size": len(train_set),
           "seconds": time.perf_counter() - started}
    shutil.rmtree(folder, ignore_errors=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--generator-dir", required=True, help="a saved generator (a train_generator artifact)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.5, 3.0])
    parser.add_argument("--multiples", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--sets", nargs="+", default=None, metavar="NAME",
                        help="train only these training sets (names as printed; default: all)")
    parser.add_argument("--output", default="", help="write the figures here as JSON")
    args = parser.parse_args(argv)

    from fairforget.components.dataset import load_dataset
    from fairforget.components.generator import load_generator
    from fairforget.components.sisa.model import SisaConfig

    dataset = load_dataset(args.data_dir)
    generator = load_generator(args.generator_dir, device="cpu")
    test = dataset.split("test")
    minority = dataset.split("train").manifest["superclass"].value_counts().idxmin()  # S's minority superclass
    rows_by_seed = {}
    for seed in args.seeds:
        sets = training_sets(dataset, generator, args.scales, args.multiples, seed=seed)
        unknown = sorted(set(args.sets or []) - set(sets))
        if unknown:
            raise SystemExit(f"bench_replacement: unknown --sets {unknown}; the sets are: {', '.join(sets)}")
        sisa_config = dataclasses.replace(SisaConfig(), seed=seed)
        rows = rows_by_seed[seed] = {}
        with tempfile.TemporaryDirectory(prefix="bench-replacement-") as work:
            for name, train_set in sets.items():
                if args.sets is not None and name not in args.sets:
                    continue
                rows[name] = train_and_test(train_set, test, sisa_config, Path(work) / "model", minority,
                                            groups=set_groups(name, train_set))
                print(f"seed {seed}, {name}: " + ", ".join(f"{key} {rows[name][key]:.4f}" for key in FIGURES)
                      + f" ({rows[name]['train_size']} images, {rows[name]['originals_per_shard']:.0f} distinct "
                        f"real records per shard, {rows[name]['seconds']:.0f} s)", flush=True)
        print(f"seed {seed}:\n" + format_rows(rows))
    summary = summarize_seeds(rows_by_seed) if len(args.seeds) > 1 else None
    if summary is not None:
        print(format_summary(summary))
    if args.output:
        target = Path(args.output)
        tmp = target.with_suffix(target.suffix + ".tmp")
        result = {"generator_dir": args.generator_dir, "seeds": args.seeds,
                  "rows_by_seed": {str(k): v for k, v in rows_by_seed.items()}, "summary": summary}
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(target)
    return rows_by_seed


def summarize_seeds(rows_by_seed: dict, baseline: str = "oversampled") -> dict:
    """name -> figure -> {mean, sd (ddof 1), diff_mean, diff_sd}: each figure over the seeds and its seed-by-seed
    difference to ``baseline`` (the same seed's; absent when the baseline was not trained)."""
    import numpy as np

    names = [name for name in next(iter(rows_by_seed.values()))]
    out = {}
    for name in names:
        out[name] = {}
        for key in FIGURES + ("originals_per_shard",):
            values = np.array([rows[name][key] for rows in rows_by_seed.values()])
            entry = {"mean": float(values.mean()), "sd": float(values.std(ddof=1))}
            if all(baseline in rows for rows in rows_by_seed.values()):
                diffs = values - np.array([rows[baseline][key] for rows in rows_by_seed.values()])
                entry.update(diff_mean=float(diffs.mean()), diff_sd=float(diffs.std(ddof=1)))
            out[name][key] = entry
    return out


def format_summary(summary: dict, baseline: str = "oversampled") -> str:
    """A markdown table of ``summarize_seeds``: mean +- sd, and the mean +- sd difference to ``baseline``."""
    lines = ["| training set (mean +- sd over seeds) | distinct real records per shard | " + " | ".join(FIGURES)
             + " |", "|---|---|" + "---|" * len(FIGURES)]
    for name, figures in summary.items():
        cells = []
        for key in FIGURES:
            entry = figures[key]
            cell = f"{entry['mean']:.4f} +- {entry['sd']:.4f}"
            if name != baseline and "diff_mean" in entry:
                cell += f" ({entry['diff_mean']:+.4f} +- {entry['diff_sd']:.4f})"
            cells.append(cell)
        lines.append(f"| {name} | {figures['originals_per_shard']['mean']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_rows(rows: dict, baseline: str = "oversampled") -> str:
    """A markdown table: one row per training set, each figure with its difference to ``baseline``."""
    lines = ["| training set | images | shards' fit | " + " | ".join(FIGURES) + " |",
             "|---|---|---|" + "---|" * len(FIGURES)]
    for name, row in rows.items():
        cells = [f"{row[key]:.4f}" + (f" ({row[key] - rows[baseline][key]:+.4f})" if name != baseline else "")
                 for key in FIGURES]
        lines.append(f"| {name} | {row['train_size']} | {row['shard_fit_accuracy']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
