"""The results study (experiments/study.py, study_report.py) on the toy pipeline: its baselines, its checks, its page."""

import dataclasses
import json

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from experiments.study import BASELINES, oracle_success, study_one_config
from fairforget.components.baselines import oversampled_training_set
from experiments.study_report import RESULTS_DIR, default_page, interval, render_report, write_report
from fairforget.components.dataset import make_toy_dataset
from tests.pipelines.test_pipeline import tiny_pipeline


def test_oracle_success_is_the_best_threshold_on_the_evaluation_set():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(60), np.zeros(60)]
    scores = labels * 0.5 + rng.normal(size=120)
    fpr, tpr, _ = roc_curve(labels, scores)
    brute = max(((scores[labels == 1] >= t).mean() + (scores[labels == 0] < t).mean()) / 2
                for t in np.r_[scores, np.inf])
    assert np.isclose(oracle_success(fpr, tpr), brute)


def test_oversampling_repeats_real_images_up_to_the_target_counts():
    train = make_toy_dataset(per_class_train=(6, 6, 2, 3)).split("train")
    out = oversampled_training_set(train, [6, 6, 5, 3])
    assert np.bincount(out.labels).tolist() == [6, 6, 5, 3] and len(set(out.ids)) == len(out)
    copies = out.select(np.char.find(out.ids.astype(str), "~copy") >= 0)
    originals = train.by_ids([i.split("~")[0] for i in copies.ids])
    assert np.array_equal(copies.images, originals.images) and np.array_equal(copies.labels, originals.labels)


def test_student_t_interval_matches_scipy():
    from scipy import stats

    values = [0.70, 0.74, 0.71]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    mean, half = interval(values)
    assert np.isclose(mean - half, low) and np.isclose(mean + half, high)


@pytest.mark.parametrize("folder", [RESULTS_DIR, *sorted(RESULTS_DIR.glob("privacy-*"))],
                         ids=lambda folder: folder.name)
def test_each_committed_results_page_is_what_its_saved_results_and_notes_write(folder, tmp_path):
    page = default_page(folder)
    written = render_report(folder, page, tmp_path)  # figures drawn aside: the committed ones stay untouched
    assert written == page.read_text(), (
        f"{page} is stale against {folder}'s seed files and notes: run python -m experiments.study_report"
        + ("" if folder == RESULTS_DIR else f" --results-dir {folder.relative_to(RESULTS_DIR.parents[1])}"))


@pytest.mark.integration  # the whole pipeline and its baselines: `make test-all`
def test_study_reproduces_the_pipeline_and_writes_the_page(tracking_uri, tmp_path):
    config = tiny_pipeline(tmp_path, min_accuracy=0.0)
    # raises when the retrained S* model differs from the pipeline's iteration 0
    record = study_one_config(config, tmp_path / "work", tmp_path / "results" / "figures" / "seed-0")
    baselines = record["baselines"]
    assert set(baselines) == set(BASELINES)
    assert baselines["oversampled"]["class_counts"] == baselines["debiased"]["class_counts"]
    assert baselines["oversampled"]["train_size"] > baselines["biased"]["train_size"]
    for results in baselines.values():
        for attack in results["attacks"].values():
            assert attack["oracle_success"] >= attack["success"] - 1e-9
    assert [row["iteration"] for row in record["iterations"]] == [0, 1, 2]
    assert record["generator"]["generator/conditional_accuracy"] >= 0
    assert (tmp_path / "results" / "figures" / "seed-0" / "sample_grid.png").is_file()

    # a second call reuses the finished pipeline run instead of running it again
    again = study_one_config(config, tmp_path / "work", None)
    assert again["summary"]["run_id"] == record["summary"]["run_id"]

    (tmp_path / "results" / "seed-0.json").write_text(json.dumps({**record, "seed": 0}, default=str))
    page = write_report(tmp_path / "results", tmp_path / "results.md").read_text()
    for heading in ("Bias before and after", "Table I", "Fig. 12", "The generator", "oracle"):
        assert heading in page
    assert (tmp_path / "results" / "figures" / "fig12_attacks.png").is_file()
    assert "5a." not in page  # no earlier study to compare with
    assert "4b. Certification per seed" in page and "Seed 0: the retained originals" in page

    # an earlier study of the same setting, kept in generator-*/, gets a row of the trade-off table
    (tmp_path / "results" / "generator-old").mkdir()
    (tmp_path / "results" / "generator-old" / "seed-0.json").write_text(json.dumps({**record, "seed": 0}, default=str))
    page = write_report(tmp_path / "results", tmp_path / "results.md").read_text()
    assert "5a. What a better generator buys" in page and "(this page)" in page


