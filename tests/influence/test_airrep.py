"""AirRep: learned representations that rank subsets by their measured effect on target losses."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits

from dataworth.checks import InputError
from dataworth.influence.airrep import AirRep
from dataworth.influence.models import fit_logistic
from dataworth.result import AttributionResult
from dataworth.valuation.base import NotFittedError


def lds(predicted: np.ndarray, outcomes: np.ndarray) -> float:
    """Mean over targets of Spearman(predicted group score, −measured loss) over subsets."""
    return float(np.mean([spearmanr(predicted[:, q], -outcomes[:, q])[0] for q in range(outcomes.shape[1])]))


def additive_problem(seed: int = 0, n: int = 60, targets: int = 20, m: int = 200, d: int = 5, rank: int = 3):
    """Hidden per-row effects τ*_iq = u_iᵀu_q with u = tanh(Ax + b_y) (a low-rank similarity of labelled examples,
    like a gradient inner product); the loss after training on S_j is −Σ_{i∈S_j} τ*_iq + 5% noise."""
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(n, d)), rng.integers(0, 3, n)
    Xt, yt = rng.normal(size=(targets, d)), rng.integers(0, 3, targets)
    A, b = rng.normal(size=(rank, d)), rng.normal(size=(3, rank))
    tau = np.tanh(X @ A.T + b[y]) @ np.tanh(Xt @ A.T + b[yt]).T
    subsets = rng.random((m, n)) < 0.5
    effect = subsets @ tau
    outcomes = -effect + 0.05 * effect.std() * rng.normal(size=effect.shape)
    return X, y, Xt, yt, subsets, outcomes, tau


@pytest.fixture(scope="module")
def additive():
    torch.set_num_threads(1)
    return additive_problem()


@pytest.fixture(scope="module")
def fitted(additive):
    X, y, Xt, yt, subsets, outcomes, _ = additive
    return AirRep(epochs=60, seed=0).fit_subsets(X, y, Xt, yt, subsets[:150], outcomes[:150])


def test_learns_additive_effects_beyond_random_representations(additive, fitted):
    X, y, Xt, yt, subsets, outcomes, tau = additive
    held_out, measured = subsets[150:], outcomes[150:]
    trained = lds(fitted.group_scores(held_out, Xt, yt), measured)
    random = AirRep(epochs=0, seed=0).fit_subsets(X, y, Xt, yt, subsets[:150], outcomes[:150])
    baseline = lds(random.group_scores(held_out, Xt, yt), measured)
    # measured: trained 0.95, random representations 0.27 (a random encoder is still a similarity of examples)
    assert trained > 0.85
    assert baseline < 0.5
    assert trained - baseline > 0.4
    # per-row scores recover the hidden effects, with the sign positive = helps (lower loss)
    scores = fitted.attribute(Xt, yt).scores
    per_row = np.mean([spearmanr(scores[:, q], tau[:, q])[0] for q in range(tau.shape[1])])
    assert per_row > 0.85  # measured 0.96
    # training lowered the ranking loss
    assert fitted.train_loss_[-1] < 0.5 * fitted.train_loss_[0]


def test_group_size_scaling_matters_and_uniform_attention_is_additive(additive, fitted):
    """Without the |S| factor a group's score is a weighted mean, which ranks groups of different sizes badly; with
    uniform attention the score is the sum of the rows' scores, the additive truth's own form."""
    X, y, Xt, yt, subsets, outcomes, _ = additive
    held_out, measured = subsets[150:], outcomes[150:]
    scaled = lds(fitted.group_scores(held_out, Xt, yt), measured)
    mean_pooled = AirRep(epochs=60, size_scaled=False).fit_subsets(X, y, Xt, yt, subsets[:150], outcomes[:150])
    uniform = AirRep(epochs=60, temperature=None).fit_subsets(X, y, Xt, yt, subsets[:150], outcomes[:150])
    # measured over 4 data seeds × 2 seeds: scaled 0.94-0.97, mean-pooled 0.65-0.80, uniform 0.98-0.99
    assert lds(mean_pooled.group_scores(held_out, Xt, yt), measured) < scaled - 0.1
    assert lds(uniform.group_scores(held_out, Xt, yt), measured) > 0.9


def digits_problem(m: int = 120):
    """300 digits (8×8 images pooled to 4×4), 20 held-out targets; softmax regression (sum-form l2 = 1) retrained on
    m random half subsets; outcomes = the targets' cross-entropy losses."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 4, 2, 4, 2).mean((2, 4)).reshape(-1, 16)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    train, targets = order[:300], order[300:320]
    subsets = rng.random((m, 300)) < 0.5
    outcomes = np.empty((m, 20))
    for j in range(m):
        fitted = fit_logistic(X[train][subsets[j]], y[train][subsets[j]], l2=1.0)
        with torch.no_grad():
            logits = fitted.model(torch.as_tensor(X[targets]))
        codes = torch.as_tensor(np.searchsorted(fitted.classes, y[targets]))
        outcomes[j] = torch.nn.functional.cross_entropy(logits, codes, reduction="none").numpy()
    return X[train], y[train], X[targets], y[targets], subsets, outcomes


