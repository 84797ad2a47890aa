"""Benchmark: what proving exact unlearning costs Algorithm 2, per step (``exactness_audit=every_step``) or once at
the end (``final``, the default).

The pipeline's SISA configuration (``main``'s defaults: shards, slices, epochs, executor) is trained once on the
prepared data's original training records; then ``--steps`` Algorithm-2 steps (``last_slice_first``, the
pipeline's per-shard count at ``forget_rate``) run twice from that same state: with the per-step audit (one
unlearned shard retrained from scratch in the same pool, compared bit for bit) and without it, followed by the
final check (every shard retrained from scratch and compared). Prints the seconds of each and the projected cost
of an Algorithm-2 run of ``--iterations`` steps both ways, and their ratio. The data here have no synthetic
images, so shards are smaller than the pipeline's; the ratio, not the seconds, carries over.

    python -m benchmarks.bench_exactness [--data-dir data] [--steps 3] [--iterations 11] [--output FILE]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.utils import write_figures
from fairforget.components.dataset import load_dataset
from fairforget.components.sisa import SisaModel


def run_steps(model: SisaModel, steps: int, per_shard: int, audit: bool) -> list[float]:
    """Seconds of ``steps`` forgetting steps on ``model`` (``last_slice_first``, seeds 1..steps)."""
    seconds = []
    for step in range(1, steps + 1):
        ids = model.sample_forget_set(model.plan.live_ids(), per_shard, "last_slice_first", seed=step)
        report = model.unlearn(ids, audit=audit)
        if audit and report.exact is not True:
            raise SystemExit(f"step {step}: the per-step audit found a difference ({report.exact})")
        seconds.append(report.seconds)
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--steps", type=int, default=3, help="Algorithm-2 steps timed in each mode")
    parser.add_argument("--iterations", type=int, default=11, help="steps of the projected Algorithm-2 run")
    parser.add_argument("--output", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    from fairforget.pipelines.config import build_parser, config_from_args

    pipeline = config_from_args(build_parser().parse_args(["--data-dir", args.data_dir]))
    config = pipeline.sisa
    train = load_dataset(args.data_dir).split("train")
    per_shard = max(1, round(pipeline.loop.forget_rate * len(train) / config.num_shards))
    print(f"bench_exactness: {len(train)} originals, k={config.num_shards}, R={config.num_slices}, executor "
          f"{config.executor}, {per_shard} forgotten per shard per step")
    work = Path(tempfile.mkdtemp(prefix="bench-exactness-"))
    try:
        started = time.perf_counter()
        SisaModel.create(train, config, work / "trained").train()
        print(f"bench_exactness: initial training {time.perf_counter() - started:.1f} s")
        timings = {}
        for mode, audit in (("every_step", True), ("final", False)):
            shutil.copytree(work / "trained", work / mode)
            model = SisaModel.load(work / mode, train)
            timings[mode] = run_steps(model, args.steps, per_shard, audit)
            print(f"bench_exactness: {mode}: steps {', '.join(f'{s:.1f}' for s in timings[mode])} s")
        started = time.perf_counter()
        differing = model.shards_differing_from_scratch()  # the "final" copy, after its steps
        final_check = time.perf_counter() - started
        if differing:
            raise SystemExit(f"the final check found shards {differing} differing from their from-scratch retrain")
        print(f"bench_exactness: final check (all {config.num_shards} shards from scratch, all equal) "
              f"{final_check:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    per_step = {mode: statistics.mean(values) for mode, values in timings.items()}
    every_step = args.iterations * per_step["every_step"]
    final = args.iterations * per_step["final"] + final_check
    print(f"bench_exactness: {args.iterations} steps with every_step {every_step / 60:.1f} min, with final "
          f"{final / 60:.1f} min (ratio final/every_step {final / every_step:.2f})")
    figures = {"per_step_s": per_step, "final_check_s": final_check, "iterations": args.iterations,
               "projected_every_step_s": every_step, "projected_final_s": final, "ratio": final / every_step,
               "steps": timings, "per_shard": per_shard, "originals": len(train)}
    write_figures(args.output, figures)
    return figures


if __name__ == "__main__":
    main()