def _study_record(minority_debiased, minority_oversampled, worst_debiased, worst_oversampled, accuracies):
    """The fields of a seed's record that the trade-off table reads."""
    def metrics(minority, worst):
        return {"acc/apparel": minority, "acc/worst_class": worst}
    return {"config": {"generator": {"latent_dim": 64, "autoencoder_perceptual_weight": 1.0},
                       "data": {"majority_superclass": "accessories"}},
            "superclass_of": {"Shirt": "apparel", "Bag": "accessories"},
            "generator": {"generator/train_seconds": 600.0, "generator/cas_ratio": 0.9, "generator/fid": 10.0},
            "baselines": {"debiased": {"metrics": metrics(minority_debiased, worst_debiased)},
                          "oversampled": {"metrics": metrics(minority_oversampled, worst_oversampled)}},
            "iterations": [{"iteration": i, "acc/test": a} for i, a in enumerate(accuracies)]}


def test_the_tradeoff_table_shows_s_star_against_oversampling_and_the_drop():
    from experiments.study_report import section_tradeoff

    current = [_study_record(0.80, 0.70, 0.60, 0.50, [0.85, 0.84, 0.83])]
    earlier = [_study_record(0.60, 0.70, 0.40, 0.50, [0.80, 0.70, 0.65])]
    earlier[0]["config"]["generator"] = {"latent_dim": 32, "autoencoder_perceptual_weight": 0.0}
    assert section_tradeoff(current, []) == ""
    lines = section_tradeoff(current, [("latent 32, pixel loss", earlier)]).splitlines()
    old, new = [line for line in lines if line.startswith("| latent")]
    # S* - oversampled on the minority and the worst class; S* - in shards (none in these studies); iteration 0,
    # last, drop
    assert old.split(" | ")[4:11] == ["-0.100", "-0.100", "n/a", "n/a", "0.800", "0.650", "0.150 |"]
    assert new.startswith("| latent 64, feature matching 1 (this page)")
    assert new.split(" | ")[4:11] == ["0.100", "0.100", "n/a", "n/a", "0.850", "0.830", "0.020 |"]
    # a study with the in-shards baseline gets its differences; the earlier one keeps n/a
    current[0]["baselines"]["oversampled_in_shards"] = {"metrics": {"acc/apparel": 0.75, "acc/worst_class": 0.45}}
    lines = section_tradeoff(current, [("latent 32, pixel loss", earlier)]).splitlines()
    new = [line for line in lines if line.startswith("| latent 64")][0]
    assert new.split(" | ")[6:8] == ["0.050", "0.150"]
    current[0]["config"]["generator"]["autoencoder_epochs"] = 60
    assert "| latent 64, feature matching 1, 60 autoencoder epochs (this page)" in section_tradeoff(
        current, [("latent 32, pixel loss", earlier)])
    current[0]["config"]["generator"].update(prediction_type="v_prediction", loss_weighting="min_snr",
                                             min_snr_gamma=5.0)
    assert ("| latent 64, feature matching 1, 60 autoencoder epochs, v-prediction, Min-SNR-5 (this page)"
            in section_tradeoff(current, [("latent 32, pixel loss", earlier)]))
    # the autoencoder's width and the denoiser's dropout, once they differ from what every earlier study had
    current[0]["config"]["generator"].update(autoencoder_channels=[32, 64], denoiser_dropout=0.0)
    assert "Min-SNR-5 (this page)" in section_tradeoff(current, [("latent 32, pixel loss", earlier)])
    current[0]["config"]["generator"].update(autoencoder_channels=[64, 128], denoiser_dropout=0.1)
    assert ("| latent 64, feature matching 1, 60 autoencoder epochs, autoencoder 64-128, v-prediction, Min-SNR-5, "
            "denoiser dropout 0.1 (this page)" in section_tradeoff(current, [("latent 32, pixel loss", earlier)]))
    # the training precision and the guidance interval, once they are not fp32 and every step (JSON: lists)
    current[0]["config"]["generator"].update(precision="auto", guidance_interval=[0.0, 4.5])
    assert ("denoiser dropout 0.1, precision auto, guidance in (0, 4.5] (this page)"
            in section_tradeoff(current, [("latent 32, pixel loss", earlier)]))
    current[0]["config"]["generator"].update(precision="fp32", guidance_interval=[0.0, float("inf")])
    assert "denoiser dropout 0.1 (this page)" in section_tradeoff(current, [("latent 32, pixel loss", earlier)])


