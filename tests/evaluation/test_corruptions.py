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
