"""Where every benchmark script writes its table: benchmarks/results/<name>, atomically, and on stdout."""

from __future__ import annotations

from pathlib import Path

from dataworth.data import atomic_write

RESULTS = Path(__file__).parent / "results"


def publish(name: str, lines: list[str], *, echo: bool = True) -> Path:
    """Write ``lines`` (one per line) to ``benchmarks/results/<name>`` atomically; print them if ``echo``."""
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    if echo:
        print(text)
    return path
