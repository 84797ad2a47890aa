import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy

from fairforget.components.bias import attribute_distribution, bias_loss, kl_divergence, measure_bias


def test_kl_matches_the_papers_direction_and_scipy():
    prior, observed = np.array([0.5, 0.5]), np.array([0.8, 0.2])
    # KL(D || P) for an 80/20 data set against a 50/50 prior: 0.2231 (the figure).
    assert kl_divergence(prior, observed) == pytest.approx(0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2))
    assert kl_divergence(prior, observed) == pytest.approx(entropy(prior, observed), abs=1e-12)
    assert kl_divergence(prior, observed) == pytest.approx(0.2231, abs=1e-4)
    # The reverse direction (what Great Expectations computes) differs: 0.1927.
    assert entropy(observed, prior) == pytest.approx(0.1927, abs=1e-4)


def test_kl_is_infinite_when_the_data_lacks_a_value_the_prior_wants():
    assert kl_divergence(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == math.inf
    assert kl_divergence(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(math.log(2))


def test_attribute_distribution_counts_and_rejects_unknown_values():
    dist = attribute_distribution(["a", "b", "b", "b"], ["a", "b", "c"])
    np.testing.assert_allclose(dist, [0.25, 0.75, 0.0])
    with pytest.raises(ValueError, match="not among the categories"):
        attribute_distribution(["z"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        attribute_distribution([], ["a"])


def test_measure_bias_reports_each_attribute_and_the_total_loss():
    manifest = pd.DataFrame({"superclass": ["x"] * 80 + ["y"] * 20, "colour": ["r"] * 50 + ["g"] * 50})
    report = measure_bias(manifest, {"superclass": {"x": 0.5, "y": 0.5}, "colour": {"r": 0.5, "g": 0.5}})
    assert report.kl("superclass") == pytest.approx(0.22314, abs=1e-5)
    assert report.kl("colour") == pytest.approx(0.0, abs=1e-12)
    assert report.loss == pytest.approx(bias_loss([report.kl("superclass"), 0.0]))
    assert report.loss == pytest.approx(0.5 * 0.22314355 ** 2)
    assert not report.is_balanced(0.01)
    assert set(report.as_metrics()) == {"bias/kl/superclass", "bias/kl/colour", "bias/loss"}
    with pytest.raises(ValueError, match="not a column"):
        measure_bias(manifest, {"age": {"old": 1.0}})
    for prior in ({"x": 0.9, "y": 0.9}, {"x": 1.2, "y": -0.2}):  # not a probability distribution
        with pytest.raises(ValueError, match="sum to 1"):
            measure_bias(manifest, {"superclass": prior})
