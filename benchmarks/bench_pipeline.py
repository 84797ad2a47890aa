"""End-to-end pipeline time on the default data: a first run (generator trained) and a second (generator reused).

Both runs use a fresh tracking store in a temporary folder, so nothing is reused from earlier work except the
prepared ``data/`` folder. Prints each wall time, its budget (25 and 12 minutes on 2 CPU cores) and the ratio of the
second to the first run.

    python -m benchmarks.bench_pipeline [--iterations 10] [--keep]

``--reused-only`` times the second half alone against the project's own tracking store and ``outputs/``, where an
earlier ``make run`` trained the generator and the reference models (half the time of the full benchmark):

    python -m benchmarks.bench_pipeline --reused-only
"""

from __future__ import annotations

import argparse
import shutil
import time

from benchmarks.utils import scratch_tracking_store

BUDGET_FIRST_MIN, BUDGET_REUSED_MIN = 25.0, 12.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--keep", action="store_true", help="keep the temporary tracking store and outputs")
    parser.add_argument("--reused-only", action="store_true",
                        help="time one run against the project's tracking store and outputs/ (generator reused)")
    args = parser.parse_args(argv)

    if args.reused_only:
        scratch, outputs, labels = None, "outputs", ("reused",)
    else:
        scratch = scratch_tracking_store("bench-pipeline")
        outputs, labels = str(scratch / "outputs"), ("first", "reused")
    from fairforget.pipelines.config import build_parser, config_from_args
    from fairforget.pipelines.main import run_pipeline

    config = config_from_args(build_parser().parse_args(
        ["--iterations", str(args.iterations), "--data-dir", args.data_dir, "--outputs-dir", outputs]))
    timings = {}
    for label in labels:
        started = time.perf_counter()
        summary = run_pipeline(config)
        timings[label] = (time.perf_counter() - started) / 60
        print(f"bench_pipeline: {label} run {timings[label]:.1f} min (gate {summary['gate']}, "
              f"acc/test {summary['acc/test']:.4f}, mia/max_success {summary['mia/max_success']:.4f})")
    if args.reused_only:
        print(f"bench_pipeline: generator reused {timings['reused']:.1f} min (budget {BUDGET_REUSED_MIN:.0f})")
        return timings
    print(f"bench_pipeline: first run {timings['first']:.1f} min (budget {BUDGET_FIRST_MIN:.0f}), generator reused "
          f"{timings['reused']:.1f} min (budget {BUDGET_REUSED_MIN:.0f}), ratio reused/first "
          f"{timings['reused'] / timings['first']:.2f}")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return timings


if __name__ == "__main__":
    main()
