"""The generator's membership certificate on a trained generator: the default cross-fitted audit (every training
record of S against as many unseen ones) next to the former one-half audit (at most 2000 members, half evaluated).

    python -m experiments.generator_certificate [--project-dir .] [--run-id RUN] \
        --output docs/results/benchmarks/generator-audit-certificate.json

Reads the project's tracking store (``<project-dir>/mlflow.db``) and prepared data (``<project-dir>/data``); the
generator is that of ``--run-id`` (a ``train_generator`` run), by default the latest one. The audit leaves out the
audit-split canaries the generator trained on, as the pipeline's does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

AUDITS = {"cross_fitted": {}, "one_half_2000": {"max_members": 2000, "cross_fit": False}}
KEPT = ("auc", "auc_ci_low", "auc_ci_high", "auc_high", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_high", "certified",
        "too_few", "members", "non_members", "leak_p_value", "members_needed")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project-dir", default=".")
    parser.add_argument("--run-id", default=None, help="a train_generator run (default: the latest)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    import mlflow

    from fairforget.components.dataset import load_dataset
    from fairforget.components.generator.audit import GeneratorAuditConfig, audit_generator_on_splits
    from fairforget.pipelines.config import PipelineConfig
    from fairforget.pipelines.loop import audit_pool
    from fairforget.pipelines.train_generator import STEP, load_generator_from_run

    project = Path(args.project_dir).resolve()
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    run_id = args.run_id or client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string=f"tags.`mlflow.runName` = '{STEP}'",
        order_by=["attributes.start_time DESC"], max_results=1)[0].info.run_id
    generator = load_generator_from_run(run_id)
    dataset = load_dataset(project / "data")
    canaries = audit_pool(dataset, PipelineConfig()).canaries
    seen = canaries.for_generator().ids if canaries is not None else ()
    out = {"command": "python -m experiments.generator_certificate", "generator_run_id": run_id,
           "generator_dp_epsilon": client.get_run(run_id).data.metrics.get("generator/dp_epsilon")}
    for name, overrides in AUDITS.items():
        start = time.perf_counter()
        report = audit_generator_on_splits(generator, dataset, GeneratorAuditConfig(**overrides), seen_images=seen)
        metrics = report.metrics()
        out[name] = {key.rsplit("/", 1)[-1]: value for key, value in metrics.items()
                     if key.count("/") == 2 and key.rsplit("/", 1)[-1] in KEPT}
        out[name]["seconds"] = time.perf_counter() - start
        print(f"{name} ({out[name]['seconds']:.1f} s): {report.summary()}")
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
