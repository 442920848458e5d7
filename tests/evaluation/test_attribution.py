"""The attribution ground-truth harness against brute force: LOO by explicit retraining, LDS by a direct Spearman."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.datasets import load_digits

import dataworth.evaluation.attribution as attribution
from dataworth.checkpoint import Checkpoint
from dataworth.checks import InputError
from dataworth.evaluation.attribution import (
    LOOTruth,
    RetrainingProblem,
    columnwise_spearman,
    linear_datamodeling_score,
    loo_correlation,
    loo_ground_truth,
    random_subsets,
    retrain_subsets,
)
from dataworth.influence.models import fit_logistic, fit_mlp


def small_problem(model: str = "logistic", n: int = 80, targets: int = 12) -> RetrainingProblem:
    X, y = load_digits(n_class=3, return_X_y=True)
    X = X / 16.0
    return RetrainingProblem(X[:n, :16], y[:n], X[n:n + targets, :16], y[n:n + targets], model=model,
                             l2=1.0 if model == "logistic" else 1e-1)


def losses_of(fitted, problem: RetrainingProblem) -> np.ndarray:
    return problem.target_losses(fitted)


def test_loo_ground_truth_equals_cold_retraining_for_a_convex_model():
    problem = small_problem()
    rows = np.array([3, 17, 40])
    truth = loo_ground_truth(problem, rows)
    full = fit_logistic(problem.X, problem.y, l2=1.0)
    for r, i in enumerate(rows):
        kept = np.delete(np.arange(problem.n), i)
        without = fit_logistic(problem.X[kept], problem.y[kept], l2=1.0)  # cold start: the same unique minimizer
        expected = losses_of(without, problem) - losses_of(full, problem)
        np.testing.assert_allclose(truth.delta[r], expected, rtol=1e-7, atol=1e-10)
    assert truth.per_seed.shape == (3, 1, problem.n_targets)  # a convex model needs one seed


def test_loo_ground_truth_pairs_seeds_for_a_non_convex_model():
    problem = small_problem("mlp", n=50, targets=5)
    truth = loo_ground_truth(problem, [7], seeds=2)
    kept = np.delete(np.arange(problem.n), 7)
    per_seed = [losses_of(fit_mlp(problem.X[kept], problem.y[kept], l2=1e-1, seed=s), problem)
                - losses_of(fit_mlp(problem.X, problem.y, l2=1e-1, seed=s), problem) for s in range(2)]
    np.testing.assert_allclose(truth.per_seed[0], per_seed, atol=1e-6)
    np.testing.assert_allclose(truth.delta[0], np.mean(per_seed, axis=0), atol=1e-6)


def test_subset_outcomes_equal_direct_retraining():
    problem = small_problem()
    subsets = random_subsets(problem.n, 4, alpha=0.5, seed=1)
    outcomes = retrain_subsets(problem, subsets)
    assert subsets.sum(axis=1).tolist() == [40] * 4
    for j in range(4):
        kept = np.flatnonzero(subsets[j])
        np.testing.assert_allclose(outcomes.outcomes[j], losses_of(fit_logistic(problem.X[kept], problem.y[kept], l2=1.0), problem),
                                   rtol=1e-9)


def test_lds_of_an_exactly_additive_outcome_is_one():
    rng = np.random.default_rng(0)
    tau = rng.normal(size=(30, 5))
    subsets = random_subsets(30, 40, seed=2)
    outcomes = -(subsets @ tau) + 7.0  # the loss falls by τ_iq for every kept row i
    lds = linear_datamodeling_score(tau, subsets, outcomes)
    np.testing.assert_allclose(lds.per_target, 1.0)
    assert lds.mean == pytest.approx(1.0)
    assert linear_datamodeling_score(-tau, subsets, outcomes).mean == pytest.approx(-1.0)


def test_lds_equals_a_direct_spearman_computation():
    rng = np.random.default_rng(1)
    tau, subsets = rng.normal(size=(25, 4)), random_subsets(25, 30, seed=3)
    outcomes = rng.normal(size=(30, 4)) - 0.3 * (subsets @ tau)
    lds = linear_datamodeling_score(tau, subsets, outcomes)
    direct = [spearmanr(subsets @ tau[:, q], -outcomes[:, q])[0] for q in range(4)]
    np.testing.assert_allclose(lds.per_target, direct, atol=1e-12)
    assert lds.mean == pytest.approx(np.mean(direct))
    values = tau[:, 0]  # one value per row: scored against the mean target loss
    assert linear_datamodeling_score(values, subsets, outcomes).mean == pytest.approx(spearmanr(subsets @ values, -outcomes.mean(1))[0])


def test_columnwise_spearman_handles_ties_and_constant_columns():
    a = np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 2.0], [2.0, 2.0]])
    b = np.array([[4.0, 1.0], [3.0, 2.0], [9.0, 3.0], [3.0, 4.0]])
    result = columnwise_spearman(a, b)
    assert result[0] == pytest.approx(spearmanr(a[:, 0], b[:, 0])[0])
    assert np.isnan(result[1])


def test_loo_correlation_of_the_truth_itself_is_perfect():
    rng = np.random.default_rng(2)
    delta = rng.normal(size=(10, 3))
    truth = LOOTruth(np.arange(10) * 2, delta, np.zeros((1, 3)), delta[:, None])
    scores = np.zeros((20, 3))
    scores[truth.rows] = delta
    result = loo_correlation(scores, truth)
    assert result["pearson"] == pytest.approx(1.0) and result["spearman"] == pytest.approx(1.0)
    assert result["slope"] == pytest.approx(1.0)
    assert loo_correlation(scores * 0.5, truth)["slope"] == pytest.approx(2.0)  # the prediction is too small by half


def test_a_killed_job_resumes_without_redoing_finished_retrainings(tmp_path, monkeypatch):
    problem = small_problem()
    subsets = random_subsets(problem.n, 6, seed=4)
    expected = retrain_subsets(problem, subsets).outcomes
    calls = []
    real = attribution._train_subset

    def dies_after_three(*args):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(attribution, "_train_subset", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        retrain_subsets(problem, subsets, checkpoint=Checkpoint(tmp_path / "job.jsonl"))
    calls.clear()
    monkeypatch.setattr(attribution, "_train_subset", lambda *args: (calls.append(1), real(*args))[1])
    resumed = retrain_subsets(problem, subsets, checkpoint=Checkpoint(tmp_path / "job.jsonl"))
    assert len(calls) == 3  # only the three unfinished subsets ran again
    np.testing.assert_allclose(resumed.outcomes, expected, rtol=1e-12)


def test_a_checkpoint_of_another_problem_is_not_reused(tmp_path):
    problem = small_problem()
    subsets = random_subsets(problem.n, 3, seed=5)
    retrain_subsets(problem, subsets, checkpoint=Checkpoint(tmp_path / "job.jsonl"))
    other = RetrainingProblem(problem.X, problem.y, problem.X_targets, problem.y_targets, model="logistic", l2=2.0)
    assert other.fingerprint != problem.fingerprint
    outcomes = retrain_subsets(other, subsets, checkpoint=Checkpoint(tmp_path / "job.jsonl"))
    np.testing.assert_allclose(outcomes.outcomes, retrain_subsets(other, subsets).outcomes)


def test_parallel_retraining_equals_in_process():
    problem = small_problem()
    subsets = random_subsets(problem.n, 4, seed=6)
    # processes run single-threaded, so sums may round differently in the last bit
    np.testing.assert_allclose(retrain_subsets(problem, subsets, n_jobs=2).losses, retrain_subsets(problem, subsets).losses, rtol=1e-12)


@pytest.mark.parametrize(("call", "message"), [
    (lambda p: random_subsets(p.n, 5, alpha=1.0), "alpha"),
    (lambda p: retrain_subsets(p, np.ones((3, 5), dtype=bool)), "subsets must be an m"),
    (lambda p: retrain_subsets(p, np.full((3, p.n), 2)), "only 0 and 1"),
    (lambda p: loo_ground_truth(p, [p.n]), "LOO rows"),
    (lambda p: RetrainingProblem(p.X, p.y + 1, p.X_targets, p.y_targets), "needs a training row"),
    (lambda p: RetrainingProblem(p.X, p.y, p.X_targets, p.y_targets, model="svm"), "unknown model"),
    (lambda p: linear_datamodeling_score(np.zeros((p.n, 2)), np.ones((4, p.n)), np.zeros((4, 3))), "targets"),
])
def test_bad_input_is_refused_with_a_clear_message(call, message):
    with pytest.raises(InputError, match=message):
        call(small_problem())
