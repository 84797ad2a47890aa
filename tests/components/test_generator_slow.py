"""The default generator and the DP generator on the real default data (marked slow: FAIRFORGET_SLOW=1; needs the
prepared data in data/).

Trains ``GeneratorConfig()`` exactly as the pipeline does and judges it with the pipeline's own evaluation
(``evaluate_generator``: reference-classifier judge, CAS, FID, near-copies, diversity); with its evaluation the
default's test took 14 minutes on 2 CPU cores shared with the fast suite (``FAIRFORGET_SLOW=1 pytest -m slow -k
default``; 20 minutes before the generator trained in bf16).
"""

from __future__ import annotations

import pytest

from fairforget.components.generator.config import dp_preset
from fairforget.components.generator import GeneratorConfig, train_generator
from fairforget.components.generator.audit import audit_generator_on_splits
from fairforget.components.mia.certify import CERTIFIED, Tolerance
from fairforget.components.quality import evaluate_generator

# Floors a little under what the default (autoencoder 64-128 for 60 epochs, v-prediction, Min-SNR-5, denoiser
# dropout 0.1, bf16 training where native, guidance 3 in the noise levels (0, 4.5]) measured on the default data: over
# three seeds (the study, one thread each; docs/generator.md) conditional accuracy 0.957-0.970, weakest class
# 0.855-0.88, CAS ratio 0.959-0.975, FID 5.3-6.2, diversity ratio 0.842-0.864 (seed 0 is the generator this test
# trains, one thread: it measured 0.957, Shirt 0.855, 0.959, 5.30, 0.862); in a fresh `make run` (seed 0, two
# threads, another draw) 0.966, Shirt 0.84, 0.960, 4.5, 0.864. Targets: 0.95 / every class 0.80 / 0.95 / 5 / 0.8;
# all but FID are met on every seed and asserted as such.
CONDITIONAL_ACCURACY_FLOOR = 0.95
CLASS_ACCURACY_FLOOR = 0.80  # every class (the epsilon objective's Shirt: 0.825-0.84; the 30-epoch generator's: 0.60)
CAS_RATIO_FLOOR = 0.95  # guided at every step: 0.925-0.953
DIVERSITY_RATIO_FLOOR = 0.82  # guided at every step: 0.820-0.848
FID_CEILING = 7.0  # guided at every step: 8.1-11.3


@pytest.mark.slow
def test_the_default_generator_holds_its_measured_quality_on_real_data(real_dataset):
    data = real_dataset
    generator = train_generator(data, config=GeneratorConfig(), progress=False)
    report = evaluate_generator(generator, data)
    print({k: round(v, 4) for k, v in report.metrics.items()}, report.per_class_accuracy)
    assert report.metrics["conditional_accuracy"] >= CONDITIONAL_ACCURACY_FLOOR
    assert min(report.per_class_accuracy.values()) >= CLASS_ACCURACY_FLOOR, report.per_class_accuracy
    assert report.metrics["near_copy_fraction"] < 0.01  # it does not copy its training images
    assert report.metrics["cas_ratio"] >= CAS_RATIO_FLOOR
    assert report.metrics["diversity_ratio"] >= DIVERSITY_RATIO_FLOOR
    assert report.metrics["fid"] <= FID_CEILING


# The DP generator (epsilon 10, public pre-training, the recipe of docs/generator.md) measured on the default data,
# seed 0, one thread: conditional accuracy 0.986, CAS ratio 0.919, FID 10.5, membership AUC 0.518 (bound 0.525).
DP_CONDITIONAL_ACCURACY_FLOOR = 0.95
DP_CAS_RATIO_FLOOR = 0.89
DP_FID_CEILING = 14.0


@pytest.mark.slow
def test_the_dp_generator_holds_its_measured_quality_and_epsilon_on_real_data(real_dataset):
    data = real_dataset
    generator = train_generator(data, config=dp_preset(dp_epsilon=10.0), progress=False)
    summary = generator.training_summary
    assert summary["privacy"] == "dp" and summary["dp_epsilon"] <= 10.0  # the accountant's epsilon, not the target
    assert summary["autoencoder_images"] == len(data.split("reference"))  # the autoencoder saw public images only
    report = evaluate_generator(generator, data)
    print({k: round(v, 4) for k, v in report.metrics.items()}, report.per_class_accuracy)
    assert report.metrics["conditional_accuracy"] >= DP_CONDITIONAL_ACCURACY_FLOOR
    assert report.metrics["near_copy_fraction"] < 0.01
    assert report.metrics["cas_ratio"] >= DP_CAS_RATIO_FLOOR
    assert report.metrics["fid"] <= DP_FID_CEILING
    # its membership audit is certified: every record of S against as many unseen ones, cross-fitted (the make
    # run's DP generator: AUC upper bound 0.515, TPR@1%FPR upper bound 0.0145; docs/generator.md)
    audit = audit_generator_on_splits(generator, data)
    assert audit.certificate().verdict(Tolerance()) == CERTIFIED, audit.summary()
