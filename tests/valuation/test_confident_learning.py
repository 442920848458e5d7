"""The cleanlab baselines against cleanlab and scikit-learn called directly, and on planted label noise."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from dataworth.checks import InputError
from dataworth.valuation.confident_learning import ConfidentLearning, DatalabIssues
from noisy_digits import clean_labels, noisy_digits

cleanlab = pytest.importorskip("cleanlab")


@pytest.fixture(scope="module")
def digits():
    return noisy_digits(n_ref=0, n_train=500, fraction=0.1)


def direct_probabilities(X, y, model, seed=0):
    """Out-of-fold probabilities as a cleanlab user computes them, written here independently."""
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    return cross_val_predict(model, X, y, cv=folds, method="predict_proba")


@pytest.mark.parametrize("score", ["self_confidence", "normalized_margin", "confidence_weighted_entropy"])
@pytest.mark.parametrize(("model", "direct"), [
    ("logistic", make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))),
    ("knn", KNeighborsClassifier(n_neighbors=10)),
])
def test_equals_cleanlab_on_directly_computed_probabilities(digits, model, direct, score):
    X, y, _, _, _ = digits
    ours = ConfidentLearning(model=model, score=score).fit(X, y).values_
    theirs = cleanlab.rank.get_label_quality_scores(y, direct_probabilities(X, y, direct), method=score)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:The inplace keyword")  # inside cleanlab, called directly here
def test_datalab_values_are_the_lowest_row_issue_score_of_datalab_itself(digits):
    X, y, _, _, _ = digits
    probabilities = direct_probabilities(X, y, make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)))
    lab = cleanlab.Datalab(data={"label": y}, label_name="label", verbosity=0)
    lab.find_issues(features=X, pred_probs=probabilities, issue_types={"label": {}, "outlier": {}, "near_duplicate": {}})
    issues = lab.get_issues()
    ours = DatalabIssues().fit(X, y)
    for issue in ("label", "outlier", "near_duplicate"):
        np.testing.assert_allclose(ours.result_.components[issue], issues[f"{issue}_score"], rtol=0, atol=1e-12)
    expected = issues[["label_score", "outlier_score", "near_duplicate_score"]].min(axis=1)
    np.testing.assert_allclose(ours.values_, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("estimator", [ConfidentLearning(), ConfidentLearning(model="knn"), DatalabIssues()])
def test_finds_flipped_labels_and_not_their_rows(digits, estimator):
    """Measured: AUROC 0.98-0.99 on 10% flips; with the true labels back the same rows rank like any others."""
    X, y, _, _, flipped = digits
    assert roc_auc_score(flipped, -estimator.fit(X, y).values_) > 0.95
    restored = estimator.fit(X, clean_labels(n_ref=0, n_train=500)).values_
    assert abs(roc_auc_score(flipped, -restored) - 0.5) < 0.12


def test_string_labels_names_and_the_reference_is_ignored(digits):
    import pandas as pd

    X, y, _, _, _ = digits
    names = np.array(list("abcdefghij"))[y]
    frame = pd.DataFrame(X, index=[f"r{i}" for i in range(len(X))])
    frame.columns = [f"p{j}" for j in range(X.shape[1])]
    result = ConfidentLearning().fit(frame, names, reference=(X[:5], y[:5])).result_
    np.testing.assert_allclose(result.values, ConfidentLearning().fit(X, y).values_, rtol=0, atol=1e-12)
    assert result.names[3] == "r3" and result.method == "cleanlab"


@pytest.mark.parametrize(("params", "message"), [
    ({"model": "forest"}, "model must be one of logistic, knn or a scikit-learn classifier"),
    ({"n_folds": 1}, "n_folds must be an integer >= 2"),
    ({"score": "entropy"}, "score must be one of self_confidence, normalized_margin, confidence_weighted_entropy"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"model": LinearSVC()}, r"LinearSVC\(\) has no predict_proba"),
])
def test_bad_parameters_are_input_errors(digits, params, message):
    X, y, _, _, _ = digits
    with pytest.raises(InputError, match=message):
        ConfidentLearning(**params).fit(X, y)


def test_too_few_rows_of_a_class_and_missing_labels_are_input_errors(digits):
    X, y, _, _, _ = digits
    y = y.copy()
    y[:3] = 99
    with pytest.raises(InputError, match=r"5 folds need at least 5 training rows of every class; class 99 has 3"):
        ConfidentLearning().fit(X, y)
    with pytest.raises(InputError, match=r"datalab needs labels, but the training set has none"):
        DatalabIssues().fit(X)


def test_without_cleanlab_the_message_says_how_to_install_it(digits, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cleanlab(name, *args, **kwargs):
        if name.startswith("cleanlab"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cleanlab)
    X, y, _, _, _ = digits
    with pytest.raises(InputError, match=r"pip install 'dataworth\[cleanlab\]'"):
        ConfidentLearning().fit(X, y)
