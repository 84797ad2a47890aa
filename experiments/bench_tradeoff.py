"""Generator training time against what its images are worth: the trade-off curve of the CPU budget.

    python -m experiments.bench_generator --set train_steps=2000 --set autoencoder_epochs=15 --threads 1 \
        --save-dir GEN_HALF           # one point of the curve (likewise the default, and a doubled budget)
    python -m experiments.bench_tradeoff --generator-dirs GEN_HALF GEN_DEFAULT GEN_DOUBLE [--output F.json]

For each saved generator, in one run: its training minutes (from its own training summary), its quality judged by
one judge (``evaluate_generator`` at its own guidance scale), and the utility figures of ``bench_replacement``:
the pipeline's SISA ensemble trained on S* (``augmented``: S plus its synthetic images, the loop's iteration 0)
and on its synthetic images alone (``synthetic``: every original replaced, the loop's end), against the same
ensemble on oversampled real images and on S filled with public real images (no generator; each trained once).
The columns that answer the paper's claims:
S* minus oversampled on the minority superclass and on the worst class, and synthetic minus S* on test accuracy
(the drop once every original is gone; the study measures the same through the loop itself).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from experiments.bench_replacement import train_and_test, training_sets

QUALITY = ("conditional_accuracy", "cas_ratio", "fid", "diversity_ratio", "near_copy_fraction")
COLUMNS = ("minutes", "conditional_accuracy", "worst_class_conditional", "cas_ratio", "fid", "diversity_ratio",
           "s_star_minus_oversampled_minority", "s_star_minus_oversampled_worst_class", "s_star_test",
           "synthetic_test", "synthetic_minus_s_star_test")


def curve_point(quality: dict, per_class: dict, train_seconds: float, augmented: dict, synthetic: dict,
                oversampled: dict) -> dict:
    """One row of the curve (``COLUMNS``) from the generator's quality metrics, its per-class conditional accuracy,
    its training seconds and the ``train_and_test`` rows of its S*, its synthetic-only set and the oversampled set."""
    return {"minutes": train_seconds / 60.0,
            **{key: quality[key] for key in QUALITY if key in quality},
            "worst_class_conditional": min(per_class.values()),
            "s_star_minus_oversampled_minority": augmented["acc/minority"] - oversampled["acc/minority"],
            "s_star_minus_oversampled_worst_class": augmented["acc/worst_class"] - oversampled["acc/worst_class"],
            "s_star_test": augmented["acc/test"], "synthetic_test": synthetic["acc/test"],
            "synthetic_minus_s_star_test": synthetic["acc/test"] - augmented["acc/test"]}


def format_curve(points: dict) -> str:
    """A markdown table, one row per generator, in the order given."""
    lines = ["| generator | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name, point in points.items():
        lines.append(f"| {name} | " + " | ".join(f"{point[key]:.3f}" if key in point else "-" for key in COLUMNS)
                     + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--generator-dirs", nargs="+", required=True, help="saved generators, cheapest first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="", help="write the curve here as JSON")
    args = parser.parse_args(argv)

    from fairforget.components.dataset import load_dataset
    from fairforget.components.generator import load_generator
    from fairforget.components.quality import QualityConfig, evaluate_generator, train_reference_classifier
    from fairforget.components.sisa.model import SisaConfig

    dataset = load_dataset(args.data_dir)
    test = dataset.split("test")
    minority = dataset.split("train").manifest["superclass"].value_counts().idxmin()
    sisa_config = dataclasses.replace(SisaConfig(), seed=args.seed)
    judge = train_reference_classifier(dataset, QualityConfig())
    points, rows, baselines = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-tradeoff-") as work:
        for folder in args.generator_dirs:
            generator = load_generator(folder, device="cpu")
            report = evaluate_generator(generator, dataset, QualityConfig(), reference_classifier=judge)
            scale = generator.config.guidance_scale
            sets = training_sets(dataset, generator, [scale], [1.0], seed=args.seed)
            for name in ("oversampled", "public-filled"):
                if name not in baselines and name in sets:
                    baselines[name] = train_and_test(sets[name], test, sisa_config, Path(work) / "m", minority)
            augmented = train_and_test(sets[f"augmented g{scale:g}"], test, sisa_config, Path(work) / "m", minority)
            synthetic = train_and_test(sets[f"synthetic g{scale:g} x1"], test, sisa_config, Path(work) / "m",
                                       minority)
            seconds = float(generator.training_summary.get("train_seconds", float("nan")))
            points[folder] = curve_point(report.metrics, report.per_class_accuracy, seconds, augmented, synthetic,
                                         baselines["oversampled"])
            rows[folder] = {"quality": report.metrics, "per_class_conditional_accuracy": report.per_class_accuracy,
                            "augmented": augmented, "synthetic": synthetic, "config": dataclasses.asdict(generator.config)}
            print(f"{folder}: " + ", ".join(f"{key} {value:.3f}" for key, value in points[folder].items()), flush=True)
    for name, row in baselines.items():
        print(f"{name} (real images, no generator): acc/test {row['acc/test']:.4f}, minority "
              f"{row['acc/minority']:.4f}, worst class {row['acc/worst_class']:.4f}")
    print(format_curve(points))
    if args.output:
        target = Path(args.output)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps({"seed": args.seed, "baselines": baselines, "points": points, "rows": rows},
                                  indent=1, default=float))
        tmp.replace(target)
    return points


if __name__ == "__main__":
    main()
