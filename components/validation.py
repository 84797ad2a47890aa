"""The Great Expectations (GX Core 1.x) suites that validate a prepared data set.

Two suites, two severities:
- ``integrity`` (a failure stops the run): schema, unique ids (which also makes the splits disjoint, since an id
  names one source image), no nulls, labels / class names / superclasses / splits / origins in their sets, every
  image with the expected shape and pixel range, and split sizes as configured.
- ``balance`` (a failure is a *finding*, recorded, not raised): per debiased attribute,
  ``ExpectColumnKLDivergenceToBeLessThan`` on the train split against the prior, threshold rho. Note GX computes
  KL(observed || prior), the reverse of the paper's KL(prior || observed) that ``components.bias`` reports;
  both are logged, each named for its direction.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from fairforget.components.dataset import MANIFEST_COLUMNS, ORIGINS, SPLITS, DataError, Dataset
from fairforget.components.progress import bars_wanted
from fairforget.errors import ConfigError


@dataclass
class ExpectationOutcome:
    suite: str
    expectation: str
    column: str | None
    success: bool
    observed: object


@dataclass
class ValidationResult:
    """Outcomes of both suites, and where GX wrote its Data Docs site (``docs_dir``, may be None)."""

    outcomes: list[ExpectationOutcome]
    docs_dir: Path | None = None
    raw: dict = field(default_factory=dict)

    @property
    def integrity_ok(self) -> bool:
        return all(o.success for o in self.outcomes if o.suite == "integrity")

    @property
    def balanced(self) -> bool:
        return all(o.success for o in self.outcomes if o.suite == "balance")

    def failures(self, suite: str | None = None) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and (suite is None or o.suite == suite)]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([o.__dict__ for o in self.outcomes])

    def raise_for_integrity(self, fix: str = "Prepare it again (`mlflow run . -e prepare --env-manager local`) "
                                             "or fix the source files") -> None:
        """Raise ``DataError`` naming the first broken expectations, then ``fix``, when the integrity suite failed."""
        broken = self.failures("integrity")
        if broken:
            names = "; ".join(f"{o.expectation}({o.column}) observed {o.observed!r}" for o in broken[:3])
            raise DataError(f"the data set failed {len(broken)} integrity checks: {names}. {fix}")


def image_statistics(images: np.ndarray) -> pd.DataFrame:
    """Per-image shape and pixel range, (N, 5): height, width, channels, pixel_min, pixel_max."""
    flat = images.reshape(len(images), -1)
    return pd.DataFrame({
        "height": images.shape[1], "width": images.shape[2], "channels": images.shape[3],
        "pixel_min": flat.min(axis=1).astype(int), "pixel_max": flat.max(axis=1).astype(int),
        "dtype_ok": images.dtype == np.uint8,
    }, index=range(len(images)))


def validate_dataset(dataset: Dataset, priors: Mapping[str, Mapping[str, float]], *, rho: float,
                     expected_sizes: Mapping[str, int] | None = None, image_shape: tuple[int, ...] | None = None,
                     docs_root: str | os.PathLike | None = None) -> ValidationResult:
    """Run both suites on ``dataset``. ``priors``: {attribute: {value: p}} for the balance suite (train split).

    ``expected_sizes``: {split: count} (checked only for splits named). ``image_shape``: (H, W, C) expected.
    ``docs_root``: folder for the GX project and its Data Docs (when None, a new temporary folder that the caller
    owns and removes: ``docs_dir`` lies inside it).
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    if rho <= 0:
        raise ConfigError(f"rho must be positive, got {rho}")
    manifest = dataset.manifest
    frame = pd.concat([manifest.reset_index(drop=True), image_statistics(dataset.images)], axis=1)
    shape = tuple(image_shape) if image_shape is not None else tuple(dataset.images.shape[1:])

    integrity = [gxe.ExpectTableColumnsToMatchSet(column_set=list(MANIFEST_COLUMNS), exact_match=False)]
    integrity += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in manifest.columns]
    integrity += [
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeInSet(column="origin", value_set=list(ORIGINS)),
        gxe.ExpectColumnValuesToBeBetween(column="label", min_value=0, max_value=dataset.num_classes - 1),
        gxe.ExpectColumnValuesToBeInSet(column="class_name", value_set=list(dataset.class_names)),
        gxe.ExpectColumnPairValuesToBeInSet(
            column_A="label", column_B="class_name",
            value_pairs_set=[(i, c) for i, c in enumerate(dataset.class_names)]),
        gxe.ExpectColumnValuesToBeInSet(column="height", value_set=[shape[0]]),
        gxe.ExpectColumnValuesToBeInSet(column="width", value_set=[shape[1]]),
        gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[shape[2]]),
        gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=255),
        gxe.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=1, max_value=255),
        gxe.ExpectColumnValuesToBeInSet(column="dtype_ok", value_set=[True]),
    ]
    if dataset.superclass_of:  # empty when the superclass is a per-image attribute (CelebA)
        integrity += [
            gxe.ExpectColumnValuesToBeInSet(column="superclass", value_set=sorted(set(dataset.superclass_of.values()))),
            gxe.ExpectColumnPairValuesToBeInSet(column_A="class_name", column_B="superclass",
                                                value_pairs_set=list(dataset.superclass_of.items())),
        ]

    sizes = pd.DataFrame({"split": list(SPLITS)})
    sizes["count"] = [int((manifest["split"] == s).sum()) for s in SPLITS]
    expected = dict(expected_sizes or {})
    sizes["expected"] = [int(expected.get(s, c)) for s, c in zip(SPLITS, sizes["count"])]
    size_checks = [gxe.ExpectColumnPairValuesToBeEqual(column_A="count", column_B="expected")]

    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    balance = []
    for attribute, prior in priors.items():
        if attribute not in train.columns:
            raise DataError(f"attribute {attribute!r} is not a manifest column; columns: {list(train.columns)}")
        values = sorted(prior)
        balance.append(gxe.ExpectColumnKLDivergenceToBeLessThan(
            column=attribute, threshold=rho,
            partition_object={"values": values, "weights": [float(prior[v]) for v in values]}))

    owned_tmp = None
    if docs_root is None:
        owned_tmp = tempfile.mkdtemp(prefix="fairforget-gx-")
        docs_root = owned_tmp
    context = gx.get_context(mode="file", project_root_dir=str(docs_root))
    context.variables.progress_bars = ProgressBarsConfig(globally=bars_wanted())  # a terminal's stderr only
    source = context.data_sources.add_or_update_pandas("fairforget")
    outcomes: list[ExpectationOutcome] = []
    raw: dict = {}
    runs = [("integrity", "manifest", integrity, frame), ("integrity", "split_sizes", size_checks, sizes),
            ("balance", "train_split", balance, train)]
    for suite_name, asset_name, expectations, df in runs:
        if not expectations:
            continue
        asset = source.add_dataframe_asset(asset_name)
        batch = asset.add_batch_definition_whole_dataframe(f"{asset_name}-all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{suite_name}-{asset_name}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite_name}-{asset_name}", data=batch, suite=suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"{suite_name}-{asset_name}", validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data-docs")]))
        result = checkpoint.run(batch_parameters={"dataframe": df})
        raw[f"{suite_name}-{asset_name}"] = result.describe_dict()
        for run_result in result.run_results.values():
            for item in run_result.results:
                kwargs = item.expectation_config.kwargs
                outcomes.append(ExpectationOutcome(suite_name, item.expectation_config.type,
                                                   kwargs.get("column") or kwargs.get("column_A"),
                                                   bool(item.success), _short(item.result.get("observed_value",
                                                   item.result.get("unexpected_count")))))
    docs = Path(docs_root) / "gx" / "uncommitted" / "data_docs" / "local_site"
    return ValidationResult(outcomes, docs if docs.is_dir() else None, raw)


def validate_integrity(dataset: Dataset, *, expected_sizes: Mapping[str, int] | None = None) -> ValidationResult:
    """Only the ``integrity`` suite (no balance, no Data Docs kept): the check a freshly prepared data set passes
    before it replaces the current one. ``expected_sizes`` as in ``validate_dataset``."""
    with tempfile.TemporaryDirectory(prefix="fairforget-gx-") as docs_root:
        result = validate_dataset(dataset, {}, rho=1.0, expected_sizes=expected_sizes, docs_root=docs_root)
    return ValidationResult(result.outcomes, None, result.raw)


def _short(value: object) -> object:
    if isinstance(value, (list, tuple)) and len(value) > 10:
        return list(value[:10]) + ["..."]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
