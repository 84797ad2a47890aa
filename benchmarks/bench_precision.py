"""Generator training in bfloat16 against float32: seconds per autoencoder epoch and per denoiser step.

The default generator's recipe, shortened to ``--autoencoder-epochs`` epochs and ``--steps`` denoiser steps, is
trained once per precision on the default data (the same seed, the same threads, one after the other in this
process); the figure is the time of each phase and the ratio of float32's time to bfloat16's (> 1: bf16 faster),
with the losses both reach, so that a speed-up bought with a broken loss shows. Quality at full length is
``bench_generator --set precision=bf16`` (docs/generator.md, "Training in bfloat16").

    python -m benchmarks.bench_precision [--threads 1] [--autoencoder-epochs 2] [--steps 300] [--output F.json]

bf16 pays only where the CPU computes it natively (AVX512-BF16 or AMX; ``native_bf16`` says whether this one
does, and is printed); elsewhere it is emulated and slower than float32.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from fairforget.components.dataset import load_dataset
from fairforget.components.generator import GeneratorConfig, train_generator
from fairforget.components.generator.config import native_bf16

PRECISIONS = ("fp32", "bf16")


def time_training(dataset, precision: str, autoencoder_epochs: int, steps: int, threads: int) -> dict:
    """Train the shortened default recipe at ``precision``; its phase times (s) and final losses."""
    config = GeneratorConfig(precision=precision, autoencoder_epochs=autoencoder_epochs, train_steps=steps,
                             warmup_steps=min(GeneratorConfig.warmup_steps, steps // 4), num_threads=threads,
                             device="cpu")
    started = time.perf_counter()
    generator = train_generator(dataset, config=config, progress=False)
    wall = time.perf_counter() - started
    summary = generator.training_summary
    autoencoder = summary["autoencoder_seconds"] - summary.get("perceptual_network_seconds", 0.0)
    denoiser = summary["train_seconds"] - summary["autoencoder_seconds"]
    return {"precision": generator.config.precision, "wall_seconds": wall,
            "autoencoder_seconds_per_epoch": autoencoder / autoencoder_epochs,
            "denoiser_seconds_per_step": denoiser / steps,
            "autoencoder_loss": summary["autoencoder_loss"], "autoencoder_rmse": summary["autoencoder_rmse"],
            "denoiser_loss": summary["denoiser_loss"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default: every core)")
    parser.add_argument("--autoencoder-epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300, help="denoiser steps")
    parser.add_argument("--output", default="")
    args = parser.parse_args(argv)
    dataset = load_dataset(args.data_dir)
    results: dict = {"native_bf16": native_bf16("cpu"), "threads": args.threads or torch.get_num_threads(),
                     "load_average_before": os.getloadavg()[0]}
    for precision in PRECISIONS:
        results[precision] = time_training(dataset, precision, args.autoencoder_epochs, args.steps, args.threads)
    results["load_average_after"] = os.getloadavg()[0]
    fp32, bf16 = results["fp32"], results["bf16"]
    print(f"bf16 native on this CPU: {results['native_bf16']}; {results['threads']} threads, load average "
          f"{results['load_average_before']:.1f} -> {results['load_average_after']:.1f}")
    print(f"{'':28s}{'fp32':>10s}{'bf16':>10s}{'fp32 / bf16':>13s}")
    for key in ("autoencoder_seconds_per_epoch", "denoiser_seconds_per_step", "wall_seconds"):
        print(f"{key:28s}{fp32[key]:10.3f}{bf16[key]:10.3f}{fp32[key] / bf16[key]:12.2f}x")
    for key in ("autoencoder_rmse", "denoiser_loss"):
        print(f"{key:28s}{fp32[key]:10.4f}{bf16[key]:10.4f}")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
