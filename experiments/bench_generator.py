"""Benchmark the default generator on the default data: training time, sampling speed, quality, memorization.

Prints each figure with its budget, and the ratio against a baseline measured in the same run: the pixel-space
diffusers ``UNet2DModel`` of the issue (28 px, channels (32, 64, 128), one layer per block, 2.5M parameters),
timed for a few training steps (batch 128) and for guided DDIM sampling of a few images.

    python experiments/bench_generator.py --data-dir data [--generator-dir DIR] [--output bench.json]
    python -m experiments.bench_generator --set latent_dim=32 --set autoencoder_perceptual_weight=0 \
        --compare-dir DIR --audit  # a config variant, judged next to a saved generator by the same judge, and
                                   # both audited for membership (generator/mia/*)

The CPU is shared: the load average is printed with the numbers, since another job on the two cores slows
everything down (two spin-waiting OpenMP threads collapse worst; ``--threads 1`` avoids that).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from diffusers import DDIMScheduler  # noqa: E402

from fairforget.components.dataset import load_dataset  # noqa: E402
from fairforget.components.generator import GeneratorConfig, load_generator, train_generator  # noqa: E402
from fairforget.components.generator.audit import audit_generator_on_splits  # noqa: E402
from fairforget.components.generator.denoiser import ConditionSpace, PixelUNetDenoiser  # noqa: E402
from fairforget.components.generator.model import make_scheduler  # noqa: E402
from fairforget.components.generator.sample import ddim_sample  # noqa: E402
from fairforget.components.quality import QualityConfig, evaluate_generator, train_reference_classifier  # noqa: E402
from fairforget.pipelines.cli import channels_arg  # noqa: E402

TRAIN_BUDGET_S = 720.0  # 12 minutes on the 2-core machine
SAMPLING_BUDGET_IPS = 100.0


def pixel_unet_baseline(dataset, steps: int, guidance: float) -> dict:
    """Seconds per training step (batch 128) and images per second (guided DDIM) of the issue's pixel UNet."""
    config = GeneratorConfig(architecture="pixel_unet", unet_channels=(32, 64, 128), unet_layers_per_block=1,
                             unet_norm_groups=8, unet_attention=False, device="cpu")
    space = ConditionSpace.from_dataset(dataset.class_names, dataset.manifest, [])
    shape = tuple(dataset.images.shape[1:])
    model = PixelUNetDenoiser(shape, config.unet_channels, 1, 8, False, space.cardinalities)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(128, shape[2], shape[0], shape[1])
    codes = torch.zeros(128, 1, dtype=torch.long)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        loss = ((model(x, torch.randint(0, 1000, (128,)), codes) - x) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - started)
    model.eval()
    scheduler = DDIMScheduler.from_config(make_scheduler(config).config)
    n = 8
    started = time.perf_counter()
    ddim_sample(model, scheduler, torch.randn(n, shape[2], shape[0], shape[1]), torch.zeros(n, 1, dtype=torch.long),
                torch.full((n, 1), space.cardinalities[0]), guidance, steps)
    return {"seconds_per_step": float(np.median(timings[1:])), "images_per_second": n / (time.perf_counter() - started),
            "parameters": int(sum(p.numel() for p in model.parameters()))}


