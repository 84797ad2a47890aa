"""The GPU check script: it refuses to pretend without CUDA, and its measuring path runs end to end (on the CPU,
with a tiny pixel UNet on toy data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tools import gpu_check
from fairforget.components.dataset import make_toy_dataset
from fairforget.components.generator import tiny_config, train_generator
from fairforget.components.quality import QualityConfig


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_refuses_with_one_line_and_exit_code_2(capsys, tmp_path):
    assert gpu_check.main(["--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no CUDA device") and "\n" not in err


def test_measure_trains_the_pixel_unet_and_reports_every_row():
    dataset = make_toy_dataset()
    config = tiny_config(architecture="pixel_unet")
    row = gpu_check.measure(lambda: train_generator(dataset, config=config, progress=False), dataset,
                            QualityConfig(reference_epochs=1, cas_epochs=1, eval_per_class=6, kid_subset_size=10,
                                          kid_subsets=2, grid_per_class=2), sample_images=12)
    assert row["architecture"] == "pixel_unet"
    for key in gpu_check.ROWS:
        assert np.isfinite(row[key]), key
    assert row["conditional_accuracy_min"] == min(row["per_class_conditional_accuracy"].values())
    table = gpu_check.format_table({"pixel_unet": row})
    assert all(key in table for key in gpu_check.ROWS) and ">= 0.95" in table
