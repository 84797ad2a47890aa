"""Bad image folders (issue #14): each is refused by ``prepare`` with one ``error:`` line and exit code 2, and leaves
the data set prepared before, its ``data.dvc``, the DVC cache and the tracking and registry store byte for byte as
they were.

One DVC project with a good folder prepared (and ``dvc add``-ed) is built once per module; each test copies it, so a
test costs the damage and one refused ``prepare``."""

import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from fairforget.pipelines import data_steps
from tests.components.test_data import write_image_folder

SIZES = ["--train-size", "6", "--test-size", "3", "--audit-size", "0", "--reference-size", "3",
         "--majority-superclass", "accessories"]


def prepare_argv(source: Path, project: Path, *extra: str) -> list[str]:
    return ["prepare", "--dataset", "folder", "--source-dir", str(source), *SIZES, "--data-dir",
            str(project / "data"), *extra]


def use_project(monkeypatch, project: Path) -> None:
    """Point tracking at ``project/mlflow.db`` (``prepare`` tracks ``project/data`` in ``project``'s DVC project)."""
    uri = f"sqlite:///{project / 'mlflow.db'}"
    # setenv, not delenv, for the registry too: MLflow exports both variables, and undo must remove them again
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fairforget-test")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (data/, data.dvc, .dvc/cache, mlflow.db, mlruns/), by relative path."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def prepared_project(tmp_path_factory):
    """A DVC project whose ``data/`` was prepared from the good folder by the command line; returns its folder."""
    project = tmp_path_factory.mktemp("project")
    source = write_image_folder(tmp_path_factory.mktemp("good") / "clothes")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, check=True)
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_project(monkeypatch, project)
        assert data_steps.main(prepare_argv(source, project)) == 0
    assert (project / "data.dvc").is_file() and (project / "mlflow.db").is_file()
    return project


@pytest.fixture
def project(prepared_project, tmp_path, monkeypatch):
    """A private copy of the prepared project, used by ``prepare`` from now on."""
    copy = tmp_path / "project"
    shutil.copytree(prepared_project, copy)
    use_project(monkeypatch, copy)
    return copy


@pytest.fixture
def folder(tmp_path):
    """A fresh copy of the good folder, to damage."""
    return write_image_folder(tmp_path / "clothes")


def edit_csv(folder: Path, change) -> None:
    lines = (folder / "attributes.csv").read_text().splitlines()
    (folder / "attributes.csv").write_text("\n".join(change(lines)) + "\n")


