"""bench_tradeoff: each point of the curve is computed from the figures it names."""

from __future__ import annotations

import pytest

from experiments.bench_tradeoff import COLUMNS, curve_point, format_curve


def test_point_subtracts_the_right_rows():
    quality = {"conditional_accuracy": 0.95, "cas_ratio": 0.9, "fid": 14.0, "diversity_ratio": 0.7,
               "near_copy_fraction": 0.0, "kid": 0.1}
    per_class = {"a": 0.99, "b": 0.78}
    augmented = {"acc/test": 0.82, "acc/minority": 0.72, "acc/worst_class": 0.55}
    synthetic = {"acc/test": 0.75, "acc/minority": 0.70, "acc/worst_class": 0.50}
    oversampled = {"acc/test": 0.85, "acc/minority": 0.78, "acc/worst_class": 0.60}
    point = curve_point(quality, per_class, 720.0, augmented, synthetic, oversampled)
    assert point["minutes"] == 12.0 and point["worst_class_conditional"] == 0.78
    assert point["s_star_minus_oversampled_minority"] == pytest.approx(-0.06)
    assert point["s_star_minus_oversampled_worst_class"] == pytest.approx(-0.05)
    assert point["synthetic_minus_s_star_test"] == pytest.approx(-0.07)
    assert "kid" not in point and set(point) == set(COLUMNS) | {"near_copy_fraction"}
    table = format_curve({"GEN": point})
    assert table.splitlines()[2].startswith("| GEN | 12.000 | 0.950 | 0.780 | 0.900 | 14.000 | 0.700 | -0.060 |")
