"""The Curator's decisions, loss, log and errors; DDP against one process on the same global batch."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from dataworth import Curator, InputError


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def data(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 4, generator=generator, dtype=torch.float64), torch.randint(0, 3, (rows,), generator=generator)


def test_drop_negative_keeps_the_non_negative_rows_and_averages_their_loss() -> None:
    model, (X, y) = mlp(), data(32, 1)
    curator = Curator(model, validation=data(16, 2), method="lai", policy="drop-negative")
    loss = curator.loss(X, y)
    log = curator.log
    kept = log["score"].to_numpy() >= 0
    assert 0 < kept.sum() < len(kept)
    np.testing.assert_array_equal(log["kept"].to_numpy(), kept)
    expected = F.cross_entropy(model(X[torch.as_tensor(kept)]), y[torch.as_tensor(kept)])
    assert torch.allclose(loss, expected, rtol=1e-12)


def test_warmup_keeps_every_row_but_still_scores() -> None:
    curator = Curator(mlp(), validation=data(16, 2), warmup_steps=2)
    for step in range(3):
        curator.loss(*data(20, 10 + step))
    log = curator.log
    assert log.loc[log.step < 2, "kept"].all()
    assert np.isfinite(log["score"]).all()
    assert not log.loc[log.step == 2, "kept"].all()


def test_keep_top_and_reweight() -> None:
    X, y = data(30, 3)
    top = Curator(mlp(), validation=data(10, 4), policy="keep-top", keep_fraction=0.4)
    top.loss(X, y)
    log = top.log
    assert log["kept"].sum() == 12
    assert log.loc[log.kept, "score"].min() >= log.loc[~log.kept, "score"].max()
    reweighted = Curator(mlp(), validation=data(10, 4), policy="reweight")
    loss = reweighted.loss(X, y)
    weights = reweighted.log["weight"].to_numpy()
    assert weights.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(weights, np.maximum(reweighted.log["score"], 0) / np.maximum(reweighted.log["score"], 0).mean())
    losses = F.cross_entropy(mlp()(X), y, reduction="none")
    assert loss.item() == pytest.approx((losses * torch.tensor(weights)).mean().item(), rel=1e-12)


def test_small_loss_drops_rows_above_the_quantile() -> None:
    model, (X, y) = mlp(), data(40, 5)
    curator = Curator(model, validation=data(8, 6), method="small-loss", quantile=0.75)
    curator.loss(X, y)
    losses = F.cross_entropy(model(X), y, reduction="none").detach().numpy()
    np.testing.assert_array_equal(curator.log["kept"].to_numpy(), losses <= np.quantile(losses, 0.75))


def test_none_keeps_everything_and_equals_the_plain_loss() -> None:
    model, (X, y) = mlp(), data(12, 7)
    curator = Curator(model, validation=data(8, 6), method="none")
    assert torch.allclose(curator.loss(X, y), F.cross_entropy(model(X), y), rtol=1e-14)
    assert curator.log["kept"].all()


def test_cache_refreshes_on_schedule() -> None:
    model = mlp()
    curator = Curator(model, validation=data(8, 6), refresh_every=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    caches = []
    for step in range(4):
        loss = curator.loss(*data(10, step))
        caches.append(curator.cache)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert caches[0] is caches[1] and caches[2] is caches[3] and caches[1] is not caches[2]


def test_log_ids_drop_rates_and_parquet(tmp_path) -> None:
    curator = Curator(mlp(), validation=data(16, 2))
    X, y = data(24, 8)
    curator.loss(X, y, ids=np.arange(100, 124))
    log = curator.log
    assert list(log.columns) == ["step", "id", "label", "score", "kept", "weight", "loss"]
    np.testing.assert_array_equal(log["id"], np.arange(100, 124))
    rates = curator.drop_rates()
    assert rates["seen"].sum() == 24
    assert rates["dropped"].sum() == (~log["kept"]).sum()
    path = curator.save_log(tmp_path / "log" / "decisions.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), log)
    assert [p.name for p in path.parent.iterdir()] == ["decisions.parquet"]


def test_bad_input_is_refused_with_a_clear_message() -> None:
    with pytest.raises(InputError, match="method"):
        Curator(mlp(), validation=data(4, 0), method="lia")
    with pytest.raises(InputError, match="optimizer"):
        Curator(mlp(), validation=data(4, 0), method="lai-adam")
    with pytest.raises(InputError, match="pair"):
        Curator(mlp(), validation=data(4, 0)[0])
    with pytest.raises(InputError, match="as many targets"):
        Curator(mlp(), validation=(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long)))
    with pytest.raises(InputError, match="no module"):
        Curator(mlp(), validation=data(4, 0), modules=["head"])
    with pytest.raises(InputError, match="Tanh"):
        Curator(mlp(), validation=data(4, 0), modules=["1"])
    with pytest.raises(InputError, match="ids"):
        Curator(mlp(), validation=data(4, 0)).loss(*data(5, 1), ids=[1, 2])


# -- DDP: two gloo processes on CPU against one process on the same global batch ----------------------

STEPS, ROWS = 4, 16


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [data(2 * ROWS, 100 + step) for step in range(STEPS)]


def train(curator: Curator, model: nn.Module, rows: slice) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    for X, y in batches():
        loss = curator.loss(X[rows], y[rows], ids=torch.arange(2 * ROWS)[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def ddp_worker(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        model = nn.parallel.DistributedDataParallel(mlp())
        curator = Curator(model, validation=data(16, 2), warmup_steps=1, refresh_every=2)
        train(curator, model, slice(rank * ROWS, (rank + 1) * ROWS))
        curator.log.to_parquet(f"{out}/log_{rank}.parquet")
        if rank == 0:
            torch.save(model.module.state_dict(), f"{out}/state.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_decisions_and_updates_equal_one_process() -> None:
    model = mlp()
    single = Curator(model, validation=data(16, 2), warmup_steps=1, refresh_every=2)
    train(single, model, slice(None))
    with tempfile.TemporaryDirectory() as out:
        init_file = os.path.join(out, "init")
        mp.spawn(ddp_worker, args=(init_file, out), nprocs=2, join=True)
        ranks = pd.concat([pd.read_parquet(f"{out}/log_{rank}.parquet") for rank in (0, 1)])
        state = torch.load(f"{out}/state.pt")
    ranks = ranks.sort_values(["step", "id"]).reset_index(drop=True)
    expected = single.log.sort_values(["step", "id"]).reset_index(drop=True)
    assert 0 < (~expected["kept"]).sum()
    np.testing.assert_array_equal(ranks["kept"], expected["kept"])
    np.testing.assert_allclose(ranks["score"], expected["score"], rtol=1e-10, atol=1e-14)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(state[name], value, rtol=1e-10, atol=1e-12)
