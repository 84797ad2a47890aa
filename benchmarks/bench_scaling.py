"""Benchmark: how the pipeline's CPU work grows with data size, shard count and iterations (Fashion-MNIST).

For each train size n (stratified subsets of the real 80/20 train split, class mix kept) it times, in one process
with one torch thread (so the figures are core-seconds, the unit a cluster of workers divides):

1. SISA training of all k shards (``SisaModel.train``, serial executor; k=5, R=4 by default) -> ``train_s``;
2. one Algorithm-2 forgetting step: ``forget_rate`` of the originals spread over the shards (``unlearn``, random
   order, exactness audit off) -> ``unlearn_s``, the per-iteration retraining cost;
3. the RMIA reference model on n audit-pool records (``train_reference_models``, once per run) -> ``reference_s``;
4. the membership audit (``audit_membership``, every default attack, n members vs n non-members, 10 augmentations)
   -> ``audit_s``, paid once per iteration.

It also compares the per-image cost at 28x28x1 with the 32x32x3 shape the project gives CelebA (same images,
padded and repeated), then varies k at one size, fits ``seconds = a + b * n`` by least squares for each step, and prints the fit and
the extrapolation to a CelebA-sized training set (200k images). The baseline each figure is compared against is
the same step at the smallest size, measured in the same run (ratio columns).

Run: ``python -m benchmarks.bench_scaling --data-dir data`` (about 10 minutes on one core of this 2-core machine).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fairforget.components.dataset import Dataset, load_dataset
from fairforget.components.mia import AuditConfig
from fairforget.components.mia.protocol import audit_membership, split_audit_pool
from fairforget.components.mia.reference import train_reference_models
from fairforget.components.sisa import SisaConfig, SisaModel
from fairforget.components.training import TrainConfig

CELEBA_SIZE = 200_000


def stratified_subset(dataset: Dataset, size: int, seed: int) -> Dataset:
    """``size`` rows of ``dataset`` with its class proportions (largest remainder), seeded; all rows if larger."""
    if size >= len(dataset):
        return dataset
    labels = dataset.labels
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(dataset)
    take = np.floor(exact).astype(int)
    take[np.argsort(-(exact - take))[: size - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(dataset), dtype=bool)
    for label, count in zip(classes, take):
        rows = np.flatnonzero(labels == label)
        keep[rng.permutation(rows)[:count]] = True
    return dataset.select(keep)


def fit_line(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x`` -> (a, b)."""
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(intercept), float(slope)


