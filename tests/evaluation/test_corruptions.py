"""Corruptions change exactly the rows their mask names, in the way they claim, reproducibly."""

import numpy as np
import pytest

from dataworth import InputError
from dataworth.evaluation import corruptions as c


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(200, 16)), rng.integers(0, 10, 200)


def test_flip_labels_changes_exactly_the_masked_rows(data):
    X, y = data
    flipped, mask = c.flip_labels(y, 0.1, seed=1)
    assert mask.sum() == 20
    assert (flipped[mask] != y[mask]).all() and (flipped[~mask] == y[~mask]).all()
    assert set(flipped) <= set(y)
    again, mask2 = c.flip_labels(y, 0.1, seed=1)
    np.testing.assert_array_equal(again, flipped)
    np.testing.assert_array_equal(mask2, mask)


def test_pair_flips_swap_within_pairs_only(data):
    _, y = data
    flipped, mask = c.flip_label_pairs(y, 0.1, seed=2, pairs=[(1, 7), (3, 8)])
    assert mask.sum() == 20
    assert set(zip(y[mask].tolist(), flipped[mask].tolist(), strict=True)) <= {(1, 7), (7, 1), (3, 8), (8, 3)}
    assert (flipped[~mask] == y[~mask]).all()


def test_feature_noise_touches_masked_rows_only(data):
    X, _ = data
    noisy, mask = c.add_feature_noise(X, 0.05, scale=2.0, seed=3)
    assert mask.sum() == 10
    np.testing.assert_array_equal(noisy[~mask], X[~mask])
    assert (np.abs(noisy[mask] - X[mask]).mean(axis=1) > 0.5).all()


def test_backdoor_patches_and_relabels_non_target_rows():
    rng = np.random.default_rng(4)
    images, y = rng.uniform(0, 10, size=(100, 8, 8)), rng.integers(0, 3, 100)
    patched, labels, mask = c.add_patch_backdoor(images, y, 0.1, target=0, seed=5, size=2)
    assert mask.sum() == 10 and (y[mask] != 0).all() and (labels[mask] == 0).all()
    assert (patched[mask][:, -2:, -2:] == images.max()).all()
    np.testing.assert_array_equal(patched[mask][:, :-2, :], images[mask][:, :-2, :])
    np.testing.assert_array_equal(patched[~mask], images[~mask])


def test_trigger_token_is_inserted_once_into_masked_documents():
    texts = [f"document number {i} about topic" for i in range(50)]
    y = np.array([i % 5 for i in range(50)])
    poisoned, labels, mask = c.insert_trigger_token(texts, y, 0.1, token="cf-zq", target=0, seed=6)
    assert mask.sum() == 5 and (labels[mask] == 0).all() and (y[mask] != 0).all()
    assert all(poisoned[i].split().count("cf-zq") == 1 for i in np.flatnonzero(mask))
    assert all(poisoned[i] == texts[i] for i in np.flatnonzero(~mask))


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_duplicates_are_appended_copies(data, noise):
    X, y = data
    X2, y2, mask = c.add_duplicates(X, y, 0.05, seed=7, noise=noise, conflicting_labels=True)
    assert X2.shape == (210, 16) and mask[200:].all() and not mask[:200].any()
    nearest = np.linalg.norm(X2[200:, None, :] - X[None], axis=2).min(axis=1)
    assert (nearest == 0).all() if noise == 0 else (nearest > 0).all() and (nearest < 2).all()
    source = np.linalg.norm(X2[200:, None, :] - X[None], axis=2).argmin(axis=1)
    assert (y2[200:] != y[source]).all()


def test_out_of_distribution_rows_come_from_the_other_set(data):
    X, y = data
    other = np.random.default_rng(8).normal(loc=5.0, size=(50, 16))
    X2, y2, mask = c.add_out_of_distribution(X, y, other, 0.1, seed=9)
    assert mask.sum() == 20 and all(any((row == o).all() for o in other) for row in X2[mask])
    assert set(y2[mask]) <= set(y)


def test_disjoint_masks_and_clear_errors(data):
    X, y = data
    _, first = c.flip_labels(y, 0.5, seed=1)
    _, second = c.add_feature_noise(X, 0.5, scale=1.0, seed=2, eligible=~first)
    assert not (first & second).any()
    with pytest.raises(InputError, match="only 100 rows are eligible"):
        c.add_feature_noise(X, 0.6, scale=1.0, seed=2, eligible=~first)
    with pytest.raises(InputError, match="fraction must be a number in"):
        c.flip_labels(y, 1.5, seed=0)


def test_seeds_draw_independent_streams():
    """With default_rng(seed + 1) for the new labels, seed s drew them from seed s + 1's row stream."""
    from dataworth.evaluation.corruptions import _streams

    rows_1, _ = _streams(1)
    _, contents_0 = _streams(0)
    assert not np.array_equal(rows_1.integers(0, 2**31, 16), contents_0.integers(0, 2**31, 16))
    a, b = _streams(5)
    assert not np.array_equal(a.integers(0, 2**31, 16), b.integers(0, 2**31, 16))


