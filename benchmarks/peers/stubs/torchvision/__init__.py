"""Stub torchvision for .venv-peers: OpenDataVal imports torchvision at package import, but PyPI's
torchvision cannot load beside the CPU torch build here. The tabular evaluators used by
benchmarks/peers.py (LAVA) never touch it; every name in these modules is a placeholder class."""
