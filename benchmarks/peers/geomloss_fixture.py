"""Write the GeomLoss reference potentials that tests/valuation/test_lava.py checks solve_annealed against.

Runs in .venv-peers (GeomLoss comes with OpenDataVal there):
    .venv-peers/bin/python benchmarks/peers/geomloss_fixture.py tests/valuation/data/geomloss_annealed.npz

Float64 point clouds, cost ||x − y||²/2 (GeomLoss p = 2), blur 0.3 (ε = 0.09), scaling 0.5, no debiasing:
the settings OTDD's outer problem uses in LAVA's reference code. Stored: the points, GeomLoss's diameter
estimate, ε, and the potentials F (rows) and G (columns).
"""

import sys

import numpy as np
import torch
from geomloss import SamplesLoss
from geomloss.sinkhorn_divergence import max_diameter

rng = np.random.default_rng(0)
x = torch.from_numpy(rng.normal(size=(40, 3)))
y = torch.from_numpy(rng.normal(size=(15, 3)) + 0.5)
blur = 0.3
loss = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=0.5, debias=False, potentials=True, backend="tensorized")
F, G = loss(x, y)
np.savez(sys.argv[1], x=x.numpy(), y=y.numpy(), diameter=max_diameter(x, y), eps=blur**2, F=F.numpy(), G=G.numpy())
print("wrote", sys.argv[1])
