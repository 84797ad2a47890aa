import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from fairforget.components.data import DataConfig, biased_class_counts, prepare_dataset
from fairforget.components.dataset import DataError, load_dataset, make_toy_dataset, save_dataset
from fairforget.components.sources import FASHION_MNIST_CLASSES, FASHION_MNIST_SUPERCLASSES, read_source
from fairforget.components.versioning import dvc_md5_of_folder


def test_biased_counts_follow_the_papers_scenario():
    counts = biased_class_counts(4000, FASHION_MNIST_CLASSES, FASHION_MNIST_SUPERCLASSES, "accessories", 0.8)
    assert sum(counts.values()) == 4000
    assert all(counts[c] == 800 for c in ("Sandal", "Sneaker", "Bag", "Ankle boot"))
    apparel = [counts[c] for c in FASHION_MNIST_CLASSES if FASHION_MNIST_SUPERCLASSES[c] == "apparel"]
    assert sum(apparel) == 800 and max(apparel) - min(apparel) <= 1


def test_prepare_draws_disjoint_biased_splits(small_data_config):
    ds = prepare_dataset(small_data_config)
    m = ds.manifest
    assert m["id"].is_unique
    sizes = m["split"].value_counts().to_dict()
    assert sizes == {"train": 100, "test": 50, "audit": 100, "reference": 100}
    train = m[m["split"] == "train"]
    assert (train["superclass"] == "accessories").mean() == pytest.approx(0.8)
    assert (m[m["split"] == "test"]["label"].value_counts() == 5).all()
    # test comes from the source's test partition, the rest from its train partition
    assert m[m["split"] == "test"]["id"].str.startswith("fmnist-test-").all()
    assert m[m["split"] != "test"]["id"].str.startswith("fmnist-train-").all()
    assert ds.images.shape == (350, 28, 28, 1) and ds.images.dtype == np.uint8
    # each image is the source image its id names
    source = read_source("fashion_mnist", small_data_config.source_dir)
    row = m.index[m["split"] == "audit"][0]
    index = int(m.loc[row, "id"].split("-")[-1])
    np.testing.assert_array_equal(ds.images[row], source.images[(source.partition == "train")][index])


def test_preparing_twice_gives_identical_bytes_and_the_dvc_md5(tmp_path, small_data_config):
    first, second = tmp_path / "a" / "data", tmp_path / "b" / "data"
    save_dataset(prepare_dataset(small_data_config), first)
    save_dataset(prepare_dataset(small_data_config), second)
    assert dvc_md5_of_folder(first) == dvc_md5_of_folder(second)
    # our md5 is the one `dvc add` writes
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=first.parent, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data"], cwd=first.parent, check=True)
    import yaml

    recorded = yaml.safe_load((first.parent / "data.dvc").read_text())["outs"][0]["md5"]
    assert recorded == dvc_md5_of_folder(first)


def test_a_different_seed_draws_different_images(small_data_config):
    from dataclasses import replace

    a = prepare_dataset(small_data_config).manifest["id"]
    b = prepare_dataset(replace(small_data_config, seed=1)).manifest["id"]
    assert list(a) != list(b)


def test_save_is_atomic_and_round_trips(tmp_path):
    ds = make_toy_dataset()
    folder = save_dataset(ds, tmp_path / "data")
    back = load_dataset(folder)
    np.testing.assert_array_equal(back.images, ds.images)
    assert back.manifest.equals(ds.manifest) and back.class_names == ds.class_names
    # a failure while writing leaves the previous version in place and no temporary folder behind
    broken = make_toy_dataset(per_class_train=(1, 1, 1, 1))
    broken.config = {"not json": object()}  # fails after images and manifest are written
    with pytest.raises(TypeError):
        save_dataset(broken, folder)
    assert load_dataset(folder).manifest.equals(ds.manifest)
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_a_round_trip_keeps_text_values_that_look_like_missing_or_numbers(tmp_path):
    from dataclasses import replace as replace_fields

    ds = make_toy_dataset()
    values = np.array(["None", "NA", "1", "01", "1.0", "null"])[np.arange(len(ds)) % 6]
    ds = replace_fields(ds, manifest=ds.manifest.assign(hat=values), attributes=["hat"])
    back = load_dataset(save_dataset(ds, tmp_path / "data"))
    assert back.manifest["hat"].tolist() == values.tolist()  # not NaN, not 1 / 1.0 merged
    assert back.manifest["label"].dtype == np.int64 and back.manifest.equals(ds.manifest)


