"""Write "a user's own image folder" for the folder source: Fashion-MNIST's test images in class folders, a
``superclasses.json`` and an ``attributes.csv`` whose second attribute is correlated with the superclass.

The attribute ``inverted`` (yes/no) is real: an inverted image has its grey levels flipped. 83% of the
``accessories`` images are inverted and 83% of the ``apparel`` images are not, the spurious correlation that
debiasing two attributes jointly must remove (``-P attributes=superclass,inverted``):

    python -m tools.make_user_folder /tmp/user-folder
    mlflow run . --env-manager local -P dataset=folder -P source_dir=/tmp/user-folder \\
        -P majority_superclass=apparel -P attributes=superclass,inverted -P train_size=2000 -P test_size=1000 \\
        -P audit_size=1600 -P reference_size=2000 -P data_dir=user-data -P outputs_dir=user-outputs

``--colour`` writes what a user's photos look like instead: RGB JPEGs of mixed, non-square sizes (each image
upscaled to a random 40-96 x 40-96 pixels), tinted warm or cool; the attribute ``tint`` takes the place of
``inverted`` (83% of the accessories warm, 83% of the apparel cool): ``-P attributes=superclass,tint``, and
``-P image_size=...`` (default: 32) sets the size the models see.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from fairforget.components.sources import FASHION_MNIST_DEFAULT_DIR, read_fashion_mnist


TINTS = {"warm": (1.0, 0.75, 0.45), "cool": (0.45, 0.75, 1.0)}  # RGB gains of a tinted grey image


def write_user_folder(out: Path, *, inverted_share: float = 0.83, seed: int = 0, limit: int | None = None,
                      colour: bool = False) -> int:
    """Write the folder; returns the number of images. Class folder names replace ``/`` (not allowed in a folder
    name or an MLflow metric name) with ``-``. ``colour``: tinted RGB photos of mixed sizes (module docstring)."""
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
        flagged = bool(rng.random() < share)
        image = source.images[index][..., 0]
        if colour:
            gains = np.array(TINTS["warm" if flagged else "cool"])
            picture = Image.fromarray((image[..., None] * gains).clip(0, 255).astype(np.uint8))
            picture = picture.resize((int(rng.integers(40, 97)), int(rng.integers(40, 97))), Image.BICUBIC)
            path = Path(folder_of[class_name]) / f"{k:05d}.jpg"
            row = {"file": path.as_posix(), "tint": "warm" if flagged else "cool"}
        else:
            picture = Image.fromarray(255 - image if flagged else image)
            path = Path(folder_of[class_name]) / f"{k:05d}.png"
            row = {"file": path.as_posix(), "inverted": "yes" if flagged else "no"}
        (out / path.parent).mkdir(exist_ok=True)
        picture.save(out / path, **({"quality": 92} if colour else {}))
        rows.append(row)
    with open(out / "attributes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "tint" if colour else "inverted"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--inverted-share", type=float, default=0.83)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--colour", action="store_true", help="tinted RGB photos of mixed sizes (attribute tint)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N test images")
    args = parser.parse_args(argv)
    count = write_user_folder(args.out, inverted_share=args.inverted_share, seed=args.seed, limit=args.limit,
                              colour=args.colour)
    print(f"make_user_folder: {count} images in {args.out}")
    return count


if __name__ == "__main__":
    main()