def test_parallel_seeds_pin_one_thread_each(tmp_path):
    """Seeds run in parallel processes on shared cores: each generator and each shard gets one thread (two
    spin-waiting OpenMP threads per process collapse on a shared CPU), whatever the pipeline's own default."""
    from experiments.study import study_config
    from fairforget.pipelines.config import PipelineConfig

    config = study_config(1, tmp_path / "seed-1", iterations=5, forget_rate=0.2)
    assert config.generator.num_threads == 1 and config.sisa.threads_per_shard == 1
    assert config.sisa.executor == "serial" and config.generator.seed == 1
    assert PipelineConfig().generator.num_threads == 0  # the pipeline alone uses every core


def test_the_certification_section_shows_each_seeds_verdicts_first_certified_iteration_and_outcome():
    from experiments.study_report import certificate_cell, first_certified_iteration, section_certification

    def row(iteration, retained, forgotten):
        out = {"iteration": iteration, "data/forgotten_fraction": iteration / 2}
        for subset, (certified, too_few, n, auc, tpr) in (("retained", retained), ("forgotten", forgotten)):
            out.update({f"mia/{subset}/certified": certified, f"mia/{subset}/too_few": too_few,
                        f"mia/{subset}/n_members": n, f"mia/{subset}/auc_high": auc,
                        f"mia/{subset}/tpr_at_1pct_fpr_high": tpr})
        return out

    rows = [row(0, (0.0, 0.0, 1980, 0.572, 0.055), (1.0, 0.0, 0, 0.5, 0.0)),
            row(1, (1.0, 0.0, 990, 0.521, 0.017), (0.0, 1.0, 990, 0.540, 0.030)),
            row(2, (1.0, 0.0, 0, 0.5, 0.0), (0.0, 0.0, 1980, 0.538, 0.029))]
    assert certificate_cell(rows[0], "retained") == "not certified (AUC <= 0.572; TPR <= 0.055; 1980 audited)"
    assert certificate_cell(rows[1], "retained") == "**certified** (AUC <= 0.521; TPR <= 0.017; 990 audited)"
    # the strongest shown attack's AUC comes first where the record has it
    rows[0].update({"mia/retained/rmia/auc": 0.548, "mia/retained/mloss/auc": 0.51})
    assert certificate_cell(rows[0], "retained") == (
        "not certified (AUC 0.548, <= 0.572; TPR <= 0.055; 1980 audited)")
    assert certificate_cell(rows[1], "forgotten").startswith("too few") and certificate_cell(rows[2], "retained") == "empty"
    assert certificate_cell({"iteration": 0}, "retained") == "n/a"
    assert first_certified_iteration({"iterations": rows}) == 1
    assert first_certified_iteration({"iterations": rows[:1]}) is None
    record = {"seed": 7, "iterations": rows, "final": {"final/mia/retained/certified": 1.0,
                                                        "final/mia/forgotten/certified": 0.0,
                                                        "final/mia/forgotten/auc_high": 0.538},
              "summary": {"gate": "rejected", "gate_reason": "forgotten originals not certified"}}
    section = section_certification([record])
    assert "Seed 7: the retained originals certify at iteration 1" in section
    assert "forgotten not certified (AUC <= 0.538)" in section
    emptied = {**record, "final": {**record["final"], "final/mia/retained/n_members": 0.0}}
    assert "final audit: retained empty (the model holds none)" in section_certification([emptied])
    assert "gate: rejected: forgotten originals not certified" in section
    old = section_certification([{"seed": 0, "iterations": [{"iteration": 0}], "final": {}, "summary": {}}])
    assert "Not measured" in old



