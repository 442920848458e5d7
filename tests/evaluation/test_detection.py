"""The detection benchmark plants what it says, on every kind of dataset view, and scores methods."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dataworth import InputError
from dataworth.cli import app
from dataworth.evaluation import datasets
from dataworth.evaluation.datasets import EvaluationSet, breast_cancer, digits
from dataworth.evaluation.detection import CORRUPTIONS, make_task, parse_corruption, run_detection
from dataworth.evaluation.metrics import detection_auprc, detection_auroc
from dataworth.valuation import Kairos


def toy_text_set() -> EvaluationSet:
    """A tiny text set whose featurizer counts the trigger token, so a re-embedding is visible."""
    texts = [f"doc {i} words here" for i in range(60)]
    y = np.array([i % 3 for i in range(60)])

    def featurize(docs):
        return np.array([[d.count("zqxv"), len(d)] for d in docs], dtype=np.float64)

    quotes = [f"a quotation, number {i}, from elsewhere entirely" for i in range(20)]
    return EvaluationSet("toy-text", featurize(texts), y, texts, "text", featurize, ((0, 1),), outliers=lambda: featurize(quotes))


@pytest.mark.parametrize("kind", CORRUPTIONS)
@pytest.mark.parametrize("make", [digits, breast_cancer, toy_text_set])
def test_tasks_plant_the_corruption_in_the_training_part_only(kind, make):
    if kind == "ood" and make is digits and not datasets.FASHION_MNIST.is_dir():
        pytest.skip("optional: make bench-data (dataset-fashion-mnist)")
    data = make()
    task = make_task(data, kind, 0.1, seed=0, max_train=500)  # 500 of digits' 1,437: the model of confusion-flip is quick
    n_train = min(len(data.y) - len(task.y_ref), 500)
    expected = round(0.1 * n_train)
    assert task.corrupted.sum() == expected
    assert len(task.y) == len(task.X) == len(task.corrupted) == n_train + (expected if kind in ("duplicates", "ood") else 0)
    assert len(task.y_ref) == pytest.approx(0.2 * len(data.y), abs=1)
    clean_rows = ~task.corrupted
    if kind in ("label-flip", "confusion-flip", "pair-flip", "annotator", "duplicates", "ood"):
        np.testing.assert_array_equal(task.X[:n_train], np.asarray(data.X, dtype=np.float64)[task.rows])
    if kind in ("label-flip", "confusion-flip", "pair-flip", "annotator"):
        np.testing.assert_array_equal(task.y != data.y[task.rows], task.corrupted)
    if kind == "ood":
        pool = data.outliers()
        assert all((np.abs(pool - row).max(axis=1) < 1e-6).any() for row in task.X[n_train:])
    if kind == "backdoor":
        target = np.unique(data.y)[0]
        assert (task.y[task.corrupted] == target).all()
        assert not np.allclose(task.X[task.corrupted], np.asarray(data.X)[task.rows][task.corrupted])
    if kind == "feature-noise":
        np.testing.assert_array_equal(task.y, data.y[task.rows])
    assert np.isfinite(task.X[clean_rows]).all()


def test_text_backdoor_re_embeds_the_poisoned_documents():
    data = toy_text_set()
    task = make_task(data, "backdoor", 0.1, seed=0)
    assert (task.X[task.corrupted, 0] == 1).all() and (task.X[~task.corrupted, 0] == 0).all()


def test_run_detection_scores_every_method_and_seed():
    results = run_detection(digits(), "label-flip:0.1", ["kairos", "knn-shapley"], seeds=2, max_train=400)
    assert len(results) == 4 and set(results["method"]) == {"kairos", "knn-shapley"}
    assert (results["n_train"] == 400).all()
    assert (results["auroc"] > 0.9).all() and (results["seconds"] > 0).all()


def test_bad_specs_are_refused():
    assert parse_corruption("feature-noise:0.05") == ("feature-noise", 0.05)
    with pytest.raises(InputError, match="unknown corruption 'typos'"):
        parse_corruption("typos:0.1")
    with pytest.raises(InputError, match=r"corruption fraction in 'label-flip:1.5' must be a number in \(0, 1\)"):
        parse_corruption("label-flip:1.5")
    for spec in ("label-flip", "label-flip:", "label-flip: "):  # used to mean 0.1, silently
        with pytest.raises(InputError, match=r"give the corruption as KIND:FRACTION, e.g. label-flip:0.1"):
            parse_corruption(spec)
    with pytest.raises(InputError, match="unknown method"):
        run_detection(digits(), "label-flip:0.1", ["magic"])


def test_bench_detect_command_writes_results(tmp_path):
    result = CliRunner().invoke(app, ["bench", "detect", "--dataset", "wine", "--corruption", "label-flip:0.2",
                                      "--methods", "kairos,knn-shapley", "--seeds", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert "kairos" in result.stdout and (tmp_path / "results.json").exists() and (tmp_path / "detection.png").exists()
    bad = CliRunner().invoke(app, ["bench", "detect", "--dataset", "imagenet", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown dataset 'imagenet'" in bad.stderr


def test_an_interrupted_benchmark_resumes_without_redoing_finished_valuations(tmp_path, monkeypatch):
    """Interrupt the third of four valuations, resume: the first two are reused, the table equals an
    uninterrupted run's, and other parameters reuse nothing."""
    from dataworth.checkpoint import Checkpoint
    from dataworth.evaluation import detection
    from dataworth.valuation import METHODS

    fits = []

    class Counted(METHODS["knn-shapley"]):
        def fit(self, *args, **kwargs):
            fits.append(self.k)
            if interrupt and len(fits) == 3:
                raise KeyboardInterrupt
            return super().fit(*args, **kwargs)

    monkeypatch.setitem(detection.METHODS, "knn-shapley", Counted)
    data, path = digits(), tmp_path / "results.partial.jsonl"
    run = dict(seeds=4, max_train=300, method_params={"knn-shapley": {"k": 5}})
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        run_detection(data, "label-flip:0.1", ["knn-shapley"], checkpoint=Checkpoint(path), **run)
    assert Checkpoint(path).resumed == 2
    interrupt, fits[:] = False, []
    resumed = run_detection(data, "label-flip:0.1", ["knn-shapley"], checkpoint=Checkpoint(path), **run)
    assert fits == [5, 5]  # seeds 2 and 3 only
    fresh = run_detection(data, "label-flip:0.1", ["knn-shapley"], **run)
    metrics = ["seed", "n_train", "auroc", "auprc", "f1", "detection_rate"]
    np.testing.assert_allclose(resumed[metrics].to_numpy(float), fresh[metrics].to_numpy(float), rtol=0, atol=1e-15)
    fits[:] = []
    run_detection(data, "label-flip:0.1", ["knn-shapley"], checkpoint=Checkpoint(path), seeds=1, max_train=300,
                  method_params={"knn-shapley": {"k": 3}})
    assert fits == [3]


