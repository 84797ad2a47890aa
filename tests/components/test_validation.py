import tempfile

import numpy as np
import pytest

from fairforget.components.dataset import DataError, make_toy_dataset
from fairforget.components.validation import validate_dataset as validate_into

PRIOR = {"superclass": {"big": 0.5, "small": 0.5}}


@pytest.fixture
def validate_dataset(tmp_path):
    """``validate_dataset`` with its GX project under the test's own folder (without ``docs_root`` the caller owns
    and removes a temporary folder)."""
    return lambda *args, **kwargs: validate_into(*args, docs_root=tempfile.mkdtemp(dir=tmp_path), **kwargs)


def test_clean_but_biased_data_passes_integrity_and_fails_balance_as_a_finding(validate_dataset):
    ds = make_toy_dataset()  # train is 48 big / 16 small: 75/25
    result = validate_dataset(ds, PRIOR, rho=0.01, expected_sizes={"train": 64, "test": 32})
    assert result.integrity_ok
    assert not result.balanced
    kl = [o for o in result.outcomes if o.suite == "balance"][0]
    # GX reports KL(observed || prior) for 75/25 vs 50/50
    assert kl.observed == pytest.approx(0.75 * np.log(1.5) + 0.25 * np.log(0.5), abs=1e-6)
    result.raise_for_integrity()  # does not raise
    assert result.docs_dir is not None and (result.docs_dir / "index.html").is_file()


def test_balanced_data_passes_balance(validate_dataset):
    ds = make_toy_dataset(per_class_train=(10, 10, 10, 10))
    assert validate_dataset(ds, PRIOR, rho=0.01).balanced


@pytest.mark.parametrize("break_it, expectation", [
    (lambda ds: ds.manifest.__setitem__("id", ["same"] * len(ds)), "expect_column_values_to_be_unique"),
    (lambda ds: ds.manifest.loc.__setitem__((0, "label"), 7), "expect_column_values_to_be_between"),
    (lambda ds: ds.manifest.loc.__setitem__((0, "class_name"), "zebra"), "expect_column_values_to_be_in_set"),
    (lambda ds: ds.manifest.loc.__setitem__((0, "split"), "holdout"), "expect_column_values_to_be_in_set"),
    (lambda ds: ds.manifest.loc.__setitem__((0, "origin"), None), "expect_column_values_to_not_be_null"),
    (lambda ds: ds.images.__setitem__(0, 0), "expect_column_values_to_be_between"),
])
def test_broken_manifests_and_images_fail_integrity(break_it, expectation, validate_dataset):
    ds = make_toy_dataset()
    break_it(ds)
    result = validate_dataset(ds, PRIOR, rho=0.01)
    assert not result.integrity_ok
    assert expectation in {o.expectation for o in result.failures("integrity")}
    with pytest.raises(DataError, match="integrity checks"):
        result.raise_for_integrity()


def test_wrong_split_sizes_and_image_shape_fail_integrity(validate_dataset):
    ds = make_toy_dataset()
    assert not validate_dataset(ds, PRIOR, rho=0.01, expected_sizes={"train": 999}).integrity_ok
    assert not validate_dataset(ds, PRIOR, rho=0.01, image_shape=(28, 28, 1)).integrity_ok


def test_rho_must_be_positive(validate_dataset):
    with pytest.raises(ValueError, match="rho must be positive"):
        validate_dataset(make_toy_dataset(), PRIOR, rho=0)