def confusable(n: int = 300, classes: int = 4, seed: int = 0):
    """Labels and out-of-fold-like probabilities: the second choice of row i is (y_i + 1 + i % 2) % classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    probabilities = np.full((n, classes), 0.02)
    second = (y + 1 + np.arange(n) % 2) % classes
    p_true = rng.uniform(0.3, 0.9, n)
    probabilities[np.arange(n), y] = p_true
    probabilities[np.arange(n), second] = 1 - p_true - 0.02 * (classes - 2)
    return y, probabilities, second


def test_gumbel_top_k_draws_rows_in_proportion_to_their_weights():
    """The first of k = 1 rows is row 0 with probability w_0 / (w_0 + w_1) = 3/4."""
    first = [c.sample_rows(2, 0.5, seed=s, log_weights=np.log([3.0, 1.0]))[0] for s in range(2000)]
    assert np.mean(first) == pytest.approx(0.75, abs=0.03)  # 3 standard errors


def test_second_choice_flips_relabel_to_the_argmax_over_the_other_classes():
    y, probabilities, second = confusable()
    y_before, p_before = y.copy(), probabilities.copy()
    flipped, mask = c.flip_to_second_choice(y, 0.2, probabilities=probabilities, seed=1)
    assert mask.sum() == 60
    np.testing.assert_array_equal(flipped != y, mask)
    np.testing.assert_array_equal(flipped[mask], second[mask])
    np.testing.assert_array_equal(y, y_before)
    np.testing.assert_array_equal(probabilities, p_before)
    again, mask2 = c.flip_to_second_choice(y, 0.2, probabilities=probabilities, seed=1)
    np.testing.assert_array_equal(again, flipped)
    np.testing.assert_array_equal(mask2, mask)
    assert not np.array_equal(c.flip_to_second_choice(y, 0.2, probabilities=probabilities, seed=2)[1], mask)


def test_second_choice_flips_prefer_small_margins():
    """Rows 0-99 are coin tosses (margin 0), rows 100-199 sure (margin 0.9): at temperature 0.1 the
    flips land on the coin tosses; at a huge temperature on both halves alike."""
    y = np.arange(200) % 3
    rows, second = np.arange(200), (y + 1) % 3
    probabilities = np.zeros((200, 3))
    probabilities[rows, y] = np.where(rows < 100, 0.45, 0.95)
    probabilities[rows, second] = np.where(rows < 100, 0.45, 0.05)
    probabilities[rows, (y + 2) % 3] = 1 - probabilities.sum(axis=1)
    ambiguous = [c.flip_to_second_choice(y, 0.25, probabilities=probabilities, seed=s)[1][:100].sum() for s in range(10)]
    assert min(ambiguous) >= 48  # of 50 flips
    uniform = [c.flip_to_second_choice(y, 0.25, probabilities=probabilities, seed=s, temperature=1e6)[1][:100].sum()
               for s in range(10)]
    assert 20 <= np.mean(uniform) <= 30
    flipped, mask = c.flip_to_second_choice(y, 0.25, probabilities=probabilities, seed=0)
    np.testing.assert_array_equal(flipped[mask], second[mask])


def test_second_choice_flips_refuse_bad_input():
    y, probabilities, _ = confusable()
    with pytest.raises(InputError, match=r"one column per class of y \(sorted\): shape \(300, 4\); got \(300, 3\)"):
        c.flip_to_second_choice(y, 0.1, probabilities=probabilities[:, :3], seed=0)
    with pytest.raises(InputError, match="fraction must be a number in"):
        c.flip_to_second_choice(y, 1.5, probabilities=probabilities, seed=0)
    with pytest.raises(InputError, match="temperature must be a finite number > 0"):
        c.flip_to_second_choice(y, 0.1, probabilities=probabilities, seed=0, temperature=0)


def test_annotator_relabels_only_its_own_rows_and_only_through_pi():
    """Class c's mean probability points to π(c) = (c + 1) % 4 although 40% of its rows put another
    class second: every wrong label is π(y), never a row's own second choice."""
    rng = np.random.default_rng(3)
    n, classes = 400, 4
    y = rng.integers(0, classes, n)
    pi = (np.arange(classes) + 1) % classes
    decoy = (y + 2) % classes
    probabilities = np.full((n, classes), 0.05)
    probabilities[np.arange(n), y] = 0.6
    probabilities[np.arange(n), pi[y]] = 0.3
    swap = rng.random(n) < 0.4
    probabilities[swap, pi[y[swap]]], probabilities[swap, decoy[swap]] = 0.05, 0.3
    y_before, p_before = y.copy(), probabilities.copy()
    flipped, mask = c.annotator_noise(y, 0.15, probabilities=probabilities, seed=4)
    share = c.sample_rows(n, 0.15 / 0.3, seed=4)
    assert mask.sum() == 60 and share.sum() == 200
    assert not (mask & ~share).any()
    np.testing.assert_array_equal(flipped != y, mask)
    np.testing.assert_array_equal(flipped[mask], pi[y[mask]])
    assert swap[mask].any()  # rows whose own second choice is the decoy were relabelled to π too
    np.testing.assert_array_equal(y, y_before)
    np.testing.assert_array_equal(probabilities, p_before)
    again, mask2 = c.annotator_noise(y, 0.15, probabilities=probabilities, seed=4)
    np.testing.assert_array_equal(again, flipped)
    np.testing.assert_array_equal(mask2, mask)


def test_annotator_on_binary_labels_and_its_clear_errors():
    y = np.arange(100) % 2
    probabilities = np.column_stack([1 - y * 0.8 - 0.1, y * 0.8 + 0.1])
    flipped, mask = c.annotator_noise(y, 0.3, probabilities=probabilities, seed=0)  # the annotator labels every row
    assert mask.sum() == 30
    np.testing.assert_array_equal(flipped[mask], 1 - y[mask])
    with pytest.raises(InputError, match="the largest fraction allowed is 0.3; got 0.4"):
        c.annotator_noise(y, 0.4, probabilities=probabilities, seed=0)
    with pytest.raises(InputError, match=r"error_rate must be a number in \(0, 1\]; got 0"):
        c.annotator_noise(y, 0.1, probabilities=probabilities, seed=0, error_rate=0)
    with pytest.raises(InputError, match="probabilities contain NaN or inf"):
        c.annotator_noise(y, 0.1, probabilities=probabilities * np.nan, seed=0)
