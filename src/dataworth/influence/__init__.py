"""Gradient-based attribution for PyTorch models: the model task, per-sample gradients, projections, ghost dot
products, inverse-curvature solvers, the influence-function family, TracIn and TRAK."""

from dataworth.influence.airrep import AirRep
from dataworth.influence.batches import Rows, as_rows
from dataworth.influence.curvature import Curvature
from dataworth.influence.ghost import ghost_inner_products, ghost_squared_norms
from dataworth.influence.gradients import RandomProjection, gradient_matrix, per_sample_gradients, projected_gradients
from dataworth.influence.influence import InfluenceFunction, RescaledInfluence, solver_classes
from dataworth.influence.kfac import ASTRASolver, EKFACSolver, KFACSolver
from dataworth.influence.layerif import BlockDiagonalSolver, LayerInfluence, layer_pruning_ratios, magnitude_prune, prunable_sizes
from dataworth.influence.models import fit_logistic, fit_mlp
from dataworth.influence.solvers import ArnoldiSolver, CGSolver, ExplicitSolver, LiSSASolver, Solver
from dataworth.influence.task import ModelTask
from dataworth.influence.tracin import TracIn
from dataworth.influence.trak import TRAK

__all__ = [
    "AirRep",
    "ASTRASolver",
    "ArnoldiSolver",
    "BlockDiagonalSolver",
    "CGSolver",
    "Curvature",
    "EKFACSolver",
    "ExplicitSolver",
    "InfluenceFunction",
    "KFACSolver",
    "LayerInfluence",
    "LiSSASolver",
    "ModelTask",
    "RandomProjection",
    "RescaledInfluence",
    "Rows",
    "Solver",
    "TRAK",
    "TracIn",
    "as_rows",
    "fit_logistic",
    "fit_mlp",
    "ghost_inner_products",
    "ghost_squared_norms",
    "gradient_matrix",
    "layer_pruning_ratios",
    "magnitude_prune",
    "per_sample_gradients",
    "projected_gradients",
    "prunable_sizes",
    "solver_classes",
]