def test_digits_held_out_lds_beats_shuffled_outcomes():
    torch.set_num_threads(1)
    X, y, Xt, yt, subsets, outcomes = digits_problem()
    used = 90
    real = AirRep(epochs=50).fit_subsets(X, y, Xt, yt, subsets[:used], outcomes[:used])
    shuffled_outcomes = outcomes[:used][np.random.default_rng(1).permutation(used)]
    control = AirRep(epochs=50).fit_subsets(X, y, Xt, yt, subsets[:used], shuffled_outcomes)
    real_lds = lds(real.group_scores(subsets[used:], Xt, yt), outcomes[used:])
    control_lds = lds(control.group_scores(subsets[used:], Xt, yt), outcomes[used:])
    assert real_lds > 0.6  # measured 0.90
    assert control_lds < 0.4  # measured 0.17
    assert real_lds - control_lds > 0.4


def test_same_seed_same_numbers_other_seed_other_numbers(additive):
    X, y, Xt, yt, subsets, outcomes, _ = additive
    runs = []
    for global_seed, seed in ((1, 7), (2, 7), (1, 8)):
        torch.manual_seed(global_seed)  # the global torch RNG state must not matter
        runs.append(AirRep(epochs=3, seed=seed).fit_subsets(X, y, Xt, yt, subsets[:40], outcomes[:40]))
    scores = [r.attribute(Xt, yt).scores for r in runs]
    np.testing.assert_array_equal(scores[0], scores[1])
    np.testing.assert_array_equal(runs[0].group_scores(subsets[40:], Xt, yt), runs[1].group_scores(subsets[40:], Xt, yt))
    assert not np.allclose(scores[0], scores[2])
    # the seed sets the initial encoder too (epochs=0: no batch order involved)
    initial = [AirRep(epochs=0, seed=s).fit_subsets(X, y, Xt, yt, subsets[:40], outcomes[:40]).attribute(Xt, yt).scores for s in (7, 8)]
    assert not np.allclose(initial[0], initial[1])
    state = torch.random.get_rng_state()
    AirRep(epochs=1, seed=3).fit_subsets(X, y, Xt, yt, subsets[:40], outcomes[:40])
    assert torch.equal(state, torch.random.get_rng_state())  # the global torch RNG is left alone


