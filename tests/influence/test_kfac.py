"""K-FAC, EK-FAC and ASTRA (dataworth.influence.kfac) against the dense curvature and the explicit solver, in float64."""

import numpy as np
import pytest
import torch
from torch import nn

from dataworth.checks import InputError
from dataworth.influence.batches import as_rows
from dataworth.influence.curvature import Curvature
from dataworth.influence.gradients import gradient_matrix
from dataworth.influence.kfac import ASTRASolver, EKFACSolver, KFACSolver, kronecker_layers, layer_gradients
from dataworth.influence.solvers import ExplicitSolver, relative_error
from dataworth.influence.task import ModelTask

DT = torch.float64


def _mlp_problem(n: int = 80, seed: int = 0, inplace: bool = False):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True) if inplace else nn.Tanh(), nn.Linear(6, 3)).to(DT)
    X, y = torch.randn(n, 4, dtype=DT), torch.randint(0, 3, (n,))
    return ModelTask(model, "cross_entropy"), as_rows(X, y, name="train")


def _conv_problem(n: int = 24, padding_mode: str = "zeros"):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode=padding_mode), nn.ReLU(),
                          nn.Conv2d(3, 2, 2, bias=False), nn.Flatten(), nn.Linear(8, 3)).to(DT)
    X, y = torch.randn(n, 2, 6, 6, dtype=DT), torch.randint(0, 3, (n,))
    return ModelTask(model, "cross_entropy"), as_rows(X, y, name="train")


