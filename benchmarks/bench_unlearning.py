"""Benchmark: SISA unlearning speedup, forgetting orders, and the accuracy cost of sharding (Fashion-MNIST).

1. Speedup: serving one deletion request of m random points (m = 1, 10, 100) with SISA (retrain only the
   affected shards from the checkpoint before the first affected slice) vs retraining all shards from scratch on
   the remaining data, measured in the same run with the same executor (k=5, R=4 by default).
2. Forgetting orders: one Algorithm-2 style step forgetting ``--forget-per-shard`` originals per shard, ``random``
   vs ``last_slice_first``, from the same trained state.
3. Accuracy: aggregate (mean softmax) test accuracy for k = 1, 5, 10 shards.

Run: ``python -m benchmarks.bench_unlearning --data-dir data`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fairforget.components.dataset import load_dataset
from fairforget.components.sisa import SisaConfig, SisaModel
from fairforget.components.training import TrainConfig


def full_retrain_seconds(model: SisaModel, remaining, folder: Path) -> float:
    """Retrain all shards from scratch (empty checkpoint folder) on ``remaining``; the baseline."""
    started = time.perf_counter()
    SisaModel.create(remaining, model.config, folder).train()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--num-shards", type=int, default=5)
    parser.add_argument("--num-slices", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    parser.add_argument("--executor", default="serial", help="serial | local | ray (same for SISA and baseline)")
    parser.add_argument("--repeats", type=int, default=3, help="requests of m=1 (median reported; larger m: 1)")
    parser.add_argument("--sizes", default="1,10,100")
    parser.add_argument("--shard-counts", default="1,5,10", help="k values for the accuracy table ('' to skip)")
    parser.add_argument("--forget-per-shard", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    dataset = load_dataset(args.data_dir)
    train, test = dataset.split("train"), dataset.split("test")
    config = SisaConfig(num_shards=args.num_shards, num_slices=args.num_slices, seed=args.seed,
                        train=dataclasses.replace(TrainConfig(), epochs=args.epochs), executor=args.executor,
                        audit_exactness=False)
    print(f"data: {len(train)} train / {len(test)} test images from {args.data_dir}; k={config.num_shards}, "
          f"R={config.num_slices}, {config.stage_epochs()} epochs per slice, executor={config.executor}, "
          f"{os.cpu_count()} cores")
    work = Path(tempfile.mkdtemp(prefix="bench-unlearning-"))
    try:
        model = SisaModel.create(train, config, work / "sisa")
        initial = model.train()
        accuracy = float(np.mean(model.ensemble().predict(test.images) == test.labels))
        print(f"initial training: {initial.seconds:.1f}s, test accuracy {accuracy:.4f}")

        rng = np.random.default_rng(args.seed)
        print("\n| m | SISA unlearn s (median of n) | stages retrained | full retrain s | speedup |")
        print("|---|---|---|---|---|")
        for m in [int(s) for s in args.sizes.split(",") if s]:
            sisa_s, stages, base_s = [], [], []
            for repeat in range(args.repeats if m == 1 else 1):
                ids = rng.choice(model.plan.live_ids(), size=m, replace=False).tolist()
                report = model.unlearn(ids, audit=False)
                sisa_s.append(report.seconds)
                stages.append(report.slices_retrained)
                if repeat == 0:  # the baseline: all shards from scratch on the data left after this request
                    remaining = train.select(np.isin(train.ids, model.plan.live_ids()))
                    base_s.append(full_retrain_seconds(model, remaining, work / f"base-{m}"))
                    shutil.rmtree(work / f"base-{m}")
            speedup = statistics.median(base_s) / statistics.median(sisa_s)
            print(f"| {m} | {statistics.median(sisa_s):.2f} (n={len(sisa_s)}) | {statistics.median(stages)} of "
                  f"{config.num_shards * config.num_slices} | {statistics.median(base_s):.2f} | {speedup:.2f}x |")

        started = time.perf_counter()
        exact = model.audit_exactness(0)
        print(f"\nexactness audit (shard 0 retrained from scratch, compared bit for bit): {exact} "
              f"({time.perf_counter() - started:.1f}s)")

        print(f"\nforgetting order, {args.forget_per_shard} originals per shard in one request:")
        print("| order | seconds | stages retrained | test accuracy after |")
        print("|---|---|---|---|")
        for order in ("random", "last_slice_first"):
            copy = work / f"order-{order}"
            shutil.copytree(model.state_dir, copy)
            reopened = SisaModel.load(copy, train)
            ids = reopened.sample_forget_set(reopened.plan.live_ids(), args.forget_per_shard, order, seed=args.seed)
            report = reopened.unlearn(ids, audit=False)
            acc = float(np.mean(reopened.ensemble().predict(test.images) == test.labels))
            print(f"| {order} | {report.seconds:.2f} | {report.slices_retrained} | {acc:.4f} |")

        counts = [int(s) for s in args.shard_counts.split(",") if s]
        if counts:
            print("\naccuracy cost of sharding (mean softmax aggregation):")
            print("| k | test accuracy | train s |")
            print("|---|---|---|")
        for k in counts:
            sharded = SisaModel.create(train, dataclasses.replace(config, num_shards=k), work / f"k{k}")
            report = sharded.train()
            acc = float(np.mean(sharded.ensemble().predict(test.images) == test.labels))
            print(f"| {k} | {acc:.4f} | {report.seconds:.1f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