def config_with_overrides(assignments: list[str], base: GeneratorConfig | None = None) -> GeneratorConfig:
    """``base`` (default ``GeneratorConfig()``) with ``FIELD=VALUE`` overrides, each value parsed as the field's
    type (a tuple as its items joined by ``-``: ``autoencoder_channels=64-128``)."""
    from dataclasses import fields, replace

    defaults = base if base is not None else GeneratorConfig()
    known = {f.name for f in fields(GeneratorConfig)}
    changes = {}
    for assignment in assignments:
        name, _, value = assignment.partition("=")
        if name not in known:
            raise SystemExit(f"error: --set {assignment}: unknown GeneratorConfig field {name!r}")
        default = getattr(defaults, name)
        if isinstance(default, tuple):  # channel tuples, e.g. autoencoder_channels=64-128, parsed as the CLI does
            try:
                changes[name] = channels_arg(value)
            except argparse.ArgumentTypeError as error:
                raise SystemExit(f"error: --set {assignment}: {error}") from None
        elif isinstance(default, bool):  # bool("False") is True
            if value.lower() not in ("true", "false"):
                raise SystemExit(f"error: --set {assignment}: {name} takes true or false")
            changes[name] = value.lower() == "true"
        else:
            changes[name] = type(default)(value) if default is not None else value
    config = replace(defaults, **changes)
    config.validate()
    return config


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--generator-dir", default="", help="load this saved generator instead of training one")
    parser.add_argument("--save-dir", default="", help="save the trained generator here")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--sample-images", type=int, default=2000)
    parser.add_argument("--output", default="")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a GeneratorConfig field of the trained generator (repeatable)")
    parser.add_argument("--compare-dir", default="", help="a saved generator judged by the same judge in the same run")
    parser.add_argument("--audit", action="store_true",
                        help="also run the generator membership audit (audit_generator_on_splits) on each generator")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data_dir)
    load_before = os.getloadavg()
    results: dict = {"threads": torch.get_num_threads(), "load_average_before": load_before[0]}

    if args.generator_dir:
        generator = load_generator(args.generator_dir, device="cpu")
        results["train_seconds"] = generator.training_summary.get("train_seconds")
        results["train_seconds_note"] = "from the saved generator's training summary"
    else:
        started = time.perf_counter()
        generator = train_generator(dataset, config=config_with_overrides(args.set), data_md5="benchmark")
        results["train_seconds"] = time.perf_counter() - started
        if args.save_dir:
            generator.save(args.save_dir)
    config = generator.config
    results["architecture"] = config.architecture
    results["denoiser_parameters"] = int(sum(p.numel() for p in generator.denoiser.parameters()))

    table = pd.DataFrame({"class_name": np.resize(np.array(dataset.class_names), args.sample_images)})
    generator.sample(table[:50], seed=0)  # warm-up
    started = time.perf_counter()
    generator.sample(table, seed=1)
    results["images_per_second"] = args.sample_images / (time.perf_counter() - started)
    results["sampling"] = {"steps": config.sampling_steps, "guidance_scale": config.guidance_scale}

    baseline = pixel_unet_baseline(dataset, config.sampling_steps, config.guidance_scale)
    results["baseline_pixel_unet"] = baseline
    results["speedup_sampling_vs_pixel_unet"] = results["images_per_second"] / baseline["images_per_second"]
    # the pixel UNet, given the same number of training images seen, would need:
    results["baseline_train_seconds_same_images"] = baseline["seconds_per_step"] / 128 * config.train_steps * config.batch_size
    results["speedup_training_vs_pixel_unet"] = results["baseline_train_seconds_same_images"] / results["train_seconds"]

    started = time.perf_counter()
    judge = train_reference_classifier(dataset, QualityConfig())
    report = evaluate_generator(generator, dataset, QualityConfig(), reference_classifier=judge)
    results["evaluation_seconds"] = time.perf_counter() - started
    if args.compare_dir:
        other = load_generator(args.compare_dir, device="cpu")
        compared = evaluate_generator(other, dataset, QualityConfig(), reference_classifier=judge)
        results["compared"] = {"generator_dir": args.compare_dir, "quality": compared.metrics,
                               "per_class_conditional_accuracy": compared.per_class_accuracy,
                               "train_seconds": other.training_summary.get("train_seconds")}
    results["quality"] = report.metrics
    results["per_class_conditional_accuracy"] = report.per_class_accuracy
    if args.audit:
        results["membership"] = audit_generator_on_splits(generator, dataset).metrics()
        if args.compare_dir:
            results["compared"]["membership"] = audit_generator_on_splits(other, dataset).metrics()
    results["load_average_after"] = os.getloadavg()[0]

    q = report.metrics
    print(f"generator: {config.architecture}, {results['denoiser_parameters']:,} denoiser parameters, "
          f"{results['threads']} torch threads, load average {load_before[0]:.1f} -> {results['load_average_after']:.1f}")
    print(f"training time        {results['train_seconds']:8.1f} s   (budget <= {TRAIN_BUDGET_S:.0f} s; pixel UNet for "
          f"the same images seen: {results['baseline_train_seconds_same_images']:.0f} s, "
          f"ratio {results['speedup_training_vs_pixel_unet']:.1f}x)")
    print(f"sampling             {results['images_per_second']:8.1f} img/s (budget >= {SAMPLING_BUDGET_IPS:.0f}; "
          f"{config.sampling_steps} DDIM steps, guidance {config.guidance_scale}; pixel UNet "
          f"{baseline['images_per_second']:.2f} img/s, ratio {results['speedup_sampling_vs_pixel_unet']:.0f}x)")
    print(f"conditional accuracy {q['conditional_accuracy']:8.3f}   (target >= 0.90; reference classifier's own "
          f"test accuracy {q['reference_classifier_test_accuracy']:.3f})")
    print(f"CAS                  {q['cas']:8.3f}   real baseline {q['cas_real_baseline']:.3f}, ratio "
          f"{q['cas_ratio']:.3f} (target >= 0.8)")
    print(f"FID (ref. features)  {q['fid']:8.3f}   real-vs-real {q['fid_real_vs_real']:.3f}; KID {q['kid']:.4f} "
          f"+- {q['kid_std']:.4f}")
    print(f"near-copy fraction   {q['near_copy_fraction']:8.4f}   (target < 0.01; real test images: "
          f"{q['near_copy_fraction_real_test']:.4f}); median NN distance {q['nn_distance_median']:.2f} vs real "
          f"{q['nn_distance_median_real_test']:.2f}")
    q["diversity_ratio"] = q.get("diversity_ratio", float("nan"))
    print(f"diversity ratio      {q['diversity_ratio']:8.3f}   (target >= 0.8; worst class {q['diversity_ratio_min']:.3f})")
    print("per class            " + ", ".join(f"{c} {v:.2f}" for c, v in report.per_class_accuracy.items()))
    if args.compare_dir:
        c = results["compared"]["quality"]
        print(f"compared with {args.compare_dir} (same judge): " + ", ".join(
            f"{key} {q[key]:.3f} vs {c[key]:.3f}" for key in ("conditional_accuracy", "cas_ratio", "fid",
                                                              "diversity_ratio", "near_copy_fraction")))
    if args.audit:
        for label, record in (("this generator", results), ("compared", results.get("compared"))):
            if record and "membership" in record:
                m = record["membership"]
                print(f"membership audit ({label}): AUC {m['generator/mia/auc']:.3f} (chance bound "
                      f"{m['generator/mia/auc_chance_bound']:.3f}), TPR at 1% FPR {m['generator/mia/tpr_at_1pct_fpr']:.3f}")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2, default=float) + "\n")
    return results


if __name__ == "__main__":
    main()