def test_attribute_shapes_signs_and_singleton_consistency(additive, fitted):
    X, y, Xt, yt, subsets, outcomes, _ = additive
    result = fitted.attribute(Xt[:7], yt[:7])
    assert isinstance(result, AttributionResult)
    assert result.scores.shape == (60, 7) and result.scores.dtype == np.float64
    assert result.method == "airrep"
    assert {"fit", "attribute", "attribute_per_target", "total"} <= set(result.timings)
    # τ_iq is the score of the singleton group {i}
    singletons = fitted.group_scores(np.eye(60, dtype=bool), Xt[:7], yt[:7])
    np.testing.assert_allclose(singletons, result.scores, rtol=1e-5, atol=1e-5)
    # the empty group scores 0; group scores are m × T
    groups = fitted.group_scores(np.vstack([np.zeros(60, bool), subsets[:4]]), Xt[:7], yt[:7])
    assert groups.shape == (5, 7) and np.all(groups[0] == 0)
    # with uniform attention a group's score is the sum of its rows' scores (additive)
    uniform = AirRep(epochs=2, temperature=None).fit_subsets(X, y, Xt, yt, subsets[:40], outcomes[:40])
    np.testing.assert_allclose(uniform.group_scores(subsets[:5], Xt, yt), subsets[:5] @ uniform.attribute(Xt, yt).scores,
                               rtol=1e-4, atol=1e-4)
    # sign: the row whose presence lowers every target's loss ranks first, the one that raises it last. (A ranking
    # loss fixes scores only up to a per-target shift when subset sizes barely vary, so only differences between
    # rows carry the sign; see the module doc.)
    rng = np.random.default_rng(3)
    masks = rng.random((80, 60)) < 0.5
    losses = 1.0 - 0.5 * masks[:, [0]] + 0.5 * masks[:, [1]] + 0.01 * rng.normal(size=(80, 20))
    scores = AirRep(epochs=80).fit_subsets(X, y, Xt, yt, masks, losses).attribute(Xt, yt).scores
    assert np.all(scores[0] > scores[1:].max(0))
    assert np.all(scores[1] < np.delete(scores, 1, axis=0).min(0))


def test_input_errors(additive, fitted):
    X, y, Xt, yt, subsets, outcomes, _ = additive
    S, L = subsets[:10], outcomes[:10]
    fit = AirRep(epochs=1).fit_subsets
    with pytest.raises(InputError, match="m × 60 0/1 mask"):
        fit(X, y, Xt, yt, S[:, :59], L)
    with pytest.raises(InputError, match="only 0 and 1"):
        fit(X, y, Xt, yt, S * 2, L)
    with pytest.raises(InputError, match="at least 2 subsets"):
        fit(X, y, Xt, yt, S[:1], L[:1])
    with pytest.raises(InputError, match="outcomes must be subsets × targets = 10 × 20"):
        fit(X, y, Xt, yt, S, L[:, :5])
    bad = L.copy()
    bad[3, 4] = np.nan
    with pytest.raises(InputError, match="NaN or inf.*subset 3, target 4"):
        fit(X, y, Xt, yt, S, bad)
    with pytest.raises(InputError, match="X_targets has 4 features"):
        fit(X, y, Xt[:, :4], yt, S, L)
    with pytest.raises(InputError, match="y_train do not match"):
        fit(X, y[:50], Xt, yt, S, L)
    with pytest.raises(InputError, match=">= 0"):
        fit(X, y - 1, Xt, yt, S, L)
    with pytest.raises(InputError, match="integer label codes"):
        fit(X, y + 0.5, Xt, yt, S, L)
    with pytest.raises(InputError, match="codes 0..n_classes-1"):
        AirRep(n_classes=2).fit_subsets(X, y, Xt, yt, S, L)
    with pytest.raises(InputError, match="temperature"):
        AirRep(temperature=0.0).fit_subsets(X, y, Xt, yt, S, L)
    with pytest.raises(InputError, match="loss must be one of"):
        AirRep(loss="mse").fit_subsets(X, y, Xt, yt, S, L)
    with pytest.raises(InputError, match="label code 5"):
        fitted.attribute(Xt, np.full(len(Xt), 5))
    with pytest.raises(InputError, match="feature columns"):
        fitted.attribute(Xt[:, :3], yt)
    with pytest.raises(NotFittedError):
        AirRep().attribute(Xt, yt)
