"""Blocked kernel products against dense matrices; the bandwidth heuristic against its definition."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist

from dataworth import InputError
from dataworth.kernels import (
    _pad_columns,
    _strip_tiles,
    kernel_matmul,
    kernel_matmul_both_ways,
    kernel_row_sums,
    make_kernel,
    median_bandwidth,
    nearest_rows,
)
from mmd_oracle import FORMULAS


@pytest.mark.parametrize("name", FORMULAS)
def test_dense_matrix_matches_the_formula(name):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 3)), rng.normal(size=(15, 3))
    dense = make_kernel(name, 1.7).matrix(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(dense, FORMULAS[name](cdist(x, y), 1.7), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", FORMULAS)
def test_dense_gram_matrix_has_an_exact_unit_diagonal_far_from_the_origin(name):
    x = torch.from_numpy(np.random.default_rng(6).normal(size=(30, 4)) + 100.0)
    gram = make_kernel(name, 2.0).matrix(x, x).numpy()
    assert (np.diag(gram) == 1.0).all()
    np.testing.assert_allclose(gram, FORMULAS[name](cdist(x.numpy(), x.numpy()), 2.0), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", FORMULAS)
@pytest.mark.parametrize("budget", [1, 700, 2**24])
def test_blocked_products_equal_dense_products(name, budget):
    """Several column blocks side by side, far-from-origin data, tiles of every size (side 128 to 1448)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2500, 6)) + 50.0
    y1, y2 = rng.normal(size=(2100, 6)) + 50.0, rng.normal(size=(30, 6)) + 50.0
    w1, w2 = rng.normal(size=(2100, 3)), rng.normal(size=(30, 2))
    kernel = make_kernel(name, 2.0)
    got = kernel_matmul(kernel, torch.from_numpy(x), [(torch.from_numpy(y1), torch.from_numpy(w1)),
                                                       (torch.from_numpy(y2), torch.from_numpy(w2))], memory_budget=budget)
    expected = np.hstack([FORMULAS[name](cdist(x, y1), 2.0) @ w1, FORMULAS[name](cdist(x, y2), 2.0) @ w2])
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("budget", [1, 2**24])
def test_products_both_ways_equal_dense_products_and_their_transposes(budget):
    """``K(x, y)ᵀ left`` from the same tiles, for each non-symmetric block; ``None`` for ``y is x``."""
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.normal(size=(700, 5)) + 10.0)
    y = torch.from_numpy(rng.normal(size=(300, 5)) + 10.0)
    w, w_x, left = rng.normal(size=(300, 3)), rng.normal(size=(700, 1)), rng.normal(size=(700, 2))
    kernel = make_kernel("gaussian", 1.7)
    rows, columns = kernel_matmul_both_ways(
        kernel, x, [(x, torch.from_numpy(w_x)), (y, torch.from_numpy(w))], torch.from_numpy(left), memory_budget=budget
    )
    k_xy = FORMULAS["gaussian"](cdist(x.numpy(), y.numpy()), 1.7)
    np.testing.assert_allclose(rows[:, 1:].numpy(), k_xy @ w, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(rows[:, :1].numpy(), FORMULAS["gaussian"](cdist(x.numpy(), x.numpy()), 1.7) @ w_x, rtol=1e-9, atol=1e-9)
    assert columns[0] is None
    np.testing.assert_allclose(columns[1].numpy(), k_xy.T @ left, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", FORMULAS)
@pytest.mark.parametrize("budget", [1, 2**24])
def test_symmetric_block_uses_only_the_upper_triangle_and_equals_the_dense_product(name, budget):
    """``y is x``: tiles on and above the diagonal, each off-diagonal tile applied twice; ragged last tile."""
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.normal(size=(1000, 5)) + 20.0)
    w = rng.normal(size=(1000, 2))
    kernel = make_kernel(name, 1.5)
    got = kernel_matmul(kernel, x, [(x, torch.from_numpy(w)), (x.clone(), torch.from_numpy(w))], memory_budget=budget)
    expected = FORMULAS[name](cdist(x.numpy(), x.numpy()), 1.5) @ w
    np.testing.assert_allclose(got[:, :2].numpy(), expected, rtol=1e-9, atol=1e-9)
    # A copy takes the full path, where ||x_i - x_i||² is a rounding residue ~1e-14 that Laplace's
    # sqrt turns into ~1e-7; the symmetric path sets the diagonal exactly.
    np.testing.assert_allclose(got[:, 2:].numpy(), expected, rtol=1e-9, atol=1e-6 if name == "laplace" else 1e-9)


@pytest.mark.parametrize(("n", "side"), [(1000, 128), (1000, 512), (2500, 1448), (4096, 2048)])
def test_symmetric_tiles_cover_every_pair_once_and_skip_most_of_the_lower_half(n, side):
    """Each unordered pair {i, j} is in exactly one tile (mirrored tiles count for both orders), and
    only the lower halves of the sub-squares on the diagonal are computed in vain: n·sub/2 entries."""
    covered = np.zeros((n, n), dtype=int)
    computed = 0
    for start in range(0, n, side):
        for r0, r1, c0, c1 in _strip_tiles(start, min(start + side, n), n, side, symmetric=True):
            assert r0 <= c0 and start <= r0 < r1 <= min(start + side, n)
            covered[r0:r1, c0:c1] += 1
            if r0 != c0:
                covered[c0:c1, r0:r1] += 1
            computed += (r1 - r0) * (c1 - c0)
    assert (covered == 1).all()
    assert computed <= n * (n + 1) / 2 + n * max(128, side // 4) / 2


def test_padding_keeps_the_columns_and_rounds_the_width_up_to_four():
    w = torch.arange(22.0).reshape(2, 11)
    padded = _pad_columns(w)
    assert padded.shape == (2, 12) and torch.equal(padded[:, :11], w) and not padded[:, 11:].any()
    assert _pad_columns(w[:, :1]).shape == (2, 1) and _pad_columns(w[:, :8]).shape == (2, 8)


def test_float32_row_sums_over_many_columns_stay_accurate():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 8))
    y = rng.normal(size=(20000, 8))
    exact = FORMULAS["gaussian"](cdist(x, y), 3.0).sum(1)
    got = kernel_row_sums(make_kernel("gaussian", 3.0), torch.from_numpy(x).float(), torch.from_numpy(y).float())
    np.testing.assert_allclose(got.numpy(), exact, rtol=1e-5)


