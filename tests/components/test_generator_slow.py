"""The default generator on the real default data (marked slow: FAIRFORGET_SLOW=1; needs the prepared data in data/).

Trains ``GeneratorConfig()`` exactly as the pipeline does (about 12 minutes on 2 CPU cores) and judges it with the
pipeline's own evaluation (``evaluate_generator``: reference-classifier judge, CAS, FID, near-copies, diversity).
"""

from __future__ import annotations

import pytest

from fairforget.components.generator import GeneratorConfig, train_generator
from fairforget.components.quality import evaluate_generator

# The target is conditional accuracy >= 0.95 on the mean of 3 seeds: met (0.955; per seed 0.951, 0.941, 0.975 in
# docs/results.md). One run of one seed is held to 0.94, since seeds and the judge's retraining move it by about 0.01.
CONDITIONAL_ACCURACY_FLOOR = 0.94
CLASS_ACCURACY_FLOOR = 0.70  # every class; the weakest measured: Shirt 0.78-0.80 (the former generator: 0.30)
CAS_RATIO_FLOOR = 0.88  # measured 0.89-0.92 (target 0.95, not reached on 2 cores; the former generator: 0.79)


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
