"""Subset samplers, the running estimates of the semivalue samplers, and stopping rules."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from dataworth.checks import InputError
from dataworth.valuation.samplers import (
    BernoulliSampler,
    BetaBernoulliSampler,
    FlipSampler,
    MSRSampler,
    PermutationSampler,
)
from dataworth.valuation.stopping import MIN_SAMPLES, MaxSamples, MaxTime, StderrBelow

WEIGHTS = np.array([0.9, -0.4, 0.3, 0.05, -0.7])


# ---------------------------------------------------------------- subset samplers
def test_bernoulli_masks_are_seeded_boolean_and_stream_the_same_rows():
    sampler = BernoulliSampler(0.3, seed=4)
    masks = sampler.sample(2000, 5)
    assert masks.shape == (2000, 5) and masks.dtype == bool
    np.testing.assert_array_equal(masks, sampler.sample(2000, 5))
    assert not np.array_equal(masks, BernoulliSampler(0.3, seed=5).sample(2000, 5))
    stream = sampler.masks(5)
    np.testing.assert_array_equal(np.stack([next(stream) for _ in range(2000)]), masks)
    assert masks.mean() == pytest.approx(0.3, abs=4 * math.sqrt(0.3 * 0.7 / masks.size))


@pytest.mark.parametrize(
    "sampler", [BernoulliSampler(0.3), BernoulliSampler(0.5), BetaBernoulliSampler(16, 1), BetaBernoulliSampler(1, 4)]
)
def test_subset_sizes_follow_the_coefficient(sampler):
    """P(|S| = k) over K players is C(K, k)·p(k) of a game with K + 1 players (the K others of one)."""
    k_players, m = 6, 20_000
    sizes = np.bincount(sampler.sample(m, k_players).sum(axis=1), minlength=k_players + 1) / m
    expected = np.array([math.comb(k_players, k) * sampler.coefficient(k_players + 1, k) for k in range(k_players + 1)])
    assert expected.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_less(np.abs(sizes - expected), 4 * np.sqrt(expected * (1 - expected) / m) + 1e-3)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BernoulliSampler(1.0), r"p \(the probability that a subset holds a player\) must be a number in \(0, 1\)"),
        (lambda: BernoulliSampler(True), r"p \(the probability that a subset holds a player\) must be a number in \(0, 1\)"),
        (lambda: BernoulliSampler(0.5, seed=-1), "seed must be an integer >= 0"),
        (lambda: BernoulliSampler(0.5).sample(0, 3), "n_samples must be an integer >= 1"),
        (lambda: BetaBernoulliSampler(0, 1), "alpha must be a finite number > 0"),
        (lambda: PermutationSampler(truncation_patience=1.5), "truncation_patience must be an integer >= 0"),
        (lambda: FlipSampler(0.5), "subsets must be a SubsetSampler"),
        (lambda: MSRSampler(BetaBernoulliSampler()), "subsets must be a BernoulliSampler"),
        (lambda: MaxSamples(0), r"MaxSamples\(n\) must be an integer >= 1"),
        (lambda: MaxTime(float("nan")), r"MaxTime\(seconds\) must be a finite number > 0"),
        (lambda: StderrBelow(-0.1), r"StderrBelow\(threshold\) must be a finite number > 0"),
    ],
)
def test_bad_sampler_and_rule_arguments_raise_input_error(build, message):
    with pytest.raises(InputError, match=message):
        build()


# ---------------------------------------------------------------- running estimates
def test_samples_that_never_varied_get_the_rule_of_three_bound():
    """Every permutation marginal of an additive game is w_i (up to rounding): sample standard errors
    are about 0, the bound is √3·R/n with R = max w − min w, the range of all samples."""
    samples = PermutationSampler().samples(lambda mask: float(WEIGHTS[mask].sum()), len(WEIGHTS))
    for _ in range(40):
        estimate = next(samples)
    result = estimate.result()
    np.testing.assert_allclose(result.values, WEIGHTS, atol=1e-12)
    np.testing.assert_allclose(result.stderr, 0.0, atol=1e-12)
    np.testing.assert_allclose(estimate.stderr_bound(), math.sqrt(3) * np.ptp(WEIGHTS) / 40, rtol=1e-12)


def test_the_bound_measures_the_range_from_zero():
    """MSR samples are the utilities themselves: 0.5 every time gives R = 0.5 (from 0), each side's
    mean the floor √3·0.5/(n/2) with n/2 samples a side."""
    samples = MSRSampler().samples(lambda mask: 0.5, 1)
    for _ in range(100):
        estimate = next(samples)
    counts = estimate.result().components
    expected = math.sqrt(sum(3 * 0.5**2 / counts[side][0] ** 2 for side in ("count_in", "count_out")))
    assert estimate.stderr_bound()[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("sampler", [PermutationSampler(), MSRSampler()])
def test_a_game_whose_samples_are_all_zero_has_no_finite_bound(sampler):
    samples = sampler.samples(lambda mask: 0.0, 4)
    for _ in range(50):
        estimate = next(samples)
    np.testing.assert_array_equal(estimate.result().stderr, 0.0)
    assert np.isinf(estimate.stderr_bound()).all()


def test_varied_samples_keep_their_sample_standard_error():
    samples = FlipSampler(BernoulliSampler(0.5, seed=1)).samples(lambda mask: float(mask.sum() >= 3), 5)
    for _ in range(200):
        estimate = next(samples)
    np.testing.assert_array_equal(estimate.stderr_bound(), estimate.result().stderr)


# ---------------------------------------------------------------- stopping rules
def progress(n_samples=MIN_SAMPLES, elapsed=0.0, bound=(0.0,)):
    return SimpleNamespace(n_samples=n_samples, elapsed=elapsed, stderr_bound=lambda: np.array(bound))


def test_each_rule_says_stop_exactly_at_its_limit():
    assert not MaxSamples(3)(progress(n_samples=2)) and MaxSamples(3)(progress(n_samples=3))
    assert not MaxTime(1.0)(progress(elapsed=0.99)) and MaxTime(1.0)(progress(elapsed=1.0))
    rule = StderrBelow(0.1)
    assert rule(progress(bound=(0.1, 0.05)))
    assert not rule(progress(bound=(0.1, 0.2)))
    assert not rule(progress(bound=(0.1, np.inf)))
    assert not rule(progress(n_samples=MIN_SAMPLES - 1, bound=(0.0,)))


def test_rules_compose_with_or_and_and():
    either = MaxSamples(5) | MaxTime(1.0)
    both = MaxSamples(5) & MaxTime(1.0)
    assert either(progress(n_samples=5)) and either(progress(n_samples=1, elapsed=2.0))
    assert not both(progress(n_samples=5)) and both(progress(n_samples=5, elapsed=1.0))
    assert repr(either | StderrBelow(0.01)) == "((MaxSamples(5) | MaxTime(1.0)) | StderrBelow(0.01))"
    assert either.max_samples == 5 and both.max_samples is None
    assert (MaxSamples(5) & MaxSamples(8)).max_samples == 8 and (MaxSamples(5) | MaxSamples(8)).max_samples == 5
    with pytest.raises(TypeError):
        MaxSamples(5) | 3
