"""The benchmark's user folders: the grey one (attribute inverted) and the colour one (tinted RGB photos of mixed
sizes, attribute tint), both read by the folder source as a user's folder would be."""

from collections import Counter
from pathlib import Path

import pytest

from tools.make_user_folder import write_user_folder
from fairforget.components.sources import FASHION_MNIST_DEFAULT_DIR, read_source


@pytest.fixture(autouse=True)
def needs_fashion_mnist():
    if not (Path(FASHION_MNIST_DEFAULT_DIR) / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make setup installs it)")


def test_the_colour_folder_holds_tinted_photos_of_mixed_sizes_read_at_32_rgb(tmp_path):
    from PIL import Image

    assert write_user_folder(tmp_path / "photos", limit=60, colour=True) == 60
    sizes = {Image.open(p).size for p in (tmp_path / "photos").rglob("*.jpg")}
    assert len(sizes) > 10 and any(w != h for w, h in sizes)
    source = read_source("folder", tmp_path / "photos")
    assert source.images.shape == (60, 32, 32, 3)
    tint = Counter(zip(source.attributes["tint"], [source.superclass_of[source.class_names[k]]
                                                  for k in source.labels]))
    assert tint[("warm", "accessories")] > tint[("cool", "accessories")]  # the spurious correlation is there
    assert tint[("cool", "apparel")] > tint[("warm", "apparel")]
    warm = source.images[source.attributes["tint"].to_numpy() == "warm"].reshape(-1, 3).mean(axis=0)
    assert warm[0] > warm[2]  # warm images are redder than blue


def test_the_grey_folder_is_unchanged(tmp_path):
    assert write_user_folder(tmp_path / "grey", limit=20) == 20
    source = read_source("folder", tmp_path / "grey")
    assert source.images.shape == (20, 28, 28, 1) and set(source.attributes["inverted"]) <= {"yes", "no"}