class _Tokens(nn.Module):
    """A Linear over a b×T×d sequence (tokens are locations), mean-pooled, then a classifier; ``embed`` is used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.embed(x)).mean(1) + self.embed(x[:, 0]))


class _WeightOnly(nn.Module):
    """Uses a Linear's weight without calling the Linear, so no hook sees its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.lin.weight.T


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: a second intra-op thread only waits for a busy core (100× slower on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mlp():
    task, rows = _mlp_problem()
    return task, rows, Curvature(task, rows).dense()


def _layer_blocks(task: ModelTask, dense: torch.Tensor) -> torch.Tensor:
    """The dense curvature with every entry between different layers set to zero."""
    out, start = torch.zeros_like(dense), 0
    for names in task.blocks().values():
        stop = start + sum(task.shapes[name].numel() for name in names)
        out[start:stop, start:stop] = dense[start:stop, start:stop]
        start = stop
    return out


def _matrix(solver: KFACSolver) -> torch.Tensor:
    return solver.multiply(torch.eye(solver.task_.num_params, dtype=DT))


@pytest.mark.parametrize("solver_class", [KFACSolver, EKFACSolver])
@pytest.mark.parametrize(("bias", "l2", "damping"), [(False, 0.0, 0.0), (True, 0.0, 0.0), (True, 0.1, 0.05)])
def test_exact_for_one_linear_output_with_squared_error(solver_class, bias, l2, damping):
    torch.manual_seed(2)
    X, y = torch.randn(40, 5, dtype=DT), torch.randn(40, 1, dtype=DT)
    task = ModelTask(nn.Linear(5, 1, bias=bias).to(DT), "mse", l2=l2)
    rows = as_rows(X, y, name="train")
    V = torch.randn(3, task.num_params, dtype=DT)
    exact = ExplicitSolver(damping).fit(task, rows).solve(V)
    approx = solver_class(damping, fisher="exact", batch_size=16).fit(task, rows).solve(V)
    assert approx.dtype == DT and relative_error(approx, exact) < 1e-10


def test_ekfac_eigenvalues_are_the_ggn_diagonal_in_the_kronecker_basis(mlp):
    task, rows, dense = mlp
    solver = EKFACSolver(0.01, fisher="exact").fit(task, rows)
    for layer in solver.layers_:
        o, k = layer.out_features, layer.width
        directions = torch.einsum("oi,kj->ijok", layer.s_eigenvectors, layer.a_eigenvectors).reshape(o * k, o, k)
        U = torch.zeros(o * k, task.num_params, dtype=DT)
        layer.place(directions, U)
        quadratic = torch.einsum("mp,pq,mq->m", U, dense, U).reshape(o, k)
        assert torch.allclose(quadratic, layer.eigenvalues, rtol=1e-10, atol=1e-12)


def test_ekfac_is_the_closer_matrix_to_the_layer_blocks(mlp):
    task, rows, dense = mlp
    blocks = _layer_blocks(task, dense)
    kfac, ekfac = (solver(1e-3, fisher="exact").fit(task, rows) for solver in (KFACSolver, EKFACSolver))
    assert float((_matrix(ekfac) - blocks).norm()) < float((_matrix(kfac) - blocks).norm())


def test_conv_layers_ekfac_is_the_closer_matrix_to_the_layer_blocks():
    task, rows = _conv_problem()
    blocks = _layer_blocks(task, Curvature(task, rows).dense())
    kfac, ekfac = (solver(1e-3, fisher="exact").fit(task, rows) for solver in (KFACSolver, EKFACSolver))
    assert float((_matrix(ekfac) - blocks).norm()) < float((_matrix(kfac) - blocks).norm())


@pytest.mark.parametrize("fisher", ["exact", "sampled"])
def test_ekfac_solves_the_layer_blocks_no_worse_than_kfac(mlp, fisher):
    """Solution errors against the block-diagonal system. EK-FAC fits the large eigenvalues best; the inverse also
    weighs the small ones, and with little damping (δ ≤ 0.01 here) K-FAC's solve can be the closer one, so δ = 0.1."""
    task, rows, dense = mlp
    damping = 0.1
    blocks = _layer_blocks(task, dense) + damping * torch.eye(len(dense), dtype=DT)
    V = torch.randn(4, task.num_params, dtype=DT, generator=torch.Generator().manual_seed(3))
    target = torch.linalg.solve(blocks, V.T).T
    errors = [relative_error(solver(damping, fisher=fisher).fit(task, rows).solve(V), target) for solver in (KFACSolver, EKFACSolver)]
    assert errors[1] <= errors[0] < 0.1


def test_multiply_and_solve_are_inverse(mlp):
    task, rows, _ = mlp
    solver = EKFACSolver(0.01, batch_size=7).fit(task, rows)
    V = torch.randn(2, task.num_params, dtype=DT)
    assert relative_error(solver.solve(solver.multiply(V)), V) < 1e-10


def test_sampled_fisher_is_reproducible_and_depends_on_the_seed(mlp):
    task, rows, _ = mlp
    values = [EKFACSolver(0.01, seed=seed).fit(task, rows).layers_[-1].eigenvalues for seed in (0, 0, 1)]
    assert torch.equal(values[0], values[1]) and not torch.equal(values[0], values[2])


def test_astra_with_no_iterations_is_ekfac(mlp):
    task, rows, _ = mlp
    V = torch.randn(3, task.num_params, dtype=DT)
    ekfac = EKFACSolver(0.05).fit(task, rows).solve(V)
    assert relative_error(ASTRASolver(0.05, iterations=0).fit(task, rows).solve(V), ekfac) < 1e-12


def test_astra_error_falls_at_every_iteration(mlp):
    """ASTRA's iterates are those of x ← x + η P⁻¹(v − (H + δI)x) written with dense matrices, and their error
    against the explicit solve falls at every step (in the (H + δI)-norm that is a theorem; here also in ‖·‖₂)."""
    task, rows, dense = mlp
    damping = 0.05
    V = torch.randn(3, task.num_params, dtype=DT, generator=torch.Generator().manual_seed(4))
    exact = ExplicitSolver(damping).fit(task, rows).solve(V)
    astra = ASTRASolver(damping, iterations=30).fit(task, rows)
    inverse = torch.linalg.inv(_matrix(astra.preconditioner_))
    system = dense + damping * torch.eye(len(dense), dtype=DT)
    iterates = [V @ inverse]
    for _ in range(30):
        iterates.append(iterates[-1] + astra.step_ * (V - iterates[-1] @ system) @ inverse)
    assert relative_error(astra.solve(V), iterates[-1]) < 1e-10
    assert relative_error(astra.set_params(iterations=1).fit(task, rows).solve(V), iterates[1]) < 1e-10
    errors = np.array([relative_error(x, exact) for x in iterates])
    assert (np.diff(errors) < 0).all()
    assert errors[-1] < 0.1 * errors[0]


def test_astra_minibatches_are_seeded_and_still_improve_on_ekfac(mlp):
    task, rows, _ = mlp
    V = torch.randn(2, task.num_params, dtype=DT)
    exact = ExplicitSolver(0.05).fit(task, rows).solve(V)
    runs = [ASTRASolver(0.05, iterations=15, batch_size=40, seed=5).fit(task, rows).solve(V) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    ekfac = ASTRASolver(0.05, iterations=0).fit(task, rows).solve(V)
    assert relative_error(runs[0], exact) < 0.5 * relative_error(ekfac, exact)


@pytest.mark.parametrize("problem", ["mlp", "inplace_mlp", "conv", "conv_reflect", "tokens"])
def test_hooked_gradients_are_the_per_sample_gradients(problem):
    if problem in ("mlp", "inplace_mlp"):
        task, rows = _mlp_problem(n=20, inplace=problem == "inplace_mlp")
    elif problem.startswith("conv"):
        task, rows = _conv_problem(n=10, padding_mode="reflect" if problem == "conv_reflect" else "zeros")
    else:
        torch.manual_seed(6)
        task = ModelTask(_Tokens().to(DT), "cross_entropy")
        rows = as_rows(torch.randn(10, 5, 3, dtype=DT), torch.randint(0, 2, (10,)), name="train")
    assert relative_error(layer_gradients(task, rows, batch_size=4), gradient_matrix(task, rows)) < 1e-10


def test_only_counted_parameters_of_a_layer_are_covered():
    task, rows = _mlp_problem(n=10)
    task.model[0].bias.requires_grad_(False)
    task = ModelTask(task.model, "cross_entropy")
    (first, second) = kronecker_layers(task)
    assert (first.bias, first.width, second.width) == (None, 4, 7)
    assert relative_error(layer_gradients(task, rows), gradient_matrix(task, rows)) < 1e-10


def test_refuses_unsupported_modules_and_bad_settings():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)).to(DT)
    rows = as_rows(torch.randn(8, 4, dtype=DT), torch.randint(0, 2, (8,)), name="train")
    with pytest.raises(InputError, match=r"'1.weight' belongs to a LayerNorm.*modules=\['0', '2'\]"):
        KFACSolver(0.1).fit(ModelTask(model), rows)
    task = ModelTask(model, modules=["0", "2"])
    with pytest.raises(InputError, match="damping"):
        EKFACSolver(-1.0).fit(task, rows)
    with pytest.raises(InputError, match="fisher"):
        KFACSolver(0.1, fisher="empirical").fit(task, rows)
    with pytest.raises(InputError, match="fisher"):
        ASTRASolver(0.1, fisher="true").fit(task, rows)
    with pytest.raises(InputError, match="singular"):
        KFACSolver(0.0, fisher="exact").fit(task, rows)  # cross-entropy: S of the last layer has the null vector 1
    grouped = ModelTask(nn.Sequential(nn.Conv2d(2, 2, 1, groups=2), nn.Flatten()).to(DT), "mse")
    with pytest.raises(InputError, match="groups=2"):
        KFACSolver().fit(grouped, as_rows(torch.randn(3, 2, 1, 1, dtype=DT), torch.randn(3, 2, dtype=DT), name="train"))
    with pytest.raises(InputError, match="step"):
        ASTRASolver(0.1, step=0.0).fit(task, rows)
    with pytest.raises(InputError, match="iterations"):
        ASTRASolver(0.1, iterations=-1).fit(task, rows)
    with pytest.raises(InputError, match="'lin' is never called"):
        KFACSolver(0.1).fit(ModelTask(_WeightOnly().to(DT)), rows)
    with pytest.raises(InputError, match="not fitted"):
        KFACSolver().solve(torch.zeros(1, 3))
