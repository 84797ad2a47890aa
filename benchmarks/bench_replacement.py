"""What synthetic images are worth when they stand in for the originals: the pipeline's classifier trained on them.

The CAS ratio judges a generator with a small classifier trained for a few epochs; the paper's claims are about
the pipeline's own SISA ensemble. This benchmark trains that ensemble (the default ``SisaConfig``, one seed) on the
training sets the pipeline builds and tests each on the held-out test split:

- ``oversampled``: S* 's class counts filled with repeated real images (the study's baseline; no generator);
- ``public-filled``: S* 's class counts filled with real images of the public ``reference`` split (what a user
  with public data could do without any generator: the bar for a generator that learns from public data too);
- ``augmented g``: S plus synthetic images sampled at guidance g up to S* 's class counts (Algorithm 1's S*, the
  loop's iteration 0);
- ``synthetic g xr``: synthetic images only, r times S* 's class counts, at guidance g (the end of Algorithm 2 once
  every original is replaced; r > 1 asks whether more samples of the same generator buy accuracy back).

    python -m benchmarks.bench_replacement --generator-dir DIR [--scales 1.5 3] [--multiples 1 2] [--output F]

It prints test accuracy, minority-superclass accuracy and worst-class accuracy per training set, each with its
difference to ``oversampled`` measured in the same run. Canaries are left out (this measures utility, not
privacy), so the figures sit next to, not on, the study's. One seed: differences under about 0.02 are within
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

    from benchmarks.study import oversampled_training_set
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


def train_and_test(train_set, test, sisa_config, folder: Path, minority: str) -> dict:
    """Train a SISA ensemble on ``train_set`` in ``folder`` (removed afterwards); its test figures (``acc/minority``:
    the accuracy on superclass ``minority``), the mean accuracy of its shards on their own records, and seconds."""
    from fairforget.components.forgetting import evaluate_model, shard_fit_accuracies
    from fairforget.components.sisa.model import SisaModel

    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    model = SisaModel.create(train_set, sisa_config, folder)
    model.train()
    fairness = evaluate_model(model.ensemble().predict_proba, test)
    metrics = fairness.metrics()
    row = {"acc/test": metrics["acc/test"], "acc/worst_class": metrics["acc/worst_class"],
           "acc/minority": fairness.per_superclass[minority],
           "per_superclass": fairness.per_superclass, "per_class": fairness.per_class,
           "shard_fit_accuracy": float(sum(shard_fit_accuracies(model, train_set)) / sisa_config.num_shards),
           "train_size": len(train_set), "seconds": time.perf_counter() - started}
    shutil.rmtree(folder, ignore_errors=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--generator-dir", required=True, help="a saved generator (a train_generator artifact)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.5, 3.0])
    parser.add_argument("--multiples", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="", help="write the figures here as JSON")
    args = parser.parse_args(argv)

    from fairforget.components.dataset import load_dataset
    from fairforget.components.generator import load_generator
    from fairforget.components.sisa.model import SisaConfig

    dataset = load_dataset(args.data_dir)
    generator = load_generator(args.generator_dir, device="cpu")
    sets = training_sets(dataset, generator, args.scales, args.multiples, seed=args.seed)
    sisa_config = dataclasses.replace(SisaConfig(), seed=args.seed)
    test = dataset.split("test")
    minority = dataset.split("train").manifest["superclass"].value_counts().idxmin()  # S's minority superclass
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-replacement-") as work:
        for name, train_set in sets.items():
            rows[name] = train_and_test(train_set, test, sisa_config, Path(work) / "model", minority)
            print(f"{name}: " + ", ".join(f"{key} {rows[name][key]:.4f}" for key in FIGURES)
                  + f" ({rows[name]['train_size']} images, {rows[name]['seconds']:.0f} s)", flush=True)
    print(format_rows(rows))
    if args.output:
        target = Path(args.output)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps({"generator_dir": args.generator_dir, "seed": args.seed, "rows": rows}, indent=1))
        tmp.replace(target)
    return rows


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