@pytest.mark.parametrize("change, message", [
    (dict(dataset="mnist-ish"), "unknown dataset"),
    (dict(source_dir="/nonexistent/fashion"), "apt-get install dataset-fashion-mnist"),
    (dict(majority_fraction=1.5), "strictly between 0 and 1"),
    (dict(majority_fraction=-0.2), "strictly between 0 and 1"),
    (dict(train_size=-5), "non-negative"),
    (dict(train_size=100000), "not enough images"),
    (dict(majority_superclass="vehicles"), "not a superclass"),
    (dict(missing_value="unknown"), "missing_value is for dataset folder"),
    (dict(image_size=200), "image_size must be an integer from 4 to 128"),
])
def test_bad_data_configs_give_one_clear_error(small_data_config, change, message):
    from dataclasses import replace

    with pytest.raises(DataError, match=message):
        prepare_dataset(replace(small_data_config, **change))


def test_corrupt_idx_file_is_reported(fake_fashion_mnist, small_data_config):
    (fake_fashion_mnist / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"garbage"))
    with pytest.raises(DataError, match="corrupt"):
        prepare_dataset(small_data_config)


def test_missing_cifar_and_celeba_folders_say_what_to_put_where(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        read_source("cifar10", tmp_path)
    with pytest.raises(DataError, match="list_attr_celeba.txt"):
        read_source("celeba", tmp_path)
    with pytest.raises(DataError, match="needs source_dir"):
        read_source("folder", None)


def test_folder_source_with_superclasses_and_a_corrupt_image(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("cat", "dog", "car"):
        (tmp_path / name).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "superclasses.json").write_text(json.dumps({"cat": "animal", "dog": "animal", "car": "vehicle"}))
    source = read_source("folder", tmp_path)
    assert source.images.shape == (18, 12, 12, 3)
    assert source.superclass_of == {"car": "vehicle", "cat": "animal", "dog": "animal"}
    ds = prepare_dataset(DataConfig(dataset="folder", source_dir=str(tmp_path), train_size=5, test_size=3,
                                    audit_size=0, reference_size=0, majority_superclass="animal"), source)
    assert len(ds.split("train")) == 5
    (tmp_path / "dog" / "3.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="3.png is not a readable image"):
        read_source("folder", tmp_path)


def test_load_dataset_of_a_missing_folder_says_how_to_make_it(tmp_path):
    with pytest.raises(DataError, match="prepare the data first"):
        load_dataset(tmp_path / "nothing")


def write_image_folder(root, per_class: int = 6):
    """An image folder as a new user brings one: Fashion-MNIST-like 8x8 grayscale images in class folders,
    ``superclasses.json`` and an ``attributes.csv`` whose ``colour`` follows the superclass (all but one image of
    each superclass). Row order: class, then image; line 2 is ``Ankle boot/0.png``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    superclass_of = {"Ankle boot": "accessories", "Bag": "accessories", "Shirt": "apparel"}
    rows = ["file,colour"]
    for name, superclass in superclass_of.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(1, 256, (8, 8), dtype=np.uint8)).save(root / name / f"{i}.png")
            dark = (i < per_class - 1) == (superclass == "accessories")
            rows.append(f"{name}/{i}.png,{'dark' if dark else 'light'}")
    (root / "superclasses.json").write_text(json.dumps(superclass_of))
    (root / "attributes.csv").write_text("\n".join(rows) + "\n")
    return root


def test_folder_ids_come_from_the_image_bytes_so_adding_a_file_changes_no_other_id(tmp_path):
    """The deletion ledger names records by id: a folder's ids must not shift when files are added or renamed."""
    import hashlib

    from PIL import Image

    root = write_image_folder(tmp_path / "clothes")
    before = read_source("folder", root)
    files = sorted(p for p in root.rglob("*.png"))
    by_file = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in files}
    assert sorted(before.content_ids) == sorted(by_file.values())
    # a new image sorted first in its class, and a copy of an existing image under another name
    Image.fromarray(np.full((8, 8), 7, dtype=np.uint8)).save(root / "Bag" / "00.png")
    (root / "Shirt" / "copy.png").write_bytes((root / "Shirt" / "0.png").read_bytes())
    lines = (root / "attributes.csv").read_text().splitlines()
    (root / "attributes.csv").write_text("\n".join(lines + ["Bag/00.png,dark", "Shirt/copy.png,light"]) + "\n")
    after = read_source("folder", root)
    assert set(before.content_ids) < set(after.content_ids)
    assert f"{by_file['Shirt/0.png']}-2" in set(after.content_ids)  # identical bytes: the second gets -2
    prepared = prepare_dataset(DataConfig(dataset="folder", source_dir=str(root), train_size=6, test_size=3,
                                          audit_size=3, reference_size=3, majority_superclass="accessories"))
    assert set(prepared.ids) <= {f"img-{i}" for i in after.content_ids}


def test_folder_attributes_follow_their_file_names_not_the_row_order(tmp_path):
    root = write_image_folder(tmp_path / "clothes")
    lines = (root / "attributes.csv").read_text().splitlines()
    expected = dict(line.split(",") for line in lines[1:])
    (root / "attributes.csv").write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    source = read_source("folder", root)
    files = [f"{source.class_names[k]}/{i}.png" for k, i in zip(source.labels, [0, 1, 2, 3, 4, 5] * 3)]
    assert list(source.attributes["colour"]) == [expected[f] for f in files]
    assert source.images.shape == (18, 8, 8, 1)
    assert source.superclass_of == {"Ankle boot": "accessories", "Bag": "accessories", "Shirt": "apparel"}


def test_empty_and_na_attribute_values_are_refused_unless_missing_value_names_a_category(tmp_path, caplog):
    root = write_image_folder(tmp_path / "clothes")
    lines = (root / "attributes.csv").read_text().splitlines()
    lines[2] = "Ankle boot/1.png,"
    lines[8] = "Bag/1.png, na "
    (root / "attributes.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"column 'colour' has 2 empty or NA values \(first on line 3\)"):
        read_source("folder", root)
    with caplog.at_level("WARNING"):
        source = read_source("folder", root, missing_value="unknown")
    colours = source.attributes["colour"].tolist()
    assert colours[1] == colours[7] == "unknown" and colours.count("unknown") == 2
    assert "2 empty or NA values of 'colour' put in category 'unknown'" in caplog.text


@pytest.mark.parametrize("name, accepted", [
    ("Shirt", True), ("Ankle boot", True), ("T-shirt_top", True), ("v1.2", True), ("élan", True), ("a..b", True),
    ("a/b", False), ("..", False), (".", False), ("", False), ("a+b", False), ("a&b", False), ("a:b", False),
    ("x" * 101, False),
])
def test_names_are_checked_for_mlflow_metric_names(name, accepted):
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_metric_name

    from fairforget.components.sources import check_name

    if accepted:
        assert check_name(name, "class folder", "rename it") == name
        _validate_metric_name(f"acc/class/{name}")  # MLflow takes every name we accept
        _validate_metric_name(f"bias/kl/{name} x {name}")
    else:
        with pytest.raises(DataError, match="cannot be part of an MLflow metric name.*; rename it"):
            check_name(name, "class folder", "rename it")
        if name in ("..", ".", "", "a+b", "a&b"):  # the others MLflow takes, but they nest metrics or break on Windows
            with pytest.raises(MlflowException):
                _validate_metric_name(f"acc/class/{name}")


def test_an_unset_missing_value_leaves_the_stored_config_as_before():
    # data prepared before the option existed keeps its meta.json bytes, its DVC md5 and counts as current
    assert "missing_value" not in DataConfig().stored_record()
    assert DataConfig(dataset="folder", missing_value="unknown").stored_record()["missing_value"] == "unknown"


def test_a_folder_without_majority_superclass_says_which_to_give(tmp_path):
    root = write_image_folder(tmp_path / "clothes")
    config = DataConfig(dataset="folder", source_dir=str(root), train_size=6, test_size=3, audit_size=0,
                        reference_size=0)
    with pytest.raises(DataError, match=r"no default majority superclass: give majority_superclass "
                                        r"\(--majority-superclass\), one of \['accessories', 'apparel'\]"):
        prepare_dataset(config)


def write_colour_photo_folder(root, per_class: int = 40, seed: int = 0):
    """A folder as a user's own photos come: RGB, non-square and of mixed sizes (45 to 96 pixels a side), one
    grayscale file among them, 4 classes in 2 superclasses, each class a colour and a bright quadrant."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    superclass_of = {"boot": "shoes", "sandal": "shoes", "shirt": "tops", "coat": "tops"}
    tints = [(200, 60, 60), (60, 200, 60), (60, 60, 200), (200, 200, 60)]
    for k, name in enumerate(superclass_of):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            height, width = int(rng.integers(55, 97)), int(rng.integers(55, 97))
            image = rng.normal(50, 20, (height, width, 3))
            top, left = (k // 2) * height // 2, (k % 2) * width // 2
            image[top:top + height // 2, left:left + width // 2] += tints[k]
            picture = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
            (picture.convert("L") if (k, i) == (0, 0) else picture).save(root / name / f"{i:03d}.jpg", quality=95)
    (root / "superclasses.json").write_text(json.dumps(superclass_of))
    return root


def test_a_colour_photo_folder_is_cropped_and_resized_one_image_at_a_time(tmp_path):
    """Without image_size a folder is resized to 32 (never upscaled); any size from 4 to 128 can be asked for;
    every image is centre-cropped, so a tall photo keeps its proportions; one grayscale file makes no gray folder."""
    from PIL import Image

    root = write_colour_photo_folder(tmp_path / "photos", per_class=3)
    source = read_source("folder", root)
    assert source.images.shape == (12, 32, 32, 3) and source.images.dtype == np.uint8
    assert read_source("folder", root, image_size=53).images.shape == (12, 53, 53, 3)
    small = tmp_path / "small"
    for name in ("a", "b"):
        (small / name).mkdir(parents=True)
        Image.fromarray(np.zeros((20, 24), dtype=np.uint8)).save(small / name / "0.png")
    assert read_source("folder", small).images.shape == (2, 20, 20, 1)  # the smallest side, not upscaled
    # centre crop: a 40x20 image whose middle square is white, with black bands above and below
    tall = np.zeros((40, 20), dtype=np.uint8)
    tall[10:30] = 255
    Image.fromarray(tall).save(small / "a" / "0.png")
    assert read_source("folder", small, image_size=10).images[0].min() == 255
    for bad in (3, 129, 32.5):
        with pytest.raises(DataError, match="image_size must be an integer from 4 to 128"):
            read_source("folder", root, image_size=bad)
    assert "image_size" not in DataConfig().stored_record()  # data prepared before the option keeps its md5


def test_image_size_resizes_a_built_in_source(small_data_config):
    import dataclasses

    prepared = prepare_dataset(dataclasses.replace(small_data_config, image_size=16))
    assert prepared.images.shape[1:] == (16, 16, 1)
    assert prepared.config["image_size"] == 16
