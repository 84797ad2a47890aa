"""Guidance scale against quality on one saved generator: the lever that costs no training.

Classifier-free guidance trades diversity for fidelity (Ho & Salimans 2022). For each scale the saved generator is
judged exactly as the pipeline judges it (``evaluate_generator``), by one judge trained once, so the columns are
comparable; the generator's own scale (its config's ``guidance_scale``) is the baseline of the same run, and every
figure is also printed as a ratio to it.

    python -m experiments.bench_guidance --generator-dir DIR --scales 1 2 3 4 5 [--output sweep.json]
    python -m experiments.bench_guidance --generator-dir DIR --scales 3 --per-class 2:Shirt=5,Pullover=4
    python -m experiments.bench_guidance --generator-dir DIR --scales 3 3.5 --intervals 0,inf 0,5.9 0,4.5
    python -m experiments.bench_guidance --generator-dir DIR --scales 1.5 2 3 --public-evaluation

DIR: a saved generator, e.g. the ``generator`` artifact of a ``train_generator`` run. ``--per-class
BASE:CLASS=SCALE,...`` adds a column of per-class guidance: BASE for every class not named. ``--intervals LO,HI
...`` judges every scale once per guidance interval (the noise levels of the guided sampling steps,
``GeneratorConfig.guidance_interval``; ``0,inf``: every step); the baseline is the generator's own scale and
interval. ``--public-evaluation`` scores every figure on public images only (``public_evaluation``), so a scale
chosen from it is chosen on public data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tools.gpu_check import ROWS, format_table
from fairforget.pipelines.cli import interval_arg

SWEPT = tuple(key for key in ROWS if key not in ("train_seconds", "images_per_second"))


def parse_per_class(text: str, class_names) -> dict[str, float]:
    """``"2:Shirt=5,Pullover=4"`` -> {class: scale} for every class of ``class_names`` (2 where not named).
    Raises ``ValueError`` naming the known classes for an unknown one."""
    base, _, named = text.partition(":")
    scales = dict.fromkeys(class_names, float(base))
    for item in filter(None, named.split(",")):
        name, _, value = item.rpartition("=")
        if name not in scales:
            raise ValueError(f"--per-class names unknown class {name!r}; the classes: {', '.join(class_names)}")
        scales[name] = float(value)
    return scales


def public_evaluation(dataset, seed: int = 0):
    """``dataset`` for judging a generator on public images only: its ``reference`` split cut into two random halves
    (``seed``), the first kept as ``reference`` (the judge learns from it) and the second made the ``test`` split
    (conditional accuracy's judge aside, CAS, FID, KID and diversity are scored there); its own test and audit rows
    are left out. ``train`` (S) stays: the drawn conditions' class mix and the CAS ratio's real-image baseline come
    from it, while the figures a choice reads (conditional accuracy, CAS, FID) see no private or test image."""
    import numpy as np

    split = dataset.manifest["split"].to_numpy().copy()
    keep = ~np.isin(split, ["test", "audit"])
    reference = np.flatnonzero(split == "reference")
    split[np.random.default_rng(seed).permutation(reference)[: len(reference) // 2]] = "test"
    view = dataset.select(keep)
    view.manifest["split"] = split[keep]
    return view


def sweep(generator, dataset, scales, quality_config=None, judge=None) -> dict:
    """scale -> {figure: value for figure in SWEPT, "per_class_conditional_accuracy": {class: accuracy}}; one judge
    (trained here unless given) for every scale. A scale is a float or a mapping class -> scale (then keyed by its
    ``label(mapping)``)."""
    import dataclasses

    from fairforget.components.quality import QualityConfig, evaluate_generator, train_reference_classifier

    quality_config = quality_config or QualityConfig()
    judge = judge or train_reference_classifier(dataset, quality_config)
    rows = {}
    for scale in scales:
        report = evaluate_generator(generator, dataset, dataclasses.replace(quality_config, guidance_scale=scale),
                                    reference_classifier=judge)
        row = {key: report.metrics[key] for key in SWEPT if key in report.metrics}
        row["conditional_accuracy_min"] = min(report.per_class_accuracy.values())
        row["per_class_conditional_accuracy"] = report.per_class_accuracy
        rows[label(scale)] = row
    return rows


def sweep_intervals(generator, dataset, scales, intervals, quality_config=None, judge=None) -> dict:
    """``sweep`` once per guidance interval, one judge for all: {column: row}, a column keyed as in ``sweep`` for
    the generator's own interval and ``"<key> in (lo,hi]"`` for another."""
    import copy
    from dataclasses import replace

    from fairforget.components.quality import QualityConfig, train_reference_classifier

    quality_config = quality_config or QualityConfig()
    judge = judge or train_reference_classifier(dataset, quality_config)
    own = tuple(generator.config.guidance_interval)
    rows = {}
    for interval in intervals:
        variant = copy.copy(generator)
        variant.config = replace(generator.config, guidance_interval=tuple(interval))
        for key, row in sweep(variant, dataset, scales, quality_config, judge).items():
            rows[key if tuple(interval) == own else f"{name(key).strip()} in ({interval[0]:g},{interval[1]:g}]"] = row
    return rows


def label(scale) -> float | str:
    """A column's key: the float itself, or ``"per-class BASE:CLASS=SCALE,..."`` (the most common scale as BASE)."""
    if not isinstance(scale, dict):
        return float(scale)
    values = list(scale.values())
    base = max(set(values), key=values.count)
    return "per-class " + f"{base:g}:" + ",".join(f"{c}={w:g}" for c, w in scale.items() if w != base)


def name(scale) -> str:
    return f"guidance {scale:<4g}" if isinstance(scale, float) else scale


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--generator-dir", required=True, help="a saved generator")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 5.0])
    parser.add_argument("--per-class", nargs="*", default=[], metavar="BASE:CLASS=SCALE,...",
                        help="per-class guidance columns, e.g. 2:Shirt=5,Pullover=4")
    parser.add_argument("--intervals", type=interval_arg, nargs="+", default=None, metavar="LO,HI",
                        help="guidance intervals to cross with the scales (default: the generator's own)")
    parser.add_argument("--public-evaluation", action="store_true",
                        help="judge on the public reference split alone (half trains the judge, half is scored)")
    parser.add_argument("--output", default="", help="write the figures here as JSON")
    args = parser.parse_args(argv)

    from fairforget.components.dataset import load_dataset
    from fairforget.components.generator import load_generator

    dataset = load_dataset(args.data_dir)
    dataset = public_evaluation(dataset) if args.public_evaluation else dataset
    generator = load_generator(args.generator_dir, device="cpu")
    baseline = generator.config.guidance_scale
    scales = sorted(set(args.scales) | {baseline})
    scales += [parse_per_class(text, dataset.class_names) for text in args.per_class]
    own = tuple(generator.config.guidance_interval)
    intervals = [own] + [tuple(i) for i in (args.intervals or []) if tuple(i) != own]
    rows = sweep_intervals(generator, dataset, scales, intervals)
    print(f"bench_guidance: {args.generator_dir}, trained with guidance {baseline:g} in the interval "
          f"({own[0]:g},{own[1]:g}]; one judge for every column")
    columns = {scale: f"guidance {scale:g}" if isinstance(scale, float)
               else scale if " in (" in scale else f"per-class {k}" for k, scale in enumerate(rows)}
    print(format_table({columns[scale]: row for scale, row in rows.items()}, SWEPT))
    for scale, column in columns.items():
        if column != name(scale):
            print(f"{column}: {scale}")
    classes = dataset.class_names
    print("per class (conditional accuracy):")
    for scale, row in rows.items():
        print(f"  {name(scale)} " + ", ".join(f"{c} {row['per_class_conditional_accuracy'][c]:.2f}"
                                                    for c in classes))
    print(f"ratio to guidance {baseline:g} (same run):")
    for scale, row in rows.items():
        print(f"  {name(scale)} " + ", ".join(f"{key} x{row[key] / rows[baseline][key]:.2f}"
                                                    for key in ("conditional_accuracy", "cas_ratio", "fid",
                                                                "diversity_ratio") if rows[baseline][key]))
    if args.output:
        target = Path(args.output)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps({"generator_dir": args.generator_dir, "baseline_scale": baseline,
                                   "public_evaluation": args.public_evaluation,
                                   "rows": {str(k): v for k, v in rows.items()}}, indent=1))
        tmp.replace(target)
    return rows


if __name__ == "__main__":
    main()