def test_the_generator_channel_section_compares_each_seed_under_each_generator_mode(tmp_path):
    """docs/results.md's section 4c: the study's own seeds (the pipeline's default generator, DP) beside the same
    seeds under the non-private generator and the public-only control, read from ``privacy-<mode>/``; the study
    command names a mode only when it is not the default."""
    from experiments.study import GENERATOR_MODES, study_config
    from experiments.study_report import default_generator_mode, mode_folder, section_generator_modes, study_command
    from fairforget.pipelines.config import PipelineConfig

    assert "Not measured yet" in section_generator_modes([], tmp_path)

    def record(seed, mode, forgotten_certified, auc_high):
        config = dataclasses.asdict(study_config(seed, tmp_path / f"seed-{seed}", 5, 0.2, generator=mode))
        return {"seed": seed, "config": config, "superclass_of": {"Shirt": "apparel", "Bag": "accessories"},
                "generator": {"generator/mia/auc": 0.51, "generator/mia/auc_ci_low": 0.49,
                              "generator/mia/auc_ci_high": 0.53,
                              **({"generator/dp_epsilon": 9.99} if mode != "none" else {})},
                "final": {"final/mia/forgotten/certified": forgotten_certified,
                          "final/mia/forgotten/auc_high": auc_high,
                          "final/mia/forgotten/tpr_at_1pct_fpr_high": 0.012,
                          "final/mia/forgotten/n_members": 3960.0,
                          "final/mia/canary/epsilon_lower_bound": 0.4},
                "summary": {"gate": "passed" if forgotten_certified else "rejected"},
                "iterations": [{"iteration": 5, "acc/test": 0.81, "acc/apparel": 0.7, "acc/worst_class": 0.5}]}

    # the study's default is the pipeline's default recipe
    assert default_generator_mode() == "dp" and PipelineConfig().generator.privacy == "dp"
    assert study_config(0, tmp_path, 5, 0.2).generator == study_config(0, tmp_path, 5, 0.2, generator="dp").generator
    assert study_config(0, tmp_path, 5, 0.2, generator="none").generator.privacy == "none"
    assert study_config(0, tmp_path, 5, 0.2, generator="public-only").generator.train_steps == 1
    assert study_config(0, tmp_path, 5, 0.2, generator="dp-public-labels").generator.public_labels
    assert not study_config(0, tmp_path, 5, 0.2).generator.public_labels  # the recipe's public images: unlabelled
    assert study_config(0, tmp_path, 5, 0.2, generator="public-only-public-labels").generator.public_labels
    assert set(GENERATOR_MODES) == {"none", "dp", "dp-public-labels", "public-only", "public-only-public-labels"}
    assert mode_folder(tmp_path, "dp") == tmp_path and mode_folder(tmp_path, "none") == tmp_path / "privacy-none"
    for mode, certified, auc_high in (("none", 0.0, 0.54), ("dp-public-labels", 1.0, 0.52),
                                      ("public-only-public-labels", 1.0, 0.52), ("public-only", 1.0, 0.52)):
        folder = mode_folder(tmp_path, mode)
        folder.mkdir()
        (folder / "seed-0.json").write_text(json.dumps(record(0, mode, certified, auc_high), default=str))
    section = section_generator_modes([record(0, "dp", 1.0, 0.52)], tmp_path)
    lines = [line for line in section.splitlines() if line.startswith("| 0 |")]
    assert [line.split(" | ")[1] for line in lines] == ["none", "dp-public-labels (epsilon 9.99)",
                                                        "public-only-public-labels (epsilon 9.99)",
                                                        "dp (epsilon 9.99)", "public-only (epsilon 9.99)"]
    assert "not certified (AUC <= 0.540, TPR <= 0.012; 3960 audited)" in lines[0]
    assert "**certified** (AUC <= 0.520" in lines[3]
    assert "0.510 [0.490, 0.530]" in lines[3] and lines[3].endswith("| passed |")
    assert "`python -m experiments.study --generator none`" in section
    # the non-private study's own page points at the comparison instead of repeating it
    assert "docs/results.md, section 4c" in section_generator_modes([record(0, "none", 0.0, 0.54)], tmp_path)
    dp_config, none_config = record(0, "dp", 1.0, 0.5)["config"], record(0, "none", 0.0, 0.5)["config"]
    assert study_command(dp_config, RESULTS_DIR, [0, 1, 2]) == "python -m experiments.study --seeds 0 1 2"
    assert study_command(none_config, RESULTS_DIR / "privacy-none", [0, 1, 2]) == (
        "python -m experiments.study --seeds 0 1 2 --generator none")
