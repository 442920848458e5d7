"""Stub (see benchmarks/peers/stubs/torchvision/__init__.py): any name is a placeholder class."""


def __getattr__(name: str) -> type:
    return type(name, (), {})
