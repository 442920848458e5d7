#!/usr/bin/env bash
# Builds .venv-peers with the libraries users compare dataworth with (pyDVL, OpenDataVal, and for influence
# functions dattri, Kronfluence and pyDVL's influence extra).
# Their version pins conflict with ours (numpy<2, old torch), so they live in their own environment
# and exchange data with benchmarks/peers.py through files. Not needed by the test suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV_PEERS:-.venv-peers}
python3 -m venv "$VENV"
P="$VENV/bin/pip"
"$P" install --quiet --disable-pip-version-check --upgrade pip
"$P" install --quiet torch==2.13.0                          # the CPU build from local disk, first
"$P" install --quiet "pydvl[influence]==0.10.0" scikit-learn   # the extra brings dask and zarr (its IF module)
"$P" install --quiet dattri==0.3.0 traker==0.3.2 captum==0.9.0
# Kronfluence declares torchvision, which would pull a CUDA torch; its code never imports it.
"$P" install --quiet --no-deps kronfluence==1.0.1
"$P" install --quiet accelerate einops einconv opt-einsum safetensors
"$P" install --quiet --no-deps opendataval==1.3.0
"$P" install --quiet requests typer torcheval==0.0.7 geomloss==0.2.6 pandera "transformers~=4.57" pot
# OpenDataVal imports torchvision at package import; PyPI's torchvision fails beside the CPU torch,
# so a stub module (benchmarks/peers/stubs/torchvision) goes on PYTHONPATH when peers.py runs it.
echo "peers environment ready: $VENV"