def test_bench_detect_command_resumes_from_its_checkpoint_and_removes_it(tmp_path):
    from dataworth.checkpoint import Checkpoint

    key = {"dataset": "wine", "corruption": "label-flip:0.2", "method": "kairos", "seed": 0, "max_train": None, "params": {}}
    planted = {"dataset": "wine", "corruption": "label-flip:0.2", "method": "kairos", "seed": 0, "n_train": 142,
               "auroc": 0.123, "auprc": 0.1, "f1": 0.1, "detection_rate": 0.1, "seconds": 1.0, "peak_rss_gib": 0.1}
    Checkpoint(tmp_path / "results.partial.jsonl").add(key, planted)
    result = CliRunner().invoke(app, ["bench", "detect", "--dataset", "wine", "--corruption", "label-flip:0.2",
                                      "--methods", "kairos", "--seeds", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert "resuming: 1 finished valuation(s)" in result.stdout
    rows = pd.read_json(tmp_path / "results.json")
    assert rows.loc[rows.seed == 0, "auroc"].item() == 0.123 and rows.loc[rows.seed == 1, "auroc"].item() > 0.5
    assert not (tmp_path / "results.partial.jsonl").exists()


def test_a_failed_bench_detect_leaves_no_output_directory(tmp_path):
    out = tmp_path / "a" / "results"
    bad_method = CliRunner().invoke(app, ["bench", "detect", "--methods", "kairos,bogus", "--out", str(out)])
    assert bad_method.exit_code == 2 and "unknown method(s) 'bogus'" in bad_method.stderr
    one_class = tmp_path / "one.csv"
    pd.DataFrame({"f": np.arange(30.0), "label": 0}).to_csv(one_class, index=False)
    failed_run = CliRunner().invoke(app, ["bench", "detect", "--dataset", str(one_class), "--methods", "kairos",
                                          "--seeds", "1", "--out", str(out)])
    assert failed_run.exit_code == 2 and failed_run.stderr.startswith("error: "), failed_run.stderr
    assert not (tmp_path / "a").exists()


def test_a_method_can_run_under_labels_with_other_parameters():
    data = digits()
    results = run_detection(data, "label-flip:0.1", ["cleanlab", "cleanlab-knn"], seeds=1, max_train=300,
                            method_params={"cleanlab-knn": {"model": "knn"}}, variants={"cleanlab-knn": "cleanlab"})
    assert list(results["method"]) == ["cleanlab", "cleanlab-knn"]
    assert results["auroc"].iloc[0] != results["auroc"].iloc[1]  # really another model
    with pytest.raises(InputError, match="unknown method"):
        run_detection(data, "label-flip:0.1", ["cleanlab-knn"], seeds=1)


def test_ood_needs_a_source_of_outliers():
    data = toy_text_set()
    bare = EvaluationSet(data.name, data.X, data.y, data.raw, data.view, data.featurize)
    with pytest.raises(InputError, match="dataset 'toy-text' has no out-of-distribution rows"):
        make_task(bare, "ood", 0.1, seed=0)


def test_a_variant_can_rank_by_one_kairos_term():
    """kairos-label scores exactly the ranking by −(label residual), kairos-feature by the feature term."""
    data = digits()
    results = run_detection(data, "label-flip:0.1", ["kairos-feature", "kairos-label"], seeds=1, max_train=200,
                            variants={"kairos-feature": "kairos:feature", "kairos-label": "kairos:label"})
    task = make_task(data, "label-flip", 0.1, seed=0, max_train=200)
    fitted = Kairos().fit(task.X, task.y, reference=(task.X_ref, task.y_ref))
    by_method = results.set_index("method")
    for label, values in (("kairos-label", -fitted.label_residuals_), ("kairos-feature", fitted.feature_values_)):
        assert by_method.loc[label, "auroc"] == pytest.approx(detection_auroc(values, task.corrupted), abs=1e-12)
        assert by_method.loc[label, "auprc"] == pytest.approx(detection_auprc(values, task.corrupted), abs=1e-12)
    assert by_method.loc["kairos-label", "auroc"] > by_method.loc["kairos-feature", "auroc"] + 0.2  # flips move labels, not features
    with pytest.raises(InputError, match="kairos has no term 'price'; it offers combined, feature, label"):
        run_detection(data, "label-flip:0.1", ["kairos-price"], variants={"kairos-price": "kairos:price"})


def test_checkpoint_keys_of_plain_methods_stay_and_variant_keys_name_the_term(tmp_path):
    from dataworth.checkpoint import Checkpoint

    path = tmp_path / "results.partial.jsonl"
    old_key = {"dataset": "digits", "corruption": "label-flip:0.1", "method": "kairos", "seed": 0, "max_train": 200, "params": {}}
    planted = {"dataset": "digits", "corruption": "label-flip:0.1", "method": "kairos", "seed": 0, "n_train": 200,
               "auroc": 0.123, "auprc": 0.1, "f1": 0.1, "detection_rate": 0.1, "seconds": 1.0, "peak_rss_gib": 0.1}
    Checkpoint(path).add(old_key, planted)
    run = dict(seeds=1, max_train=200)
    plain = run_detection(digits(), "label-flip:0.1", ["kairos"], checkpoint=Checkpoint(path), **run)
    assert plain["auroc"].item() == 0.123  # a key written before variants had terms is still found
    label = run_detection(digits(), "label-flip:0.1", ["kairos-x"], variants={"kairos-x": "kairos:label"},
                          checkpoint=Checkpoint(path), **run)
    feature = run_detection(digits(), "label-flip:0.1", ["kairos-x"], variants={"kairos-x": "kairos:feature"},
                            checkpoint=Checkpoint(path), **run)
    assert label["auroc"].item() != feature["auroc"].item()  # another term is another valuation, not the stored one
    assert Checkpoint(path).resumed == 3
