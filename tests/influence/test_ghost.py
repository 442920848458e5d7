"""Ghost dot products against explicit per-sample gradients (float64)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dataworth.checks import InputError
from dataworth.influence.batches import as_rows
from dataworth.influence.ghost import capture_linear, ghost_inner_products, ghost_squared_norms
from dataworth.influence.gradients import gradient_matrix
from dataworth.influence.task import ModelTask

TOL = 1e-10


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6, bias=False), nn.Softplus(), nn.Linear(6, 3)).double()


class Attention(nn.Module):
    """Embedding (not counted), single-head self-attention from Linear q/k/v/out on b×T×d, mean-pool, classifier."""

    def __init__(self, vocab: int = 11, d: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.q, self.k, self.v, self.out = nn.Linear(d, d), nn.Linear(d, d, bias=False), nn.Linear(d, d), nn.Linear(d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        scores = self.q(x) @ self.k(x).transpose(1, 2) / x.shape[-1] ** 0.5
        x = x + self.out(torch.softmax(scores, -1) @ self.v(x))
        return self.head(x.mean(1))


class Shared(nn.Module):
    """One Linear called twice (its tokens are both calls), each output changed in place afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.head = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lin(self.lin(x).tanh_()).tanh_())


def tabular(n: int, d: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def tokens(n: int, length: int, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 11, (n, length), generator=g), torch.randint(0, 3, (n,), generator=g)


def attention_task(**kwargs) -> ModelTask:
    torch.manual_seed(0)
    return ModelTask(Attention().double(), modules=["q", "k", "v", "out", "head"], **kwargs)


def explicit(task, rows_a, rows_b, of_a="loss", of_b="loss"):
    return gradient_matrix(task, rows_a, of=of_a) @ gradient_matrix(task, rows_b, of=of_b).T


def explicit_per_layer(task, rows_a, rows_b):
    G_a, G_b = gradient_matrix(task, rows_a), gradient_matrix(task, rows_b)
    out, start = {}, 0
    for name, shape in task.shapes.items():
        cols = slice(start, start + shape.numel())
        layer = name.rpartition(".")[0]
        out[layer] = out.get(layer, 0) + G_a[:, cols] @ G_b[:, cols].T
        start += shape.numel()
    return out


def close(actual, expected, tol=TOL):
    return float((actual - expected).abs().max()) <= tol * max(1.0, float(expected.abs().max()))


def frozen_weight(model: nn.Module) -> nn.Module:
    model[4].weight.requires_grad_(False)
    return model


@pytest.mark.parametrize("make", [lambda: ModelTask(mlp()),
                                  lambda: ModelTask(mlp(), modules=["0", "4"]),
                                  lambda: ModelTask(frozen_weight(mlp()))],
                         ids=["all-layers", "skip-middle", "bias-only-last"])
def test_mlp_matches_explicit_gradients(make):
    task = make()
    train, test = as_rows(*tabular(17), name="train"), as_rows(*tabular(6, seed=3), name="test")
    assert close(ghost_inner_products(task, train, test), explicit(task, train, test))
    assert close(ghost_inner_products(task, train), explicit(task, train, train))


def test_sequence_model_matches_explicit_gradients_with_other_lengths():
    task = attention_task()
    train, test = as_rows(*tokens(9, 5), name="train"), as_rows(*tokens(4, 3, seed=4), name="test")
    assert close(ghost_inner_products(task, train, test), explicit(task, train, test))
    assert close(ghost_squared_norms(task, train), explicit(task, train, train).diagonal())
    A, B = capture_linear(task, *task.prepare(*tokens(2, 5)))["q"]
    assert A.shape == (2, 5, 7) and B.shape == (2, 5, 6)


def test_repeated_layer_and_in_place_outputs():
    torch.manual_seed(0)
    task = ModelTask(Shared().double())
    rows = as_rows(*tabular(8, d=4), name="train")
    assert close(ghost_inner_products(task, rows), explicit(task, rows, rows))
    A, _ = capture_linear(task, *task.prepare(*tabular(3, d=4)))["lin"]
    assert A.shape == (3, 2, 5)


def test_margin_measurement_side():
    task = ModelTask(mlp(), measurement="margin")
    train, test = as_rows(*tabular(10), name="train"), as_rows(*tabular(5, seed=3), name="test")
    got = ghost_inner_products(task, train, test, of_b="measurement")
    assert close(got, explicit(task, train, test, of_b="measurement"))
    assert not close(got, explicit(task, train, test))


def test_last_layer_output_gradient_is_softmax_minus_onehot():
    task = ModelTask(mlp())
    inputs, targets = task.prepare(*tabular(4))
    A, B = capture_linear(task, inputs, targets)["4"]
    expected = torch.softmax(task.forward(task.params, inputs), 1) - F.one_hot(targets, 3)
    assert torch.allclose(B[:, 0], expected, atol=1e-14)
    assert torch.equal(A[:, 0, -1], torch.ones(4, dtype=torch.float64))


def test_invariant_to_chunks_loaders_and_side_order():
    task = attention_task()
    X, y = tokens(11, 4)
    train, test = as_rows(X, y, name="train"), as_rows(*tokens(5, 4, seed=5), name="test")
    full = ghost_inner_products(task, train, test)
    for max_memory in (1, 60_000):
        assert close(ghost_inner_products(task, train, test, max_memory=max_memory), full, 1e-13)
    loader = as_rows(DataLoader(TensorDataset(X, y), batch_size=5), name="train")
    assert close(ghost_inner_products(task, loader, test, max_memory=60_000), full, 1e-13)
    assert close(ghost_inner_products(task, loader, max_memory=60_000), ghost_inner_products(task, train), 1e-13)
    assert close(ghost_inner_products(task, test, train).T, full, 1e-13)
    square = ghost_inner_products(task, train, max_memory=60_000)
    assert torch.equal(square, square.T)
    assert close(square, ghost_inner_products(task, train, train), 1e-13)
    assert close(ghost_squared_norms(task, train, max_memory=1), square.diagonal(), 1e-13)


def test_per_layer_sums_to_total_and_matches_layer_blocks():
    task = attention_task()
    train, test = as_rows(*tokens(7, 5), name="train"), as_rows(*tokens(3, 5, seed=6), name="test")
    layers = ghost_inner_products(task, train, test, per_layer=True)
    assert list(layers) == ["q", "k", "v", "out", "head"]
    reference = explicit_per_layer(task, train, test)
    assert all(close(layers[name], reference[name]) for name in layers)
    assert close(sum(layers.values()), ghost_inner_products(task, train, test), 1e-13)
    norms = ghost_squared_norms(task, train, per_layer=True)
    assert close(sum(norms.values()), ghost_squared_norms(task, train), 1e-13)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head, self.embed = nn.Linear(4, 11, bias=False), nn.Embedding(11, 4)
        self.embed.weight = self.head.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens).mean(1))


class TimeFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.transpose(0, 1)).mean(0)


def error(task, rows) -> str:
    with pytest.raises(InputError) as raised:
        ghost_inner_products(task, rows)
    return str(raised.value)


def test_errors_name_the_layer_and_the_fix():
    rows = as_rows(*tokens(4, 5), name="train")
    torch.manual_seed(0)
    message = error(ModelTask(Attention().double()), rows)
    assert "'embed.weight'" in message and "Embedding" in message and "modules=" in message
    attention = nn.MultiheadAttention(4, 1, batch_first=True).double()
    assert "'in_proj_weight'" in error(ModelTask(attention), rows)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.attn = nn.Embedding(11, 4), nn.MultiheadAttention(4, 1, batch_first=True)
            self.head = nn.Linear(4, 3)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            x = self.embed(tokens)
            return self.head(self.attn(x, x, x)[0].mean(1))

    message = error(ModelTask(Block().double(), modules=["attn.out_proj", "head"]), rows)
    assert "'attn.out_proj' did not run" in message and "modules=" in message
    assert "tied" in error(ModelTask(Tied().double(), modules=["head"]), rows)
    sequences = as_rows(torch.randn(3, 5, 4, dtype=torch.float64), torch.tensor([0, 1, 2]), name="train")
    assert "first dimension" in error(ModelTask(TimeFirst().double()), sequences)
    with pytest.raises(InputError, match="of_b"):
        ghost_inner_products(ModelTask(mlp()), rows, of_b="margin")


@pytest.mark.parametrize(("tokens", "width"), [(2, 50), (30, 3)])
def test_layer_products_both_routes_equal_the_gradient_products(tokens: int, width: int) -> None:
    """Gram blocks (short sequences, wide layers) and formed per-row gradients (long sequences, narrow layers)."""
    from dataworth.influence.ghost import layer_products

    generator = torch.Generator().manual_seed(0)
    A_a, A_b = (torch.randn(n, tokens, width, generator=generator, dtype=torch.float64) for n in (4, 5))
    B_a, B_b = (torch.randn(n, tokens, width + 1, generator=generator, dtype=torch.float64) for n in (4, 5))
    gradients_a, gradients_b = torch.einsum("nto,ntd->nod", B_a, A_a), torch.einsum("nto,ntd->nod", B_b, A_b)
    expected = torch.einsum("aod,bod->ab", gradients_a, gradients_b)
    torch.testing.assert_close(layer_products(A_a, B_a, A_b, B_b), expected, rtol=1e-12, atol=1e-12)
