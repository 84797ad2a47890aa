"""How the DP labeller's constants were chosen: on the public split alone, S untouched.

The labeller (``components/generator/labeller.py``) gives unlabelled public images the classes of S through one
Gaussian release of S's class centroids. Its free choices (the whitening's dimension, the record's clipping norm,
the confidence threshold) and its share of the budget must not be tuned on S, or the tuning itself leaks
(docs/generator.md). This script chooses them with S replaced by a stand-in drawn from the public split: the public
images are split in two halves; half A, subsampled to S's class design (``--design``: six apparel classes rare,
four common), plays S, with its labels; half B is labelled and scored against its own labels. The rotation network
is trained on the public split without labels, as the generator trains it. For every whitening dimension and
epsilon it prints the labelled half's accuracy, its worst class, the fraction the threshold keeps and the precision
there, averaged over ``--repeats`` draws of the noise.

    python -m experiments.choose_labeller --output docs/results/benchmarks/dp-labeller-choice.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# S's class design on the default data (800 records of each common class, 133 of each apparel class), scaled to
# what half of the public split holds (about 500 per class): the apparel classes keep S's count
DEFAULT_DESIGN = {"T-shirt/top": 133, "Trouser": 133, "Pullover": 133, "Dress": 133, "Coat": 133, "Shirt": 133,
                  "Sandal": 400, "Sneaker": 400, "Bag": 400, "Ankle boot": 400}


def choose(dataset, design: dict[str, int], components: list[int], epsilons: list[float], repeats: int,
           seed: int) -> tuple[list[dict], int, int]:
    """The rows of the choice (module docstring), the stand-in's and the scored half's sizes. Reads the public
    (reference) split of ``dataset`` only: S's images and labels never enter."""
    import numpy as np

    from fairforget.components.generator.autoencoder import fit_perceptual_network
    from fairforget.components.generator.labeller import (PSEUDO_LABEL_CONFIDENCE, fit_dp_labeller, image_features,
                                                          labeller_noise_multiplier, public_whitening)
    from fairforget.components.generator.train import public_images

    public = public_images(dataset)
    order = np.random.default_rng(seed).permutation(len(public))
    half_a, half_b = order[: len(order) // 2], order[len(order) // 2:]
    wanted = {dataset.class_names.index(name): count for name, count in design.items() if name in dataset.class_names}
    stand_in = np.concatenate([half_a[public.labels[half_a] == c][:count] for c, count in wanted.items()])
    trunk = fit_perceptual_network(public.images, None, dataset.num_classes, 10, seed + 4)
    features = image_features(trunk, public.images)
    labels, truth = public.labels, public.labels[half_b]
    rows = []
    for epsilon in epsilons:
        sigma = labeller_noise_multiplier(epsilon, 1e-5)
        for k in components:
            scores = []
            whitening = public_whitening(features[half_b], k)  # one SVD per dimension, not one per noise draw
            for repeat in range(repeats):
                labeller = fit_dp_labeller(features[stand_in], labels[stand_in], features[half_b],
                                           dataset.num_classes, sigma, repeat, components=k, whitening=whitening)
                probabilities = labeller.probabilities(features[half_b])
                predicted = probabilities.argmax(axis=1)
                kept = probabilities.max(axis=1) >= PSEUDO_LABEL_CONFIDENCE
                per_class = [float(np.mean(predicted[truth == c] == c)) for c in np.unique(truth)]
                scores.append((float(np.mean(predicted == truth)), min(per_class), float(kept.mean()),
                               float(np.mean(predicted[kept] == truth[kept])) if kept.any() else float("nan")))
            mean = np.mean(scores, axis=0)
            rows.append({"epsilon": epsilon, "components": k, "noise_multiplier": sigma, "accuracy": float(mean[0]),
                         "accuracy_sd": float(np.std([s[0] for s in scores])), "worst_class": float(mean[1]),
                         "kept": float(mean[2]), "precision_kept": float(mean[3])})
    return rows, int(len(stand_in)), int(len(half_b))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--components", type=int, nargs="+", default=[32, 48, 64, 96, 128])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)

    from fairforget.pipelines.data_steps import load_current_data

    rows, stand_in, scored = choose(load_current_data(args.data_dir), DEFAULT_DESIGN, args.components, args.epsilons,
                                    args.repeats, args.seed)
    for row in rows:
        print(f"epsilon {row['epsilon']:g} k {row['components']:4d}: accuracy {row['accuracy']:.3f} +- "
              f"{row['accuracy_sd']:.3f}, worst class {row['worst_class']:.2f}, kept {row['kept']:.2f} at precision "
              f"{row['precision_kept']:.3f}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        command = (f"python -m experiments.choose_labeller --components {' '.join(map(str, args.components))} "
                   f"--epsilons {' '.join(f'{e:g}' for e in args.epsilons)} --repeats {args.repeats} --seed {args.seed}")
        args.output.write_text(json.dumps({"command": command, "stand_in_records": stand_in,
                                           "scored_records": scored, "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
