"""Benchmark: the training loops with glibc's allocator kept from trimming (components/allocator.py) against its
defaults, in the same run.

    python -m benchmarks.bench_allocator [--repeats 3] [--threads 1]

Two workloads of the pipeline, each in a fresh process (glibc reads its tunables when a process starts), the two
settings alternating so that a slower minute of the machine hits both:

- ``shard``: a SISA shard's training, ``small_cnn`` (``TrainConfig`` defaults but 2 epochs) on 2000 images of
  28x28x1;
- ``autoencoder``: the DP recipe's autoencoder (channels 32, 64, latent 32, feature matching through a rotation
  network) for 2 epochs on 3000 images.

The images are random (the time of a step does not depend on what the pixels hold). Prints, per workload and
setting, the median wall time, user and system CPU seconds and minor page faults over the repeats, and the ratio
of the medians (kept / defaults). ``--threads``: torch threads per process (1: as a SISA worker; 2: as the
generator step on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from fairforget.components.allocator import tunables_for_children, without_tunables

WORKLOAD = """
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[2]))
rng = np.random.default_rng(0)
def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime, r.ru_stime, r.ru_minflt
if sys.argv[1] == "shard":
    from fairforget.components.models import build_classifier
    from fairforget.components.training import TrainConfig, fit_classifier
    images, labels = rng.integers(0, 256, (2000, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, 2000)
    start = usage()
    fit_classifier(build_classifier("small_cnn", 10, 1, 28, seed=0), images, labels, TrainConfig(epochs=2), seed=0)
else:
    from fairforget.components.generator.autoencoder import (ConvAutoencoder, fit_autoencoder,
                                                             fit_perceptual_network)
    images = rng.integers(0, 256, (3000, 28, 28, 1), dtype=np.uint8)
    start = usage()
    perceptual = fit_perceptual_network(images, None, 10, 1, seed=0)
    floats = (images.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
    fit_autoencoder(ConvAutoencoder((28, 28, 1), 32, (32, 64)), floats, 2, 128, 2e-3, 0, progress=False,
                    perceptual=perceptual, perceptual_weight=1.0)
end = usage()
print(json.dumps(dict(zip(("wall_s", "user_s", "system_s", "minor_faults"), [b - a for a, b in zip(start, end)]))))
"""


def measure(workload: str, threads: int, kept: bool) -> dict:
    """One fresh process running ``workload``; its wall time, CPU seconds and minor page faults."""
    env = without_tunables()
    if kept:
        env["GLIBC_TUNABLES"] = tunables_for_children(env)
    out = subprocess.run([sys.executable, "-c", WORKLOAD, workload, str(threads)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workloads", nargs="+", default=["shard", "autoencoder"], choices=["shard", "autoencoder"])
    args = parser.parse_args(argv)
    print(f"{'workload':<12} {'setting':<9} {'wall s':>7} {'user s':>7} {'system s':>9} {'minor faults':>13}")
    for workload in args.workloads:
        runs = {"defaults": [], "kept": []}
        for _ in range(args.repeats):
            for setting in runs:
                runs[setting].append(measure(workload, args.threads, setting == "kept"))
        medians = {setting: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
                   for setting, rows in runs.items()}
        for setting, m in medians.items():
            print(f"{workload:<12} {setting:<9} {m['wall_s']:7.2f} {m['user_s']:7.2f} {m['system_s']:9.2f} "
                  f"{m['minor_faults']:13.0f}")
        print(f"{workload:<12} ratio kept/defaults: wall {medians['kept']['wall_s'] / medians['defaults']['wall_s']:.2f}, "
              f"system {medians['kept']['system_s'] / max(medians['defaults']['system_s'], 1e-9):.2f}, "
              f"faults {medians['kept']['minor_faults'] / max(medians['defaults']['minor_faults'], 1):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