def png_claiming_size(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` pixels (its data would never decode to that)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 7, dtype=np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    struct.pack_into(">II", data, 16, width, height)  # IHDR's width and height
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))  # and its checksum
    return bytes(data)


def duplicated_row(folder):
    edit_csv(folder, lambda lines: lines + [lines[1]])


def no_file_column(folder):
    edit_csv(folder, lambda lines: ["path,colour"] + lines[1:])


def row_for_no_image(folder):
    edit_csv(folder, lambda lines: lines + ["Bag/99.png,dark"])


def image_without_row(folder):
    edit_csv(folder, lambda lines: lines[:5] + lines[6:])


def empty_value(folder):
    edit_csv(folder, lambda lines: lines[:4] + ["Ankle boot/3.png,"] + lines[5:])


def na_value(folder):
    edit_csv(folder, lambda lines: lines[:4] + ["Ankle boot/3.png,NA"] + lines[5:])


def ragged_row(folder):
    edit_csv(folder, lambda lines: lines[:4] + ["Ankle boot/3.png,dark,extra"] + lines[5:])


def attribute_named_like_a_manifest_column(folder):
    edit_csv(folder, lambda lines: ["file,superclass"] + lines[1:])


def attribute_name_mlflow_refuses(folder):
    edit_csv(folder, lambda lines: ["file,colour?"] + lines[1:])


def empty_folder(folder):
    for child in folder.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def class_folder_without_images(folder):
    (folder / "Hat").mkdir()
    (folder / "Hat" / "notes.txt").write_text("no images here")


def image_over_the_pixel_limit(folder):
    (folder / "Bag" / "2.png").write_bytes(png_claiming_size(5000, 5000))


def decompression_bomb(folder):
    (folder / "Bag" / "2.png").write_bytes(png_claiming_size(100_000, 100_000))


def class_name_mlflow_refuses(folder):
    (folder / "Shirt").rename(folder / "Shirt+Top")
    (folder / "superclasses.json").write_text(json.dumps({"Ankle boot": "accessories", "Bag": "accessories"}))
    edit_csv(folder, lambda lines: [line.replace("Shirt/", "Shirt+Top/") for line in lines])


def superclass_name_mlflow_refuses(folder):
    (folder / "superclasses.json").write_text(
        json.dumps({"Ankle boot": "shoes&bags", "Bag": "shoes&bags", "Shirt": "apparel"}))


def single_superclass(folder):
    (folder / "superclasses.json").write_text(
        json.dumps({"Ankle boot": "clothing", "Bag": "clothing", "Shirt": "clothing"}))


def unreadable_superclasses(folder):
    (folder / "superclasses.json").write_text('{"Bag": "accessories",}')


def all_black_class(folder):
    """Passes the folder checks, fails the integrity suite on the written data set (pixel_max >= 1)."""
    from PIL import Image

    for path in (folder / "Shirt").iterdir():
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(path)


BAD_INPUTS = [
    (duplicated_row, "attributes.csv lists 'Ankle boot/0.png' 2 times (lines 2, 20): keep one row per image"),
    (no_file_column, "attributes.csv has no 'file' column (header: ['path', 'colour'])"),
    (row_for_no_image, "attributes.csv line 20 names 'Bag/99.png', which is not an image of"),
    (image_without_row, "attributes.csv has no row for 1 images, e.g. ['Ankle boot/4.png']: add one row per image"),
    (empty_value, "attributes.csv column 'colour' has 1 empty or NA values (first on line 5): fill them in, or "
                  "give missing_value"),
    (na_value, "attributes.csv column 'colour' has 1 empty or NA values (first on line 5)"),
    (ragged_row, "attributes.csv line 5 has 3 fields but the header has 2"),
    (attribute_named_like_a_manifest_column, "column 'superclass' would overwrite the manifest's own column"),
    (attribute_name_mlflow_refuses, "attribute column 'colour?' cannot be part of an MLflow metric name"),
    (empty_folder, "has 0 class sub-folders; an image folder needs at least 2"),
    (class_folder_without_images, "Hat holds no images"),
    (image_over_the_pixel_limit, "2.png is 5000x5000 pixels, over the limit of 16777216 pixels per image"),
    (decompression_bomb, "2.png is refused as a possible decompression bomb"),
    (class_name_mlflow_refuses, "class folder 'Shirt+Top' cannot be part of an MLflow metric name"),
    (superclass_name_mlflow_refuses, "superclass 'shoes&bags' cannot be part of an MLflow metric name"),
    (single_superclass, "superclasses.json puts every class in superclass 'clothing'; debiasing needs at least two"),
    (unreadable_superclasses, "superclasses.json is not valid JSON"),
    (all_black_class, "the data set failed 1 integrity checks: expect_column_values_to_be_between(pixel_max)"),
]


@pytest.mark.parametrize("damage, message", BAD_INPUTS, ids=[d.__name__ for d, _ in BAD_INPUTS])
def test_a_bad_folder_is_refused_in_one_line_and_changes_nothing(damage, message, project, folder, capsys):
    before = snapshot(project)
    damage(folder)
    capsys.readouterr()
    assert data_steps.main(prepare_argv(folder, project)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert snapshot(project) == before  # data/, data.dvc, the DVC cache, mlflow.db, mlruns/; no temporary folder


def test_missing_value_puts_empty_cells_in_a_category_and_prepare_succeeds(project, folder):
    from fairforget.components.dataset import load_dataset

    empty_value(folder)
    before = (project / "data.dvc").read_text()
    assert data_steps.main(prepare_argv(folder, project, "--missing-value", "unknown")) == 0
    prepared = load_dataset(project / "data")
    assert set(prepared.manifest["colour"]) <= {"dark", "light", "unknown"}
    assert prepared.config["missing_value"] == "unknown"
    assert (project / "data.dvc").read_text() != before  # the new version replaced the old and is tracked
