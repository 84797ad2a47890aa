import numpy as np
import pandas as pd
import pytest

from fairforget.components.priors import MIMIC, UMDA, CompactGA, build_target, parse_explicit_prior


@pytest.fixture
def biased_manifest():
    # 80/20 superclasses; within "big" classes a:b = 3:1, within "small" c:d = 1:1.
    rows = [("big", "a")] * 60 + [("big", "b")] * 20 + [("small", "c")] * 10 + [("small", "d")] * 10
    return pd.DataFrame(rows, columns=["superclass", "class_name"])


def test_uniform_prior_with_mimic_keeps_within_superclass_proportions(biased_manifest):
    target = build_target(biased_manifest, ["superclass"], prior="uniform", structure="mimic")
    assert target.priors() == {"superclass": pytest.approx({"big": 0.5, "small": 0.5})}
    joint = target.joint.set_index("class_name")["probability"]
    assert joint["a"] == pytest.approx(0.375) and joint["b"] == pytest.approx(0.125)
    assert joint["c"] == pytest.approx(0.25) and joint["d"] == pytest.approx(0.25)


def test_explicit_prior_string_and_errors(biased_manifest):
    target = build_target(biased_manifest, ["superclass"], prior="superclass=big:0.3,small:0.7")
    assert target.marginal("superclass") == pytest.approx({"big": 0.3, "small": 0.7})
    with pytest.raises(ValueError, match="sums to 0.9"):
        build_target(biased_manifest, ["superclass"], prior="superclass=big:0.3,small:0.6")
    with pytest.raises(ValueError, match="does not contain"):
        build_target(biased_manifest, ["superclass"], prior="superclass=big:0.5,huge:0.5")
    with pytest.raises(ValueError, match="outside"):
        parse_explicit_prior({"superclass": {"big": 1.5, "small": -0.5}})
    with pytest.raises(ValueError, match="unknown prior"):
        build_target(biased_manifest, ["superclass"], prior="gaussian")
    with pytest.raises(ValueError, match="unknown structure"):
        build_target(biased_manifest, ["superclass"], structure="bayes-net")


def test_explicit_prior_from_json_file(tmp_path, biased_manifest):
    path = tmp_path / "prior.json"
    path.write_text('{"superclass": {"big": 0.25, "small": 0.75}}')
    assert build_target(biased_manifest, ["superclass"], prior=str(path)).marginal("superclass") == \
        pytest.approx({"big": 0.25, "small": 0.75})


def test_eda_models_against_direct_counts(biased_manifest):
    umda = UMDA(biased_manifest, ["superclass", "class_name"])
    np.testing.assert_allclose(umda.marginals["superclass"], [0.8, 0.2])
    # UMDA is a product of marginals: p(big, c) = 0.8 * 0.1 although S never has it.
    probe = pd.DataFrame({"superclass": ["big"], "class_name": ["c"]})
    assert umda.probability(probe)[0] == pytest.approx(0.8 * 0.1)
    mimic = MIMIC(biased_manifest, ["superclass", "class_name"], first="superclass")
    assert mimic.probability(probe)[0] == 0.0
    joint = mimic.joint().set_index(["superclass", "class_name"])["probability"]
    assert joint[("big", "a")] == pytest.approx(0.6) and joint.sum() == pytest.approx(1.0)
    cga = CompactGA(biased_manifest, ["superclass"], population_size=100, rounds=20000, seed=0)
    np.testing.assert_allclose(cga.marginals["superclass"], [0.8, 0.2], atol=0.08)


def test_eda_prior_is_estimated_from_the_reference_population(biased_manifest):
    population = pd.DataFrame([("big", "a"), ("big", "b"), ("small", "c"), ("small", "d")] * 10,
                              columns=["superclass", "class_name"])
    target = build_target(biased_manifest, ["superclass"], prior="mimic", reference_manifest=population)
    assert target.marginal("superclass") == pytest.approx({"big": 0.5, "small": 0.5})
    assert target.marginal("class_name") == pytest.approx({k: 0.25 for k in "abcd"})
    with pytest.raises(ValueError, match="reference_manifest"):
        build_target(biased_manifest, ["superclass"], prior="umda")