@contextlib.contextmanager
def stopwatch(into: dict, name: str):
    """Record ``into[name]`` = CPU seconds of this process (the fitted figure: other processes on the shared cores
    do not inflate it) and ``into[name + "_wall"]`` = wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    into[name] = time.process_time() - cpu
    into[name + "_wall"] = time.perf_counter() - wall


def time_sisa(train: Dataset, config: SisaConfig, forget_rate: float, folder: Path, seed: int) -> dict:
    """Seconds to train all shards, and to serve one forgetting step of ``forget_rate`` of the originals."""
    row: dict = {}
    with stopwatch(row, "train_s"):
        model = SisaModel.create(train, config, folder)
        report = model.train()
    per_shard = max(1, round(forget_rate * len(train) / config.num_shards))
    forget = model.sample_forget_set(model.plan.live_ids(), per_shard, "random", seed=seed)
    with stopwatch(row, "unlearn_s"):
        unlearn = model.unlearn(forget, audit=False)
    return {**row, "forgotten": len(forget), "stages": unlearn.slices_retrained, "model": model,
            "longest_shard_s": max(result.seconds for result in report.results)}


def as_rgb32(dataset: Dataset) -> Dataset:
    """The same images at the shape this project gives CelebA (32x32 RGB): zero-padded 28 -> 32 and the grey channel
    repeated three times. Only the shape matters here (the per-image cost), not what the images show."""
    padded = np.pad(dataset.images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return dataclasses.replace(dataset, images=np.repeat(padded, 3, axis=3))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--sizes", default="1000,2000,4000", help="train sizes n (subsets of the train split)")
    parser.add_argument("--num-shards", type=int, default=5, help="k for the size sweep")
    parser.add_argument("--shard-counts", default="2,5,10", help="k values at --shard-size ('' to skip)")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--num-slices", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    parser.add_argument("--forget-rate", type=float, default=0.1)
    parser.add_argument("--iterations", type=int, default=10, help="Algorithm 2 iterations, for the extrapolation")
    parser.add_argument("--shape-probe-size", type=int, default=1000,
                        help="n for the 28x28x1 vs 32x32x3 per-image cost comparison (0 to skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # core-seconds; SISA shard tasks pin one thread each anyway (threads_per_shard=1)
    dataset = load_dataset(args.data_dir)
    full_train = dataset.split("train")
    reference_pool, non_member_pool = split_audit_pool(dataset.split("audit"), seed=args.seed)
    train_config = dataclasses.replace(TrainConfig(), epochs=args.epochs)
    # TPR at 0.1% FPR needs >= 1000 evaluation non-members (n >= 2000): report 1% only, at every size alike
    audit_config = dataclasses.replace(AuditConfig(), fpr_levels=(0.01,), show_progress=False, seed=args.seed)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(f"data: {args.data_dir}, train split {len(full_train)} images {dataset.images.shape[1:]}; "
          f"k={args.num_shards}, R={args.num_slices}, {args.epochs} epochs, forget_rate={args.forget_rate}, "
          f"attacks={','.join(audit_config.attacks)}, {audit_config.num_augmentations} augmentations; "
          f"serial executor, 1 torch thread; {os.cpu_count()} cores (shared)")

    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    rows = []
    try:
        # warm-up (first-call costs of torch and the data pipeline) so they do not land on the smallest size
        warm = SisaConfig(num_shards=2, num_slices=2, seed=args.seed, executor="serial", audit_exactness=False,
                          train=dataclasses.replace(train_config, epochs=1))
        SisaModel.create(stratified_subset(full_train, 100, args.seed), warm, work / "warm-up").train()
        for n in sizes:
            train = stratified_subset(full_train, n, args.seed)
            config = SisaConfig(num_shards=args.num_shards, num_slices=args.num_slices, seed=args.seed,
                                train=train_config, executor="serial", audit_exactness=False)
            row = time_sisa(train, config, args.forget_rate, work / f"sisa-{n}", args.seed)
            with stopwatch(row, "reference_s"):
                references = train_reference_models(stratified_subset(reference_pool, n, args.seed), num_models=1,
                                                    train_config=train_config, seed=args.seed)
            non_members = stratified_subset(non_member_pool, n, args.seed)
            with stopwatch(row, "audit_s"):
                report = audit_membership(row.pop("model").ensemble().predict_proba, train, non_members,
                                          config=audit_config, reference_predicts=references)
            row.update(n=len(train), max_success=max(r.estimates["success"].value
                                                     for r in report.results["all"].values()))
            rows.append(row)
            shutil.rmtree(work / f"sisa-{n}")
            shown = ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
            print(f"  n={len(train)} done: {shown}", flush=True)

        if args.shape_probe_size:
            train = stratified_subset(full_train, args.shape_probe_size, args.seed)
            non_members = stratified_subset(non_member_pool, args.shape_probe_size, args.seed)
            print(f"\n## Per-image cost by image shape at n={len(train)} (k={args.num_shards}): CPU seconds")
            print("| images | SISA train s | 1 forget step s | audit s (no RMIA) |")
            print("|---|---|---|---|")
            probe_config = dataclasses.replace(audit_config, attacks=tuple(a for a in audit_config.attacks
                                                                           if a != "rmia"))
            probe = {}
            for name, convert in (("28x28x1", lambda d: d), ("32x32x3", as_rgb32)):
                config = SisaConfig(num_shards=args.num_shards, num_slices=args.num_slices, seed=args.seed,
                                    train=train_config, executor="serial", audit_exactness=False)
                row = time_sisa(convert(train), config, args.forget_rate, work / f"shape-{name}", args.seed)
                with stopwatch(row, "audit_s"):
                    audit_membership(row.pop("model").ensemble().predict_proba, convert(train),
                                     convert(non_members), config=probe_config)
                probe[name] = row
                print(f"| {name} | {row['train_s']:.1f} | {row['unlearn_s']:.1f} | {row['audit_s']:.1f} |")
                shutil.rmtree(work / f"shape-{name}")
            print("ratio 32x32x3 / 28x28x1: " + ", ".join(
                f"{key} {probe['32x32x3'][key] / probe['28x28x1'][key]:.2f}"
                for key in ("train_s", "unlearn_s", "audit_s")))
        if not rows:
            return

        base = rows[0]
        print(f"\n## Size sweep (k={args.num_shards}, R={args.num_slices}): CPU seconds (wall in brackets); "
              f"ratio = CPU figure / CPU figure at n={base['n']}")
        print("| n | SISA train s | ratio | 1 forget step s (points, stages) | ratio | reference s | audit s | ratio |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['n']} | {r['train_s']:.1f} ({r['train_s_wall']:.1f}) | {r['train_s'] / base['train_s']:.2f} | "
                  f"{r['unlearn_s']:.1f} ({r['unlearn_s_wall']:.1f}; {r['forgotten']}, {r['stages']}) | "
                  f"{r['unlearn_s'] / base['unlearn_s']:.2f} | {r['reference_s']:.1f} ({r['reference_s_wall']:.1f}) | "
                  f"{r['audit_s']:.1f} ({r['audit_s_wall']:.1f}) | {r['audit_s'] / base['audit_s']:.2f} |")

        ns = [r["n"] for r in rows]
        fits = {key: fit_line(ns, [r[key] for r in rows]) for key in ("train_s", "unlearn_s", "reference_s",
                                                                        "audit_s")}
        print("\n## Linear fits: CPU seconds = a + b * n (one core of this CPU)")
        print("| step | a (s) | b (ms per image) | at n=200k (h, one core) |")
        print("|---|---|---|---|")
        for key, (a, b) in fits.items():
            print(f"| {key} | {a:.1f} | {1000 * b:.2f} | {(a + b * CELEBA_SIZE) / 3600:.2f} |")

        if args.shard_counts:
            train = stratified_subset(full_train, args.shard_size, args.seed)
            print(f"\n## Shard sweep at n={len(train)} (R={args.num_slices}): CPU seconds; ratio = figure / figure at "
                  "the first k; longest shard = wall seconds of the slowest shard (the wall time with k workers)")
            print("| k | SISA train s | ratio | 1 forget step s (points, stages) | ratio | longest shard s |")
            print("|---|---|---|---|---|---|")
            first = None
            for k in [int(s) for s in args.shard_counts.split(",") if s]:
                config = SisaConfig(num_shards=k, num_slices=args.num_slices, seed=args.seed, train=train_config,
                                    executor="serial", audit_exactness=False)
                row = time_sisa(train, config, args.forget_rate, work / f"shards-{k}", args.seed)
                first = first or row
                print(f"| {k} | {row['train_s']:.1f} | {row['train_s'] / first['train_s']:.2f} | "
                      f"{row['unlearn_s']:.1f} ({row['forgotten']}, {row['stages']}) | "
                      f"{row['unlearn_s'] / first['unlearn_s']:.2f} | {row['longest_shard_s']:.1f} |")
                shutil.rmtree(work / f"shards-{k}")

        # Extrapolation (stated as such): one run of I iterations at n = 200k with k = W shards on W one-core
        # workers. SISA's total shard work barely depends on k (the shard sweep above checks it), so each worker
        # does shard_work / W; the audits and the reference model run in the driver process, not on the workers.
        # the shard work scales with n alone (its intercept is per-run overhead that k = W workers each pay once)
        train_b = fits["train_s"][1]
        unlearn_b = fits["unlearn_s"][1]
        ref_a, ref_b = fits["reference_s"]
        audit_a, audit_b = fits["audit_s"]
        n, iterations = CELEBA_SIZE, args.iterations
        shard_work = train_b * n + iterations * unlearn_b * n
        driver_work = ref_a + ref_b * n + (iterations + 1) * (audit_a + audit_b * n)
        print(f"\n## Extrapolated to n={n} ({iterations} iterations of forget_rate {args.forget_rate}; linear fit far "
              f"beyond the measured range; 28x28x1 images and small_cnn as measured, not CelebA's 178x218x3)")
        print(f"shard work (split over k = W workers): {shard_work / 3600:.1f} core-hours; driver work (reference "
              f"model + {iterations + 1} audits, one process): {driver_work / 3600:.1f} core-hours")
        print("| workers W = shards k | wall h (shards) | wall h (driver) | wall h total |")
        print("|---|---|---|---|")
        for workers in (1, 5, 10, 20, 50):
            print(f"| {workers} | {shard_work / workers / 3600:.1f} | {driver_work / 3600:.1f} | "
                  f"{(shard_work / workers + driver_work) / 3600:.1f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
