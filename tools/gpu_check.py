"""The GPU path in one short run: train the pixel-space generator on the default data and print its quality table.

On a machine with one CUDA GPU and the project installed (``make install``; nothing is installed here), with the
prepared default data in ``data/`` (``make run`` or ``mlflow run . -e prepare`` makes it; copy it along to a machine
without the Debian Fashion-MNIST package):

    bash tools/gpu_check.sh                 # = python -m tools.gpu_check --data-dir data

trains ``GeneratorConfig(architecture="pixel_unet")`` (a diffusers ``UNet2DModel`` on the pixels) on S, judges it
exactly as every generator is judged (``components/quality.py``: conditional accuracy per class, CAS ratio, FID,
diversity, near-copies) and prints one table with the training time, the sampling speed and the targets, plus the
same figures of the CPU design (the latent generator, ``--baseline-dir`` = a saved one, or ``--train-baseline``) in
the same run. Writes the table as JSON (``--output``). Refuses to run without CUDA unless ``--allow-cpu`` (then
``--train-steps`` small is a smoke test of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TARGETS = {"conditional_accuracy": (">=", 0.95), "conditional_accuracy_min": (">=", 0.80),
           "cas_ratio": (">=", 0.95), "fid": ("<=", 5.0), "diversity_ratio": (">=", 0.8),
           "near_copy_fraction": ("<", 0.01)}
ROWS = ("conditional_accuracy", "conditional_accuracy_min", "cas_ratio", "fid", "fid_real_vs_real",
        "diversity_ratio", "near_copy_fraction", "train_seconds", "images_per_second")


def measure(generator_factory, dataset, quality_config, sample_images: int = 1000) -> dict:
    """Train (``generator_factory()`` -> Generator), time guided sampling and judge; a flat dict of ``ROWS``."""
    import numpy as np
    import pandas as pd
    import torch

    from fairforget.components.quality import evaluate_generator

    started = time.perf_counter()
    generator = generator_factory()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    train_seconds = generator.training_summary.get("train_seconds", time.perf_counter() - started)
    table = pd.DataFrame({"class_name": np.resize(np.array(dataset.class_names), sample_images)})
    generator.sample(table[:16], seed=0)  # warm-up
    started = time.perf_counter()
    generator.sample(table, seed=1)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    images_per_second = sample_images / (time.perf_counter() - started)
    report = evaluate_generator(generator, dataset, quality_config)
    row = {key: float(value) for key, value in report.metrics.items()}
    row["conditional_accuracy_min"] = float(min(report.per_class_accuracy.values()))
    row["train_seconds"] = float(train_seconds)
    row["images_per_second"] = float(images_per_second)
    row["architecture"] = generator.config.architecture
    row["device"] = generator.config.device
    row["per_class_conditional_accuracy"] = report.per_class_accuracy
    return row


def format_table(rows: dict[str, dict], keys: tuple[str, ...] = ROWS) -> str:
    """One line per figure (``keys``), one column per generator, and the target."""
    names = list(rows)
    widths = {name: max(16, len(name) + 2) for name in names}  # a long column name keeps a space before it
    lines = [f"{'figure':<26}" + "".join(f"{name:>{widths[name]}}" for name in names) + "   target"]
    for key in keys:
        cells = "".join(f"{rows[name].get(key, float('nan')):>{widths[name]}.3f}" for name in names)
        target = TARGETS.get(key)
        lines.append(f"{key:<26}{cells}   " + (f"{target[0]} {target[1]}" if target else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--train-steps", type=int, default=0, help="override the generator's train_steps (0: keep)")
    parser.add_argument("--baseline-dir", default="", help="a saved CPU generator to judge in the same run")
    parser.add_argument("--train-baseline", action="store_true", help="train the CPU generator too (slow)")
    parser.add_argument("--allow-cpu", action="store_true", help="run without CUDA (a smoke test of this script)")
    parser.add_argument("--output", default="", help="write the table as JSON here")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("error: no CUDA device: this check measures the GPU path; run it on a machine with a GPU "
              "(or pass --allow-cpu for a smoke test)", file=sys.stderr)
        return 2
    from dataclasses import replace

    from fairforget.components.generator import GeneratorConfig, load_generator, train_generator
    from fairforget.components.quality import QualityConfig
    from fairforget.pipelines.data_steps import load_current_data

    dataset = load_current_data(args.data_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pixel = GeneratorConfig(architecture="pixel_unet", device=device, num_threads=0)
    if args.train_steps:
        pixel = replace(pixel, train_steps=args.train_steps, warmup_steps=min(pixel.warmup_steps, args.train_steps))
    print(f"gpu_check: {torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU (smoke test)'}; "
          f"pixel UNet channels {pixel.unet_channels}, {pixel.train_steps} steps of batch {pixel.batch_size}",
          flush=True)
    rows = {"pixel_unet": measure(lambda: train_generator(dataset, config=pixel, progress=False), dataset,
                                  QualityConfig())}
    if args.baseline_dir:
        rows["latent (saved)"] = measure(lambda: load_generator(args.baseline_dir, device=device), dataset,
                                         QualityConfig())
    elif args.train_baseline:
        latent = GeneratorConfig(architecture="latent_mlp", device=device)
        rows["latent_mlp"] = measure(lambda: train_generator(dataset, config=latent, progress=False), dataset,
                                     QualityConfig())
    print(format_table(rows))
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
