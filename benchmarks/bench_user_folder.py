"""The pipeline on "a user's own photos": a colour folder of mixed-size RGB JPEGs, run end to end as a user would.

Builds the folder with ``tools.make_user_folder --colour`` (Fashion-MNIST's test images, tinted warm or cool,
the tint correlated with the superclass), runs ``main`` on it in a fresh tracking store in a temporary folder, and
prints what a user wants to know: the wall time of every step, the bias (KL to the prior) and the
attribute-superclass dependence (mutual information) before and after augmentation, the accuracy, the privacy
verdicts and the gate's decision. The figures are also written as JSON (``--json``).

    python -m benchmarks.bench_user_folder [--image-size 64] [--json docs/results/benchmarks/user_folder.json]

``--report RUN_ID --tracking-uri URI`` prints the same table for a run that already finished.
"""

from __future__ import annotations

import argparse
import os
import re
import time

import mlflow

from benchmarks.utils import scratch_tracking_store, write_figures
from tools.make_user_folder import write_user_folder

SHOWN = (r"debiased/kl/.*|bias/mi/.*|acc/(test|worst_class|[a-z]+)|time/.*"
         r"|final/mia/(retained|forgotten)/(auc_high|tpr_high|certified)|final/mia/canary/power")
SHOWN_CHILD = r"bias/kl/.*|generator/(conditional_accuracy|cas_ratio|fid|mia/auc|mia/tpr_at_1pct_fpr)"
FOLDER_ARGS = ["--dataset", "folder", "--majority-superclass", "apparel", "--attributes", "superclass,tint",
               "--train-size", "2000", "--test-size", "1000", "--audit-size", "1600", "--reference-size", "2000"]


def step_seconds(client: mlflow.MlflowClient, parent_run_id: str) -> dict[str, float]:
    """Wall time of each step run under ``parent_run_id`` (its child runs), by run name, in start order."""
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  order_by=["attributes.start_time ASC"])
    return {child.info.run_name: (child.info.end_time - child.info.start_time) / 1000
            for child in children if child.info.end_time}


def report(run_id: str) -> dict:
    """The benchmark's figures for the finished pipeline run ``run_id`` (tracking URI already set): its own metrics
    (final values) and, named ``<step>: <metric>``, the bias its validate step measured before augmentation and the
    generator's quality and audit."""
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    metrics = run.data.metrics
    children = client.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    for child in children:  # bias before augmentation (validate) and the generator's figures (train_generator)
        metrics.update({f"{child.info.run_name}: {k}": v for k, v in child.data.metrics.items()
                        if re.fullmatch(SHOWN_CHILD, k)})
    picked = {k: v for k, v in sorted(metrics.items()) if re.fullmatch(SHOWN, k) or ": " in k}
    return {"run_id": run_id, "steps_s": step_seconds(client, run_id),
            "total_min": (run.info.end_time - run.info.start_time) / 60000 if run.info.end_time else None,
            "gate": run.data.tags.get("gate"), "gate_reason": run.data.tags.get("gate_reason"),
            "metrics": picked}


def print_report(figures: dict) -> None:
    print(f"bench_user_folder: run {figures['run_id']}, {figures['total_min']:.1f} min in all")
    for step, seconds in figures["steps_s"].items():
        print(f"  step {step:<28} {seconds:8.1f} s")
    for name, value in figures["metrics"].items():
        print(f"  {name:<44} {value:.4f}")
    print(f"  gate {figures['gate']}: {figures['gate_reason']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=None, help="passed to the pipeline (default: its own)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--report", metavar="RUN_ID", default=None, help="only print the figures of this run")
    parser.add_argument("--tracking-uri", default=None, help="with --report: the store that holds the run")
    parser.add_argument("pipeline_args", nargs="*", help="more arguments for the pipeline, after --")
    args = parser.parse_args(argv)

    if args.report:
        mlflow.set_tracking_uri(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
        figures = report(args.report)
    else:
        scratch = scratch_tracking_store("bench-user-folder")
        images = write_user_folder(scratch / "photos", colour=True)
        print(f"bench_user_folder: {images} colour photos in {scratch / 'photos'}")
        from fairforget.pipelines.config import build_parser, config_from_args
        from fairforget.pipelines.main import run_pipeline
        from fairforget.pipelines.tracking import start_process

        start_process()  # the progress heartbeat lines, as under `mlflow run`

        size = ["--image-size", str(args.image_size)] if args.image_size else []
        config = config_from_args(build_parser().parse_args(
            [*FOLDER_ARGS, "--source-dir", str(scratch / "photos"), "--data-dir", str(scratch / "data"),
             "--outputs-dir", str(scratch / "outputs"), *size, *args.pipeline_args]))
        started = time.perf_counter()
        summary = run_pipeline(config)
        print(f"bench_user_folder: pipeline {(time.perf_counter() - started) / 60:.1f} min")
        figures = {**report(summary["run_id"]), "image_size": args.image_size, "pipeline_args": args.pipeline_args,
                   "summary": {k: v for k, v in summary.items() if isinstance(v, (int, float, str, type(None)))}}
        print(f"bench_user_folder: tracking store and data kept in {scratch}")
    print_report(figures)
    write_figures(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