def test_median_bandwidth_is_the_median_distance_and_order_free():
    rng = np.random.default_rng(3)
    small = rng.normal(size=(50, 4))
    assert median_bandwidth(torch.from_numpy(small)) == pytest.approx(np.median(pdist(small)), rel=1e-12)
    large = rng.normal(size=(1000, 4))
    sampled = median_bandwidth(torch.from_numpy(large))
    assert sampled == median_bandwidth(torch.from_numpy(large[rng.permutation(1000)]))
    assert sampled == pytest.approx(np.median(pdist(large)), rel=0.03)  # 10,000 sampled pairs


def test_median_bandwidth_skips_duplicates_and_rejects_identical_rows():
    x = np.vstack([np.zeros((40, 2)), [[3.0, 4.0]]])
    assert median_bandwidth(torch.from_numpy(x)) == 5.0
    with pytest.raises(InputError, match="all sampled training rows are identical"):
        median_bandwidth(torch.zeros(10, 3, dtype=torch.float64))


def test_unknown_kernel_and_bad_bandwidth_are_refused():
    with pytest.raises(InputError, match="kernel must be one of gaussian, laplace, imq"):
        make_kernel("cosine", 1.0)
    with pytest.raises(InputError, match="bandwidth must be a finite number > 0"):
        make_kernel("gaussian", float("nan"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(4)
    x, y = torch.from_numpy(rng.normal(size=(500, 5))), torch.from_numpy(rng.normal(size=(700, 5)))
    kernel = make_kernel("gaussian", 1.5)
    np.testing.assert_allclose(kernel_row_sums(kernel, x.cuda(), y.cuda()).cpu().numpy(),
                               kernel_row_sums(kernel, x, y).numpy(), rtol=1e-10)


def _median_bandwidth_on_a_host_float64_copy(x, max_pairs=10_000, seed=0):
    """The previous implementation: every row copied to host float64 first (the oracle for the order and pairs)."""
    xd = x.detach().to("cpu", torch.float64)
    projection = torch.randn(xd.shape[1], generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    xd = xd[torch.argsort(xd @ projection, stable=True)]
    gen = torch.Generator().manual_seed(seed)
    n = len(xd)
    first = torch.randint(n, (max_pairs,), generator=gen)
    second = (first + torch.randint(1, n, (max_pairs,), generator=gen)) % n
    distances = (xd[first] - xd[second]).norm(dim=1)
    return float(distances[distances > 0].median())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_median_bandwidth_samples_the_same_pairs_without_a_float64_copy_of_the_rows(dtype):
    from dataworth.evaluation.resources import measure

    x = torch.from_numpy(np.random.default_rng(3).normal(size=(5_000, 7))).to(dtype)
    assert median_bandwidth(x) == _median_bandwidth_on_a_host_float64_copy(x)
    big = torch.randn(1_500_000, 64, generator=torch.Generator().manual_seed(0))  # 384 MB of float32
    run = measure(lambda: median_bandwidth(big))
    assert run.peak_rss_gib - run.rss_before_gib < 0.15  # a float64 copy alone would be 0.72 GiB


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nearest_rows_equal_scipy_and_skip_only_the_row_itself(dtype):
    """Distances and indices against SciPy's cdist, far from the origin, with exact duplicates (a duplicate
    is its twin's neighbour at distance 0) and tiny blocks."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 7)) + 40.0
    x[10] = x[20]
    y = rng.normal(size=(120, 7)) + 40.0
    for budget in (1, 2**20):
        got_d, got_i = nearest_rows(torch.from_numpy(x).to(dtype), torch.from_numpy(x).to(dtype), skip_self=True, memory_budget=budget)
        full = cdist(x, x)
        np.fill_diagonal(full, np.inf)
        tol = 1e-9 if dtype == torch.float64 else 2e-3
        np.testing.assert_allclose(got_d.double().numpy(), full.min(axis=1), atol=tol)
        assert got_i[10] == 20 and got_i[20] == 10 and (got_i.numpy() != np.arange(300)).all()
        assert (full[np.arange(300), got_i.numpy()] <= full.min(axis=1) + tol).all()
        ref_d, ref_i = nearest_rows(torch.from_numpy(y).to(dtype), torch.from_numpy(x).to(dtype), memory_budget=budget)
        np.testing.assert_allclose(ref_d.double().numpy(), cdist(y, x).min(axis=1), atol=tol)
        np.testing.assert_array_equal(ref_i.numpy(), cdist(y, x).argmin(axis=1))
