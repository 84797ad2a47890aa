"""Several debiased attributes, jointly (issue #14 part 4): the raked target and the dependence measure, checked
against closed forms, scipy and scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy
from sklearn.metrics import mutual_info_score

from fairforget.components.bias import measure_bias, measure_dependence, mutual_information
from fairforget.components.priors import build_target, rake_joint
from fairforget.errors import ConfigError

# The training split: 2000 images, 80% "big" (classes a, b) of which 17% inverted, 20% "small" (c, d) of
# which 83% inverted.
INVERTED = {"a": (800, 136), "b": (800, 136), "c": (200, 166), "d": (200, 166)}  # class: (count, inverted)
SUPERCLASS = {"a": "big", "b": "big", "c": "small", "d": "small"}


def correlated_manifest(inverted: dict = INVERTED) -> pd.DataFrame:
    rows = []
    for name, (count, n_inverted) in inverted.items():
        rows += [(SUPERCLASS[name], name, "yes" if j < n_inverted else "no") for j in range(count)]
    return pd.DataFrame(rows, columns=["superclass", "class_name", "inverted"])


def celeba_manifest(drop: tuple | None = None) -> pd.DataFrame:
    """CelebA-style: label Smiling, superclass = the label, attributes Young and Male, both tied to the label."""
    counts = {("Smiling", "Young", "not_Male"): 40, ("Smiling", "Young", "Male"): 10,
              ("Smiling", "not_Young", "not_Male"): 10, ("Smiling", "not_Young", "Male"): 4,
              ("not_Smiling", "Young", "not_Male"): 8, ("not_Smiling", "Young", "Male"): 10,
              ("not_Smiling", "not_Young", "not_Male"): 6, ("not_Smiling", "not_Young", "Male"): 24}
    rows = [key for key, n in counts.items() if key != drop for _ in range(n)]
    frame = pd.DataFrame(rows, columns=["class_name", "Young", "Male"])
    return frame.assign(superclass=frame["class_name"])


def test_two_correlated_attributes_get_both_marginals_and_independence():
    manifest = correlated_manifest()
    target = build_target(manifest, ["superclass", "inverted"])
    priors = target.priors()
    assert priors["superclass"] == pytest.approx({"big": 0.5, "small": 0.5}, abs=1e-9)
    assert priors["inverted"] == pytest.approx({"no": 0.5, "yes": 0.5}, abs=1e-9)
    # the joint is the product: every (superclass, inverted) pair a quarter
    assert target.attribute_joint() == pytest.approx({"big|no": 0.25, "big|yes": 0.25, "small|no": 0.25,
                                                      "small|yes": 0.25}, abs=1e-9)
    # within each group the classes keep S's proportions within their superclass (a:b = 1:1, c:d = 1:1)
    joint = target.joint.set_index(["superclass", "inverted", "class_name"])["probability"]
    assert joint[("big", "yes", "a")] == pytest.approx(0.125) and joint[("small", "no", "d")] == pytest.approx(0.125)
    # the bias BEFORE is the real split's against 50/50: exactly KL(0.5/0.5 || 0.8/0.2) = 0.2231, not 0.183
    report = measure_bias(manifest, priors)
    assert report.kl("superclass") == pytest.approx(entropy([0.5, 0.5], [0.8, 0.2]), rel=1e-12)
    assert report.kl("superclass") == pytest.approx(0.2231, abs=5e-5)
    assert report.kl("inverted") == pytest.approx(entropy([0.5, 0.5], [1 - 0.302, 0.302]), rel=1e-12)


def test_raking_keeps_the_seed_odds_ratio_like_the_closed_form():
    seed = pd.DataFrame({"row": ["r0", "r0", "r1", "r1"], "col": ["c0", "c1", "c0", "c1"],
                         "probability": [0.4, 0.1, 0.1, 0.4]})
    fitted = rake_joint(seed, {"row": {"r0": 0.3, "r1": 0.7}, "col": {"c0": 0.6, "c1": 0.4}})
    # closed form: Q = [[x, 0.3 - x], [0.6 - x, 0.1 + x]] with the seed's odds ratio 16:
    # x (0.1 + x) = 16 (0.3 - x)(0.6 - x)  <=>  15 x^2 - 14.5 x + 2.88 = 0, the root in (0, 0.3)
    x = next(r.real for r in np.roots([15.0, -14.5, 2.88]) if 0 < r.real < 0.3)
    np.testing.assert_allclose(fitted["probability"], [x, 0.3 - x, 0.6 - x, 0.1 + x], atol=1e-9)
    assert fitted["probability"].sum() == pytest.approx(1.0)


def test_raking_a_seed_that_already_fits_changes_nothing():
    seed = pd.DataFrame({"u": ["p", "p", "q", "q"], "v": ["s", "t", "s", "t"], "probability": [0.1, 0.3, 0.15, 0.45]})
    fitted = rake_joint(seed, {"u": {"p": 0.4, "q": 0.6}, "v": {"s": 0.25, "t": 0.75}})
    np.testing.assert_allclose(fitted["probability"], seed["probability"], atol=1e-15)


def test_raking_refuses_a_value_no_combination_has():
    seed = pd.DataFrame({"u": ["p", "q"], "probability": [0.5, 0.5]})
    with pytest.raises(ConfigError, match=r"asks for u=\['r'\], which no combination of the data has"):
        rake_joint(seed, {"u": {"p": 0.4, "r": 0.6}})


def test_marginals_no_distribution_on_the_data_can_meet_are_refused():
    # "big" images are never inverted, so at most 20% can be inverted: 50% inverted is out of reach
    manifest = correlated_manifest({"a": (800, 0), "b": (800, 0), "c": (200, 166), "d": (200, 166)})
    with pytest.raises(ConfigError, match="cannot be met.*the data has no superclass=big with inverted=yes"):
        build_target(manifest, ["superclass", "inverted"], prior="superclass=big:0.8,small:0.2;inverted=no:0.5,yes:0.5")


def test_celeba_style_young_and_male_become_independent_of_each_other_and_of_the_label():
    target = build_target(celeba_manifest(), ["Young", "Male"])
    assert target.priors() == {"Young": pytest.approx({"Young": 0.5, "not_Young": 0.5}, abs=1e-9),
                               "Male": pytest.approx({"Male": 0.5, "not_Male": 0.5}, abs=1e-9)}
    joint = target.joint.set_index(["Young", "Male", "class_name"])["probability"]
    smiling = 64 / 112  # the label keeps S's marginal and is independent of both attributes
    for young in ("Young", "not_Young"):
        for male in ("Male", "not_Male"):
            assert joint[(young, male, "Smiling")] == pytest.approx(0.25 * smiling, abs=1e-9)
    table = target.joint.groupby(["Young", "class_name"])["probability"].sum().unstack().to_numpy()
    assert mutual_information_of(table) == pytest.approx(0.0, abs=1e-12)


def test_a_combination_the_data_lacks_is_left_out_and_the_marginals_still_met():
    missing = ("Smiling", "not_Young", "Male")
    target = build_target(celeba_manifest(drop=missing), ["Young", "Male"])
    assert target.priors()["Young"] == pytest.approx({"Young": 0.5, "not_Young": 0.5}, abs=1e-9)
    assert target.priors()["Male"] == pytest.approx({"Male": 0.5, "not_Male": 0.5}, abs=1e-9)
    joint = target.joint.set_index(["class_name", "Young", "Male"])["probability"]
    assert missing not in joint.index and len(joint) == 7
    # the I-projection: target / seed is a product of one factor per Young value and one per Male value
    seed = 0.25 * joint.index.get_level_values("class_name").map({"Smiling": 60 / 108, "not_Smiling": 48 / 108})
    log_ratio = np.log(joint.to_numpy() / seed.to_numpy())
    design = np.column_stack([np.ones(len(joint)),
                              joint.index.get_level_values("Young") == "Young",
                              joint.index.get_level_values("Male") == "Male"]).astype(float)
    residual = log_ratio - design @ np.linalg.lstsq(design, log_ratio, rcond=None)[0]
    np.testing.assert_allclose(residual, 0.0, atol=1e-9)


def test_a_single_attribute_target_is_built_as_before():
    manifest = correlated_manifest()
    target = build_target(manifest, ["inverted"])
    # one attribute: D(a) * P_S(class | a), the dependence of S kept (today's behaviour, untouched)
    joint = target.joint.set_index(["inverted", "class_name"])["probability"]
    assert joint[("yes", "c")] == pytest.approx(0.5 * 166 / 604)


def test_dependence_against_scikit_learn_and_by_hand():
    manifest = correlated_manifest()
    report = measure_dependence(manifest, ["superclass", "inverted"])
    assert [a.attribute for a in report.attributes] == ["inverted"]  # the class determines the superclass
    assert report.mutual_information("inverted") == pytest.approx(
        mutual_info_score(manifest["inverted"], manifest["class_name"]), rel=1e-12)
    assert mutual_information(manifest["inverted"], manifest["superclass"]) == pytest.approx(
        mutual_info_score(manifest["inverted"], manifest["superclass"]), rel=1e-12)
    table = report.by_name("inverted").table
    assert table.loc["small", "yes"] == pytest.approx(0.83) and table.loc["big", "no"] == pytest.approx(0.83)
    assert report.as_metrics("before") == {"bias/mi/inverted/before": report.mutual_information("inverted")}
    rows = report.table()
    assert set(rows.columns) >= {"attribute", "superclass", "value", "count", "proportion"}
    assert int(rows.query("superclass == 'small' and value == 'yes'")["count"].iloc[0]) == 332


def mutual_information_of(table: np.ndarray) -> float:
    """I(rows; columns) of a probability table, straight from the definition."""
    joint = table / table.sum()
    rows, cols = joint.sum(axis=1), joint.sum(axis=0)
    return float(sum(joint[i, j] * np.log(joint[i, j] / (rows[i] * cols[j]))
                     for i in range(joint.shape[0]) for j in range(joint.shape[1]) if joint[i, j] > 0))
