"""The results study behind ``docs/results.md``: the default pipeline at several seeds, plus its baselines.

    python -m experiments.study --seeds 0 1 2 --parallel 3    # wall time: the head of docs/results.md; then the report
    python -m experiments.study_report                        # rewrite docs/results.md from the saved results
    python -m experiments.study --dataset cifar10 --source-dir ~/data/cifar10 --classifier resnet18 \
        --results-dir docs/results/cifar10                   # the same study on another data set (GPU advised)
    python -m experiments.study --augmentation off --epochs 30 --iterations 5 --forget-rate 0.2 \
        --results-dir docs/results/memorizing                # classifiers that memorise their members
    python -m experiments.study --generator none             # the non-private generator (docs/results/privacy-none/)
    python -m experiments.study --generator public-only      # the DP recipe without S: does S matter?

The study's generator is the pipeline's default recipe (the DP generator); another mode's results go to
``docs/results/privacy-<mode>/`` and section 4c of docs/results.md sets them beside the default's, seed by seed.

Per seed s, in its own process, its own MLflow store and its own working folder ``results/<dataset>/seed-<s>/``:

1. ``run_pipeline`` (what ``mlflow run .`` runs) with every seed set to s (data split, generator, augmentation,
   SISA, audit), 5 iterations at forget rate 0.2 (every original forgotten by the end) and no early stop
   (``convergence_patience=0``), the serial SISA
   executor with one thread per process (so parallel seeds share the cores evenly).
2. On the same data and SISA configuration, four models trained from scratch and audited exactly like one
   iteration of the loop (``iteration_audit_size`` members and as many non-members, the same reference model):
   - ``biased``: S as it is (the paper's model trained on the original data, no unlearning);
   - ``reweighted``: S with class weights that give each class the mass it has in S* (the target of Alg. 1);
   - ``oversampled``: S* 's class counts filled with repeated real images instead of synthetic ones; the SISA plan
     deals the copies like any record, so each shard sees several times as many distinct originals of a small
     class as under S*, and forgetting an original retrains every shard holding a copy of it;
   - ``oversampled_in_shards``: the same images, each copy in its original's shard (``SisaModel.create(groups=)``):
     the like-for-like SISA baseline, with S* 's unlearning cost (seed files written before it lack it);
   - ``debiased``: S* = S plus the synthetic images (original + synthetic, no unlearning). It is the pipeline's
     iteration-0 model, retrained: its test accuracy must equal the pipeline's, which the study checks.
   For these the oracle success (best threshold chosen on the evaluation set itself, the paper's protocol) is
   kept next to the calibrated one.
3. ``docs/results/seed-<s>.json`` gets everything the page shows; the pipeline's figures (distributions, sample
   grid, confusion matrices) are copied to ``docs/results/figures/seed-<s>/``.

A seed whose JSON exists is skipped (``--force`` reruns it); a crashed pipeline run resumes from its last
finished iteration.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.study_report import (PAGE, STUDY_FORGET_RATE, STUDY_ITERATIONS, default_generator_mode, mode_folder,
                                      write_report)
from fairforget.components.baselines import copy_groups, oversampled_training_set
from fairforget.components.generator.config import PUBLIC_ONLY

ROOT = Path(__file__).resolve().parent.parent

WORK_DIR = ROOT / "results"  # + <dataset>/ (+ -<generator mode> for a generator other than the default)
# the generator a study's pipeline trains: its privacy mode and what differs from that mode's recipe. "public-only"
# is the DP recipe without S (``PUBLIC_ONLY``: one DP step, no DP labeller): what the generator draws from the public
# pre-training alone, the control that shows whether S matters (experiments.bench_dp_generator's variant of that
# name); "dp-public-labels" the DP recipe pre-trained on the public split's labels (the labelled-public variant) and
# "public-only-public-labels" that variant's public-only control
GENERATOR_MODES: dict[str, tuple[str, dict]] = {"none": ("none", {}), "dp": ("dp", {}),
                                                "dp-public-labels": ("dp", {"public_labels": True}),
                                                "public-only": ("dp", PUBLIC_ONLY),
                                                "public-only-public-labels": ("dp", {**PUBLIC_ONLY,
                                                                                     "public_labels": True})}
RESULTS_DIR = ROOT / "docs" / "results"
SHOWN_ATTACKS = ("mloss", "mmean", "moments", "rmia")
SHOWN_METRICS = ("success", "auc", "tpr_at_1pct_fpr")
BASELINES = ("biased", "reweighted", "oversampled", "oversampled_in_shards", "debiased")
# 5 iterations of 20%: every original forgotten by the end (the Fig. 12 axis from 0 to 1) in half the time of 10 x 10%
PIPELINE_FIGURES = ("figures/distribution_before.png", "figures/distribution_after.png",
                    "figures/confusion_biased.png", "figures/confusion_debiased.png",
                    "figures/table_I_iterations.png", "figures/attack_vs_forgotten.png", "figures/roc_all.png")


def study_config(seed: int, seed_dir: Path, iterations: int, forget_rate: float, dataset: str = "fashion_mnist",
                 source_dir: str | None = None, classifier: str | None = None, train_size: int | None = None,
                 attributes: str | None = None, epochs: int | None = None, augment: bool | None = None,
                 generator: str | None = None):
    """The default ``PipelineConfig`` with every seed set to ``seed``, no early stop, state under ``seed_dir``;
    optionally another data set (``dataset``, ``source_dir``, ``train_size``), classifier and debiased
    ``attributes`` (comma-separated, e.g. ``Young`` for CelebA), and the classifiers' training recipe (``epochs``,
    ``augment``: e.g. 30 epochs without augmentation for a regime where the models memorise their members), and the
    ``generator`` mode (``GENERATOR_MODES``)."""
    from fairforget.pipelines.config import PipelineConfig

    base = PipelineConfig()
    replace = dataclasses.replace
    train = replace(base.sisa.train, **({"augment": augment} if augment is not None else {}),
                    **({"epochs": epochs} if epochs else {}))
    return replace(
        base,
        data=replace(base.data, seed=seed, dataset=dataset, source_dir=source_dir or None,
                     **({"train_size": train_size} if train_size else {})),
        balance=replace(base.balance, attributes=tuple(attributes.split(","))) if attributes else base.balance,
        generator=study_generator(generator, seed), augment=replace(base.augment, seed=seed),
        audit=replace(base.audit, seed=seed),
        sisa=replace(base.sisa, seed=seed, executor="serial", train=train,
                     classifier=classifier or base.sisa.classifier),
        loop=replace(base.loop, iterations=iterations, forget_rate=forget_rate, convergence_patience=0),
        gate=replace(base.gate, model_name="fairforget-study"),
        data_dir=str(seed_dir / "data"), outputs_dir=str(seed_dir / "outputs"))


def study_generator(mode: str, seed: int):
    """The generator config of a study seed: ``mode``'s recipe (``GENERATOR_MODES``; None: the pipeline's default),
    seeded, on one thread."""
    from fairforget.components.generator.config import recipe

    privacy, overrides = GENERATOR_MODES[mode or default_generator_mode()]
    return recipe(privacy, **overrides, seed=seed, num_threads=1)


def oracle_success(fpr, tpr) -> float:
    """The best balanced accuracy over every threshold of an evaluation ROC curve: success when the threshold is
    fitted on the data it is measured on (the paper's protocol; an upper bound of the calibrated figure)."""
    import numpy as np

    return float(np.max((np.asarray(tpr) + 1.0 - np.asarray(fpr)) / 2.0))


def audit_baselines(config, dataset, augmented, seed_dir: Path) -> dict:
    """Train and audit the four comparison models (module docstring, step 2); returns name -> results."""
    import numpy as np

    from fairforget.components.canaries import with_canaries
    from fairforget.components.forgetting import evaluate_model, sampled_audit_config
    from fairforget.components.mia.protocol import audit_membership
    from fairforget.components.mia.reference import train_reference_ensembles
    from fairforget.components.sisa.model import SisaModel
    from fairforget.components.training import accuracy, rebalancing_weights
    from fairforget.pipelines.loop import audit_pool, references_dir

    original, test = dataset.split("train"), dataset.split("test")
    debiased_train = augmented.split("train")
    target_counts = np.bincount(debiased_train.labels, minlength=dataset.num_classes)
    instruments = audit_pool(dataset, config)
    non_members = instruments.non_members
    references = train_reference_ensembles(instruments.reference_half, sisa_config=config.sisa,
                                           num_models=config.audit.reference_models,
                                           state_dir=references_dir(config, instruments.reference_half))
    audit_config = sampled_audit_config(config.audit.for_recipe(config.sisa.train), config.loop.iteration_audit_size,
                                        min(len(original), len(non_members)))
    weights = rebalancing_weights(original.labels, target_counts)
    oversampled = oversampled_training_set(original, target_counts)
    setups = {
        "biased": (original, config.sisa),
        "reweighted": (original, dataclasses.replace(config.sisa, train=dataclasses.replace(
            config.sisa.train, class_weights=weights))),
        "oversampled": (oversampled, config.sisa),
        "oversampled_in_shards": (oversampled, config.sisa),
        "debiased": (debiased_train, config.sisa),
    }
    results = {}
    for name, (train_set, sisa_config) in setups.items():
        started = time.perf_counter()
        folder = seed_dir / "baselines" / name
        shutil.rmtree(folder, ignore_errors=True)
        trained_on = with_canaries(train_set, instruments.canaries)
        groups = copy_groups(trained_on.ids) if name == "oversampled_in_shards" else None
        model = SisaModel.create(trained_on, sisa_config, folder, groups=groups)
        model.train()
        ensemble = model.ensemble()
        fairness = evaluate_model(ensemble.predict_proba, test)
        retain = accuracy(ensemble.predict_proba(train_set.images), train_set.labels)
        report = audit_membership(ensemble.predict_proba, original, non_members, config=audit_config,
                                  reference_predicts=references)
        attacks = {}
        for attack, result in report.results["all"].items():
            attacks[attack] = {metric: estimate.value for metric, estimate in result.estimates.items()}
            attacks[attack]["oracle_success"] = oracle_success(result.fpr, result.tpr)
        results[name] = {
            "train_size": len(train_set), "class_counts": np.bincount(train_set.labels,
                                                                      minlength=dataset.num_classes).tolist(),
            "metrics": {**fairness.metrics(), "acc/retain": retain},
            "confusion": np.asarray(fairness.confusion).tolist(), "attacks": attacks,
            "max_success": report.max_success(), "chance_bound": report.chance_bound["all"],
            "member_accuracy": report.member_accuracy, "non_member_accuracy": report.non_member_accuracy,
            "seconds": time.perf_counter() - started}
        if name == "reweighted":
            results[name]["class_weights"] = list(weights)
        shutil.rmtree(folder, ignore_errors=True)
        print(f"baseline {name}: acc/test {fairness.accuracy:.4f}, worst class {fairness.worst_class:.4f}, "
              f"max attack success {report.max_success():.4f}", flush=True)
    return results


def pipeline_results(run_id: str) -> dict:
    """Per-iteration metrics of the parent run, its final metrics, and the generator and validation runs."""
    import mlflow

    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    wanted = [k for k in run.data.metrics if k.startswith(("acc/", "fair/", "data/", "time/", "bias/", "unlearn/",
                                                           "augment/"))]
    wanted += [k for k in run.data.metrics if k.startswith(("mia/canary/", "train/shard_fit"))]
    for subset in ("", "forgotten/", "retained/"):
        wanted += [f"mia/{subset}{a}/{m}" for a in SHOWN_ATTACKS for m in SHOWN_METRICS]
        wanted += [f"mia/{subset}max_success", f"mia/{subset}chance_success_high"]
        wanted += [f"mia/{subset}{m}" for m in ("certified", "auc_high", "tpr_at_1pct_fpr_high", "too_few",
                                                  "n_members")]
    wanted += ["mia/accuracy_gap"]
    wanted += [k for k in run.data.metrics if k.startswith("mia_shard/") and k.endswith(("/max_success",
                                                                                        "/chance_success_high"))]
    iterations: dict[int, dict] = {}
    for key in wanted:
        for point in client.get_metric_history(run_id, key):
            iterations.setdefault(point.step, {})[key] = point.value
    experiment = run.info.experiment_id
    children = {r.data.tags.get("step"): r for r in mlflow.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", output_format="list")}
    generator = mlflow.search_runs([experiment], filter_string="tags.step = 'train_generator'",
                                   output_format="list", max_results=1)[0]
    validate = children.get("validate")
    return {"run_id": run_id, "iterations": [{"iteration": k, **v} for k, v in sorted(iterations.items())],
            "final": {k: v for k, v in run.data.metrics.items() if k.startswith(("final/", "debiased/", "before/"))},
            "generator": {k: v for k, v in generator.data.metrics.items() if k.startswith("generator/")},
            "generator_run_id": generator.info.run_id,
            "validate": dict(validate.data.metrics) if validate else {}}


def copy_figures(run_id: str, generator_run_id: str, destination: Path) -> None:
    import mlflow

    destination.mkdir(parents=True, exist_ok=True)
    figures = [(run_id, p) for p in PIPELINE_FIGURES] + [(generator_run_id, "generator/sample_grid.png")]
    with tempfile.TemporaryDirectory(prefix="study-figures-") as scratch:  # without dst_path mlflow leaves a folder
        for run, path in figures:
            try:
                local = mlflow.artifacts.download_artifacts(run_id=run, artifact_path=path, dst_path=scratch)
            except Exception as error:  # a figure missing from an older run is reported, not fatal
                print(f"figure {path} of run {run} not found: {error}", flush=True)
                continue
            shutil.copy2(local, destination / Path(path).name)


def run_seed(seed: int, iterations: int, forget_rate: float, work_dir: Path = WORK_DIR,
             results_dir: Path = RESULTS_DIR, **data_options) -> Path:
    """Steps 1-3 of the module docstring for one seed, in ``<work_dir>/seed-<seed>``; returns the JSON written to
    ``results_dir``. ``data_options``: ``study_config``'s dataset, source_dir, classifier, train_size, generator."""
    seed_dir = work_dir / f"seed-{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{seed_dir / 'mlflow.db'}"
    os.environ.pop("MLFLOW_RUN_ID", None)
    import torch

    torch.set_num_threads(1)
    config = study_config(seed, seed_dir, iterations, forget_rate, **data_options)
    record = study_one_config(config, seed_dir, results_dir / "figures" / f"seed-{seed}")
    record["seed"] = seed
    results_dir.mkdir(parents=True, exist_ok=True)
    target = results_dir / f"seed-{seed}.json"
    tmp = target.with_suffix(".json.tmp")
    # folders inside the project are kept relative to it, so the committed results name no machine's paths
    text = json.dumps(record, indent=1, default=str).replace(f'"{ROOT.as_posix()}/', '"')
    tmp.write_text(text)
    tmp.replace(target)
    print(f"seed {seed}: wrote {target} (pipeline {record['pipeline_seconds'] / 60:.1f} min)",
          flush=True)
    return target


def study_one_config(config, work_dir: Path, figures_dir: Path | None) -> dict:
    """Run (or, once finished, reuse) the pipeline for ``config``, then the baselines; return the record.

    The finished pipeline run's id is kept in ``work_dir/pipeline_run-<config hash>.json``, so a crash in the
    baselines reruns only them; a crash inside the pipeline resumes it from its last finished iteration."""
    import mlflow

    from fairforget.components.dataset import load_dataset
    from fairforget.pipelines.main import run_pipeline
    from fairforget.pipelines.tracking import configure_tracking

    configure_tracking()
    work_dir.mkdir(parents=True, exist_ok=True)
    marker = work_dir / f"pipeline_run-{config.state_key()}.json"
    if marker.is_file():
        done = json.loads(marker.read_text())
        summary, pipeline_seconds = done["summary"], done["seconds"]
        print(f"pipeline run {summary['run_id']} already finished; reusing it", flush=True)
    else:
        started = time.perf_counter()
        summary = run_pipeline(config, resume=True)
        pipeline_seconds = time.perf_counter() - started
        marker.write_text(json.dumps({"summary": summary, "seconds": pipeline_seconds}, default=str))
    status = mlflow.MlflowClient().get_run(summary["run_id"]).info.status
    if status != "FINISHED":
        raise RuntimeError(f"pipeline run {summary['run_id']} is {status}, not FINISHED: delete {marker} to rerun it")
    results = pipeline_results(summary["run_id"])
    data_dir = Path(config.data_dir)
    state_dir = Path(config.outputs_dir) / config.state_key() / summary["run_id"]
    dataset, augmented = load_dataset(data_dir), load_dataset(state_dir / "augmented")
    started = time.perf_counter()
    baselines = audit_baselines(config, dataset, augmented, work_dir)
    pipeline_debiased = results["iterations"][0]["acc/test"]
    if abs(baselines["debiased"]["metrics"]["acc/test"] - pipeline_debiased) > 1e-9:
        raise RuntimeError(f"the retrained debiased model ({baselines['debiased']['metrics']['acc/test']}) differs "
                           f"from the pipeline's iteration 0 ({pipeline_debiased}): training is not reproducible")
    if figures_dir is not None:
        copy_figures(summary["run_id"], results["generator_run_id"], figures_dir)
    return {"config": dataclasses.asdict(config), "summary": summary, "pipeline_seconds": pipeline_seconds,
            "baseline_seconds": time.perf_counter() - started, "class_names": dataset.class_names,
            "superclass_of": dataset.superclass_of, "machine": machine_description(), "baselines": baselines,
            **results}


def machine_description() -> dict:
    import platform

    import torch

    return {"cpus": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=3, help="seeds run at once, one process each")
    parser.add_argument("--iterations", type=int, default=STUDY_ITERATIONS)
    parser.add_argument("--forget-rate", type=float, default=STUDY_FORGET_RATE)
    parser.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist, cifar10, celeba or folder")
    parser.add_argument("--source-dir", default="", help="the local copy of the data set (not fashion_mnist)")
    parser.add_argument("--classifier", default="", help="small_cnn (default) or resnet18")
    parser.add_argument("--train-size", type=int, default=0, help="size of the private set S (0: the default)")
    parser.add_argument("--attributes", default="", help="debiased attributes (default superclass; CelebA: Young)")
    parser.add_argument("--epochs", type=int, default=0, help="classifier epochs (0: the default recipe's)")
    parser.add_argument("--augmentation", choices=("default", "on", "off"), default="default",
                        help="the classifiers' flip + crop augmentation (default: the recipe's, off)")
    parser.add_argument("--generator", choices=tuple(GENERATOR_MODES), default=default_generator_mode(),
                        help="the generator the pipeline trains: the default recipe's (%(default)s), the non-private "
                             "one, the DP one, or the DP one's public-only control (results of a mode other than "
                             "the default go to docs/results/privacy-<mode>/)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="MLflow stores, data, SISA states (default results/<dataset>[-<generator>])")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="seed-<s>.json and figures (default docs/results/, or docs/results/privacy-<mode>/ "
                             "for another generator); the page is docs/results.md for docs/results/, else "
                             "<results-dir>/results.md")
    parser.add_argument("--force", action="store_true", help="rerun seeds whose results exist")
    parser.add_argument("--one-seed", type=int, default=None, help=argparse.SUPPRESS)  # a worker process
    args = parser.parse_args(argv)
    mode_suffix = "" if args.generator == default_generator_mode() else f"-{args.generator}"
    args.work_dir = args.work_dir or WORK_DIR / f"{args.dataset}{mode_suffix}"
    args.results_dir = args.results_dir or mode_folder(RESULTS_DIR, args.generator)
    options = {"dataset": args.dataset, "source_dir": args.source_dir, "classifier": args.classifier,
               "train_size": args.train_size, "attributes": args.attributes, "epochs": args.epochs,
               "augment": {"default": None, "on": True, "off": False}[args.augmentation],
               "generator": args.generator}
    if args.one_seed is not None:
        from fairforget.pipelines.tracking import start_process

        start_process()  # the seed's log gets timed progress lines (an hour of generator training is not silent)
        run_seed(args.one_seed, args.iterations, args.forget_rate, args.work_dir.resolve(),
                 args.results_dir.resolve(), **options)
        return 0
    if args.dataset != "fashion_mnist" and not args.source_dir:
        parser.error(f"--dataset {args.dataset} needs --source-dir (nothing is downloaded)")
    results_dir = args.results_dir.resolve()
    pending = [s for s in args.seeds if args.force or not (results_dir / f"seed-{s}.json").is_file()]
    skipped = sorted(set(args.seeds) - set(pending))
    if skipped:
        print(f"seeds {skipped} already have results (use --force to rerun them)")
    started = time.perf_counter()
    running: list[tuple[int, subprocess.Popen]] = []
    failed = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    forwarded = ["--iterations", str(args.iterations), "--forget-rate", str(args.forget_rate), "--dataset",
                 args.dataset, "--source-dir", args.source_dir, "--classifier", args.classifier, "--train-size",
                 str(args.train_size), "--attributes", args.attributes, "--work-dir", str(args.work_dir.resolve()),
                 "--results-dir", str(results_dir), "--epochs", str(args.epochs),
                 "--augmentation", args.augmentation, "--generator", args.generator]
    while pending or running:
        while pending and len(running) < args.parallel:
            seed = pending.pop(0)
            log_path = args.work_dir.resolve() / f"seed-{seed}-{results_dir.name}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "-m", "experiments.study", "--one-seed", str(seed), *forwarded]
            print(f"seed {seed}: started, log in {log_path}", flush=True)
            running.append((seed, subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_path.open("w"),
                                                   stderr=subprocess.STDOUT)))
        time.sleep(5)
        for seed, process in list(running):
            if process.poll() is not None:
                running.remove((seed, process))
                status = "done" if process.returncode == 0 else f"FAILED (exit {process.returncode}; see the log)"
                print(f"seed {seed}: {status} after {(time.perf_counter() - started) / 60:.1f} min", flush=True)
                if process.returncode:
                    failed.append(seed)
    if failed:
        print(f"seeds {failed} failed; rerun the same command to resume them")
        return 1

    page = PAGE if results_dir == RESULTS_DIR.resolve() else results_dir / "results.md"
    print(f"wrote {write_report(results_dir, page)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
