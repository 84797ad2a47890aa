"""Write "a user's own image folder" for the folder source: Fashion-MNIST's test images in class folders, a
``superclasses.json`` and an ``attributes.csv`` whose second attribute is correlated with the superclass.

The attribute ``inverted`` (yes/no) is real: an inverted image has its grey levels flipped. 83% of the
``accessories`` images are inverted and 83% of the ``apparel`` images are not, the spurious correlation that
debiasing two attributes jointly must remove (``-P attributes=superclass,inverted``):

    python -m benchmarks.make_user_folder /tmp/user-folder
    mlflow run . --env-manager local -P dataset=folder -P source_dir=/tmp/user-folder \\
        -P majority_superclass=apparel -P attributes=superclass,inverted -P train_size=2000 -P test_size=1000 \\
        -P audit_size=1600 -P reference_size=2000 -P data_dir=user-data -P outputs_dir=user-outputs
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from fairforget.components.sources import FASHION_MNIST_DEFAULT_DIR, read_fashion_mnist


def write_user_folder(out: Path, *, inverted_share: float = 0.83, seed: int = 0, limit: int | None = None) -> int:
    """Write the folder; returns the number of images. Class folder names replace ``/`` (not allowed in a folder
    name or an MLflow metric name) with ``-``."""
    source = read_fashion_mnist(FASHION_MNIST_DEFAULT_DIR)
    test = np.flatnonzero(source.partition == "test")[:limit]
    rng = np.random.default_rng(seed)
    folder_of = {name: name.replace("/", "-").replace(" ", "_") for name in source.class_names}
    out.mkdir(parents=True, exist_ok=True)
    (out / "superclasses.json").write_text(json.dumps(
        {folder_of[c]: s for c, s in source.superclass_of.items()}, indent=1) + "\n")
    rows = []
    for k, index in enumerate(test):
        class_name = source.class_names[source.labels[index]]
        superclass = source.superclass_of[class_name]
        share = inverted_share if superclass == "accessories" else 1.0 - inverted_share
        inverted = bool(rng.random() < share)
        image = source.images[index][..., 0]
        if inverted:
            image = 255 - image
        path = Path(folder_of[class_name]) / f"{k:05d}.png"
        (out / path.parent).mkdir(exist_ok=True)
        Image.fromarray(image).save(out / path)
        rows.append({"file": path.as_posix(), "inverted": "yes" if inverted else "no"})
    with open(out / "attributes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "inverted"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--inverted-share", type=float, default=0.83)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    count = write_user_folder(args.out, inverted_share=args.inverted_share, seed=args.seed)
    print(f"make_user_folder: {count} images in {args.out}")
    return count


if __name__ == "__main__":
    main()
